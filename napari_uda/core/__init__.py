"""The shared contracts every stage relies on: the organ table, the modality registry and intensity
rules, geometry-true volume I/O and the canonical orientation, regions of interest, the workspace,
model-folder layout, user-facing errors, devices, run metering and child processes for long work.

May import: nothing else of napari_uda.
"""
