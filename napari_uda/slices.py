"""2D slices for translation: volumes to normalised, resized slice stacks and back."""
from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from .errors import UdaError
from .intensity import intensity_window, to_unit_range
from .io import FILE_SUFFIXES, read_volume, require_finite, require_organ_labels, stem_of
from .modalities import Modality
from .orientation import align_label, to_canonical

log = logging.getLogger(__name__)


def list_volumes(folder: str | Path) -> list[Path]:
    """Volume files in ``folder``, sorted by name; an error when there are none."""
    folder = Path(folder)
    if not folder.is_dir():
        raise UdaError(f"{folder}: not a folder")
    files = sorted(p for p in folder.iterdir() if p.is_file() and any(p.name.lower().endswith(s) for s in FILE_SUFFIXES))
    if not files:
        raise UdaError(f"{folder}: holds no volumes ({', '.join(FILE_SUFFIXES)})")
    return files


def pair_labels(images: Sequence[Path], label_folder: str | Path) -> list[Path]:
    """The label file of each image (same name in ``label_folder``), or an error naming the first missing one."""
    label_folder = Path(label_folder)
    by_stem = {stem_of(p): p for p in list_volumes(label_folder)}
    missing = [p.name for p in images if stem_of(p) not in by_stem]
    if missing:
        raise UdaError(f"{label_folder}: no labels for {', '.join(missing[:5])}" + (" ..." if len(missing) > 5 else ""))
    return [by_stem[stem_of(p)] for p in images]


def resize_slices(x: torch.Tensor, size: tuple[int, int], labels: bool = False) -> torch.Tensor:
    """Resize (N, C, H, W) slices in-plane (bilinear for images, nearest for labels)."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    if labels:
        return F.interpolate(x.float(), size=size, mode="nearest").to(x.dtype)
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


def load_slices(paths: Sequence[Path], modality: Modality, size: int, label_paths: Sequence[Path] | None = None
                ) -> tuple[torch.Tensor, torch.Tensor | None, list[tuple[float, float]]]:
    """All axial slices of the volumes at ``paths`` in the canonical orientation (and their labels),
    plus each volume's raw window."""
    images, labels, windows = [], [], []
    for i, path in enumerate(paths):
        raw = read_volume(path, modality.key)
        require_finite(raw, str(path))
        vol = to_canonical(raw)
        a = vol.array.astype(np.float32)
        window = intensity_window(a, modality)
        images.append(resize_slices(torch.from_numpy(to_unit_range(a, window))[:, None], (size, size)))
        windows.append(window)
        if label_paths is not None:
            lab, note = align_label(raw, read_volume(label_paths[i]), str(path), str(label_paths[i]))
            if note:
                log.warning(note)
            require_organ_labels(lab, str(label_paths[i]))
            lab = to_canonical(lab)
            t = torch.from_numpy(lab.array.astype(np.int64))[:, None]
            labels.append(resize_slices(t, (size, size), labels=True)[:, 0])
    return torch.cat(images), (torch.cat(labels) if label_paths is not None else None), windows
