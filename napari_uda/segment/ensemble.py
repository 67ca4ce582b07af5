"""Ensembles of a stage's folds: the fused label of their probabilities, their majority vote,
their disagreement and their union.

Fusion is ``DESIGN.md``'s eq. 9, ``argmax_c mean_i P_i^c``, streamed a z-slab at a time.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from napari_uda.core import _kernels
from napari_uda.core.organs import MAX_LABEL, N_CLASSES
from napari_uda.segment.probabilities import ProbabilityFile


# --- fusion ----------------------------------------------------------------------------------
def fuse_probabilities(paths: Sequence[str | Path]) -> np.ndarray:
    """Fused label ``argmax_c mean_i P_i^c`` (eq. 9), streaming slab by slab over fold files.

    Only one slab of each fold and one accumulator slab are in memory at a time.
    Returns uint8 labels (Z, Y, X).
    """
    if not paths:
        raise ValueError("no fold probability files given")
    files = [ProbabilityFile(p) for p in paths]
    try:
        ref = files[0]
        for f in files[1:]:
            if f.shape != ref.shape:
                raise ValueError(f"{f.path}: probability shape {f.shape} differs from {ref.path}'s {ref.shape}")
        if ref.n_classes > 256:
            raise ValueError(f"{ref.path}: {ref.n_classes} classes do not fit uint8 labels")
        out = np.empty(ref.shape[1:], np.uint8)
        slab = min(f.slab for f in files)
        for z0 in range(0, ref.shape[1], slab):
            acc = None
            for f in files:
                part = _read_range(f, z0, z0 + slab)
                acc = part if acc is None else np.add(acc, part, out=acc)
            assert acc is not None
            out[z0:z0 + acc.shape[1]] = np.argmax(acc, axis=0)
        return out
    finally:
        for f in files:
            f.close()


def _read_range(f: ProbabilityFile, z0: int, z1: int) -> np.ndarray:
    """Slices z0..z1 of a probability file, from whichever of its slabs hold them."""
    first = (z0 // f.slab) * f.slab
    parts = [f.read(s)[:, max(z0 - s, 0): z1 - s] for s in range(first, min(z1, f.shape[1]), f.slab)]
    return parts[0] if len(parts) == 1 else np.concatenate(parts, axis=1)


def majority_vote(label_maps: Sequence[np.ndarray]) -> np.ndarray:
    """Per-voxel most frequent label over N maps (ties go to the lower label)."""
    return vote_with_agreement(label_maps, union=False)[0]


def fold_disagreement(label_maps: Sequence[np.ndarray]) -> np.ndarray:
    """Where the folds disagree: True at voxels where not every label map has the same label."""
    _, agree = vote_with_agreement(label_maps, union=False)
    return agree < len(label_maps)


def union_ensemble(label_maps: Sequence[np.ndarray]) -> np.ndarray:
    """Foreground wherever any map says so, with the most frequent foreground label there."""
    return vote_with_agreement(label_maps, union=True)[0]


def vote_with_agreement(label_maps: Sequence[np.ndarray], union: bool) -> tuple[np.ndarray, np.ndarray]:
    """(voted label, how many maps agree with it) per voxel; ``union``: a foreground label beats background."""
    stack = _kernels.label_stack(label_maps, "label map")
    if stack.size and int(stack.max()) > MAX_LABEL:
        raise ValueError(f"label maps carry labels outside the organ table 0..{MAX_LABEL} (max {int(stack.max())})")
    out, agree = _kernels.vote(stack, N_CLASSES, union, _kernels._n_chunks(stack.shape[1]))
    shape = np.shape(label_maps[0])
    return out.reshape(shape), agree.reshape(shape)
