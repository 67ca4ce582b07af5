"""2D slices for translation: volumes to normalised, resized slice stacks and back."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from napari_uda.core.intensity import intensity_window, to_unit_range
from napari_uda.core.io import Volume
from napari_uda.core.modalities import Modality
from napari_uda.core.orientation import read_canonical


def resize_slices(x: torch.Tensor, size: tuple[int, int], labels: bool = False) -> torch.Tensor:
    """Resize (N, C, H, W) slices in-plane (bilinear for images, nearest for labels)."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    if labels:
        return F.interpolate(x.float(), size=size, mode="nearest").to(x.dtype)
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


def inplane_spacing(volume: Volume) -> float:
    """Mean in-plane (y, x) pixel spacing of a volume in the canonical orientation, in mm."""
    return float(np.mean(volume.spacing[1:]))


def working_size(shape_yx: tuple[int, int], spacing_yx: tuple[float, float], spacing_mm: float) -> tuple[int, int]:
    """In-plane size of a slice resampled to ``spacing_mm`` pixels; each axis keeps its own extent,
    so the aspect ratio is kept."""
    return tuple(max(1, int(round(n * s / spacing_mm))) for n, s in zip(shape_yx, spacing_yx))  # type: ignore[return-value]


@dataclass
class SliceBank:
    """Axial slices of several volumes (canonical orientation, intensities in [-1, 1]) at one
    in-plane pixel spacing ``spacing_mm``: ``images[v]`` is volume v's (Z, 1, H_v, W_v) stack at
    its own size (never stretched), ``labels[v]`` its (Z, H_v, W_v) organ labels when loaded,
    ``windows[v]`` its raw intensity window."""

    images: list[torch.Tensor]
    labels: list[torch.Tensor] | None
    windows: list[tuple[float, float]]
    spacing_mm: float

    def sample(self, n: int, size: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``n`` random ``size`` x ``size`` crops of random slices (a slice smaller than ``size`` is
        padded: -1 for images, background for labels). Returns (N, 1, size, size) images and
        (N, size, size) labels or None."""
        xs, ys = [], []
        for _ in range(n):
            v = int(torch.randint(len(self.images), (1,), generator=gen))
            z = int(torch.randint(self.images[v].shape[0], (1,), generator=gen))
            img = _pad_to(self.images[v][z], size, -1.0)
            top = int(torch.randint(img.shape[-2] - size + 1, (1,), generator=gen))
            left = int(torch.randint(img.shape[-1] - size + 1, (1,), generator=gen))
            xs.append(img[:, top:top + size, left:left + size])
            if self.labels is not None:
                ys.append(_pad_to(self.labels[v][z], size, 0)[top:top + size, left:left + size])
        return torch.stack(xs), (torch.stack(ys) if self.labels is not None else None)

    def stacked(self, size: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Every slice resized to ``size`` x ``size`` (stretched), concatenated: (N, 1, size, size)
        images and (N, size, size) labels or None (for evaluation networks that want one size)."""
        images = torch.cat([resize_slices(x, (size, size)) for x in self.images])
        if self.labels is None:
            return images, None
        return images, torch.cat([resize_slices(y[:, None], (size, size), labels=True)[:, 0] for y in self.labels])


def _pad_to(x: torch.Tensor, size: int, value: float) -> torch.Tensor:
    """Pad the last two axes of ``x`` at the end to at least ``size`` with ``value``."""
    dh, dw = max(0, size - x.shape[-2]), max(0, size - x.shape[-1])
    return F.pad(x, (0, dw, 0, dh), value=value) if dh or dw else x


def load_slice_bank(paths: Sequence[Path], modality: Modality, spacing_mm: float | None = None,
                    label_paths: Sequence[Path] | None = None) -> SliceBank:
    """Read volumes (and their labels) into a :class:`SliceBank` at ``spacing_mm`` in-plane pixels
    (None: the median in-plane spacing of these volumes)."""
    volumes = [read_canonical(path, label_paths[i] if label_paths is not None else None, modality.key)
               for i, path in enumerate(paths)]
    if spacing_mm is None:
        spacing_mm = float(np.median([inplane_spacing(v) for v, _ in volumes]))
    images, labels, windows = [], [], []
    for vol, lab in volumes:
        a = vol.array.astype(np.float32)
        window = intensity_window(a, modality)
        size = working_size(vol.shape[1:], vol.spacing[1:], spacing_mm)
        images.append(resize_slices(torch.from_numpy(to_unit_range(a, window))[:, None], size))
        windows.append(window)
        if lab is not None:
            t = torch.from_numpy(lab.array.astype(np.int64))[:, None]
            labels.append(resize_slices(t, size, labels=True)[:, 0])
    return SliceBank(images, labels if label_paths is not None else None, windows, spacing_mm)
