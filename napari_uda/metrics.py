"""Segmentation metrics and measurements (pure numpy)."""
from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from .organs import ORGAN_INDICES


def organ_volumes_ml(labels: np.ndarray, spacing: Iterable[float], organs: Iterable[int] = ORGAN_INDICES) -> dict[int, float]:
    """Volume in mL of each organ label (``spacing`` in mm, any axis order matching ``labels``)."""
    voxel_ml = float(np.prod(list(spacing))) / 1000.0
    counts = np.bincount(np.asarray(labels).ravel().astype(np.intp, copy=False), minlength=max(organs) + 1)
    return {int(k): float(counts[k]) * voxel_ml for k in organs}
