"""Intensity rules for translation: one place for the clipping windows and the [-1, 1] mapping."""
from __future__ import annotations

import numpy as np

from napari_uda.core.modalities import Modality

#: CT window (HU) used before mapping to [-1, 1].
CT_WINDOW: tuple[float, float] = (-600.0, 600.0)
#: Percentiles that bound MRI and PET intensities before mapping to [-1, 1].
TARGET_PERCENTILES: tuple[float, float] = (1.0, 99.0)


def intensity_window(image: np.ndarray, modality: Modality) -> tuple[float, float]:
    """The (low, high) window for ``image``: fixed HU for CT, 1st-99th percentile otherwise."""
    if modality.kind == "ct":
        return CT_WINDOW
    finite = image[np.isfinite(image)]
    if finite.size == 0:
        raise ValueError("image has no finite values")
    low, high = np.percentile(finite, TARGET_PERCENTILES)
    if high <= low:
        high = low + 1.0
    return float(low), float(high)


def to_unit_range(image: np.ndarray, window: tuple[float, float]) -> np.ndarray:
    """Clip to ``window`` and map linearly to [-1, 1] (float32)."""
    low, high = window
    out = (np.clip(image.astype(np.float32), low, high) - low) / (high - low)
    return np.clip(out * 2.0 - 1.0, -1.0, 1.0)


def from_unit_range(image: np.ndarray, window: tuple[float, float]) -> np.ndarray:
    """Inverse of :func:`to_unit_range` on [-1, 1] (values outside are clipped first)."""
    low, high = window
    return (np.clip(image.astype(np.float32), -1.0, 1.0) + 1.0) * 0.5 * (high - low) + low
