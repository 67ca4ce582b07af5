"""Data the project makes itself: the synthetic multi-modality abdominal phantom and the bundled sample set.

May import: core.
"""
