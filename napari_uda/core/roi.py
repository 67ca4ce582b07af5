"""Regions of interest across grids: where the organs are, with a margin, and crop / paste back.

Used by coarse-to-fine segmentation: a low-resolution prediction finds the region of all organs,
the full-resolution image is cropped to it (with a margin in mm), and the fine result is pasted
back into the full grid. Index boxes are (z, y, x) slices of the target grid.
"""
from __future__ import annotations

import itertools

import numpy as np

from napari_uda.core.io import Geometry, Volume

Box = tuple[slice, slice, slice]


def index_to_physical(geometry: Geometry, idx: np.ndarray) -> np.ndarray:
    """Physical points (n, 3, in the (z, y, x) axis frame) of continuous indices (n, 3)."""
    return np.asarray(geometry.origin) + (np.asarray(idx, float) * np.asarray(geometry.spacing)) @ geometry.direction_matrix.T


def physical_to_index(geometry: Geometry, points: np.ndarray) -> np.ndarray:
    """Continuous indices (n, 3) of physical points (n, 3)."""
    rel = np.linalg.solve(geometry.direction_matrix, (np.asarray(points, float) - np.asarray(geometry.origin)).T).T
    return rel / np.asarray(geometry.spacing)


def foreground_box(labels: Volume, target: Volume, margin_mm: float) -> Box | None:
    """The box of ``target``'s grid covering every foreground voxel of ``labels`` (any grid, same
    physical space) plus ``margin_mm`` on each side, clipped to the grid; None without foreground."""
    fg = np.argwhere(np.asarray(labels.array) > 0)
    if len(fg) == 0:
        return None
    lo, hi = fg.min(axis=0) - 0.5, fg.max(axis=0) + 0.5  # voxel extents, not centres
    corners = np.array(list(itertools.product(*zip(lo, hi))))
    idx = physical_to_index(target.geometry, index_to_physical(labels.geometry, corners))
    margin = margin_mm / np.asarray(target.spacing)
    eps = 1e-6  # voxel borders that land exactly on a border stay there despite rounding
    start = np.maximum(np.floor(idx.min(axis=0) - margin + 0.5 + eps), 0).astype(int)
    stop = np.minimum(np.ceil(idx.max(axis=0) + margin + 0.5 - eps), target.shape).astype(int)
    if np.any(stop <= start):
        return None
    return tuple(slice(int(a), int(b)) for a, b in zip(start, stop))  # type: ignore[return-value]


def crop(volume: Volume, box: Box) -> Volume:
    """The part of ``volume`` inside ``box``, with the geometry that places it where it was."""
    start = np.array([[s.start for s in box]])
    origin = index_to_physical(volume.geometry, start)[0]
    return Volume(np.ascontiguousarray(volume.array[box]),
                  Geometry(volume.spacing, tuple(float(v) for v in origin), volume.geometry.direction),  # type: ignore[arg-type]
                  volume.modality)


def paste(part: np.ndarray, box: Box, shape: tuple[int, ...], fill: float = 0) -> np.ndarray:
    """A full array of ``shape`` (leading axes allowed, e.g. classes) with ``part`` placed at ``box``."""
    out = np.full(shape, fill, dtype=part.dtype)
    out[(Ellipsis, *box)] = part
    return out
