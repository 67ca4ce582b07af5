"""Scoring segmentations as the FLARE challenges do: DSC and NSD per organ (metrics), and folders
of predictions against ground truth (evaluation).

May import: core.
"""
