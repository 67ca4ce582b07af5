"""Single-pass counting kernels (numba) behind Dice, fold consistency and voting.

Each reads its label maps once, in parallel chunks, and skips voxels that are
background everywhere, so the cost approaches the memory-bandwidth floor.
"""
from __future__ import annotations

from collections.abc import Sequence

import numba
import numpy as np
from numba import prange

from napari_uda.core.organs import MAX_LABEL


def _n_chunks(n_voxels: int) -> int:
    return max(1, min(4 * numba.get_num_threads(), n_voxels // 65536 + 1))


@numba.njit(parallel=True, cache=True, nogil=True)
def stack_counts(stack: np.ndarray, n_labels: int, n_chunks: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Counts over N flattened label maps ``stack`` (N, V).

    Returns ``volumes`` (N, n_labels): voxels of each label in each map (label 0 only
    where some map is foreground), ``inter`` (N*(N-1)/2, n_labels): voxels where maps
    i < j agree on the label, in pair order (0,1), (0,2), ..., and ``bad``: the number
    of values >= n_labels.
    """
    n, v = stack.shape
    n_pairs = n * (n - 1) // 2
    vol = np.zeros((n_chunks, n, n_labels), np.int64)
    inter = np.zeros((n_chunks, n_pairs, n_labels), np.int64)
    bad = np.zeros(n_chunks, np.int64)
    step = (v + n_chunks - 1) // n_chunks
    for c in prange(n_chunks):
        for x in range(c * step, min(v, (c + 1) * step)):
            fg = 0
            for i in range(n):
                fg |= stack[i, x]
            if fg == 0:
                continue
            p = 0
            for i in range(n):
                li = stack[i, x]
                if li >= n_labels:
                    bad[c] += 1
                    p += n - 1 - i
                    continue
                vol[c, i, li] += 1
                for j in range(i + 1, n):
                    if stack[j, x] == li:
                        inter[c, p, li] += 1
                    p += 1
    return vol.sum(axis=0), inter.sum(axis=0), bad.sum()


@numba.njit(parallel=True, cache=True, nogil=True)
def vote(stack: np.ndarray, n_labels: int, union: bool, n_chunks: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-voxel vote over N label maps (N, V): the most frequent label (ties: the lowest).

    With ``union`` a voxel that any map marks as foreground gets the most frequent
    foreground label. Also returns, per voxel, the number of maps that agree with the result.
    """
    n, v = stack.shape
    out = np.zeros(v, np.uint8)
    agree = np.zeros(v, np.uint8)
    step = (v + n_chunks - 1) // n_chunks
    for c in prange(n_chunks):
        counts = np.zeros(n_labels, np.int64)
        for x in range(c * step, min(v, (c + 1) * step)):
            fg = 0
            for i in range(n):
                fg |= stack[i, x]
            if fg == 0:
                agree[x] = n
                continue
            counts[:] = 0
            for i in range(n):
                counts[stack[i, x]] += 1
            start = 1 if union else 0
            best = start
            for k in range(start + 1, n_labels):
                if counts[k] > counts[best]:
                    best = k
            out[x] = best
            agree[x] = counts[best]
    return out, agree


@numba.njit(parallel=True, cache=True, nogil=True)
def changed_and_foreground(prev: np.ndarray, cur: np.ndarray, n_chunks: int) -> tuple[int, int]:
    """Voxels whose label differs between two flattened maps, and foreground voxels of ``cur``."""
    v = cur.shape[0]
    diff = np.zeros(n_chunks, np.int64)
    fg = np.zeros(n_chunks, np.int64)
    step = (v + n_chunks - 1) // n_chunks
    for c in prange(n_chunks):
        for x in range(c * step, min(v, (c + 1) * step)):
            if prev[x] != cur[x]:
                diff[c] += 1
            if cur[x] != 0:
                fg[c] += 1
    return diff.sum(), fg.sum()


def as_label_stack(maps: list[np.ndarray], names: list[str] | None = None) -> np.ndarray:
    """Stack same-shape integer label maps into a (N, V) uint8 array, with clear errors."""
    names = names or [f"map {i}" for i in range(len(maps))]
    if not maps:
        raise ValueError("no label maps given")
    shape = np.shape(maps[0])
    out = np.empty((len(maps), int(np.prod(shape))), np.uint8)
    for i, (m, name) in enumerate(zip(maps, names)):
        m = np.asarray(m)
        if m.shape != shape:
            raise ValueError(f"{name}: shape {m.shape} differs from {names[0]}'s {shape}")
        if not (np.issubdtype(m.dtype, np.integer) or m.dtype == np.bool_):
            raise ValueError(f"{name}: label maps must be integers, got {m.dtype}")
        if m.dtype != np.uint8 and m.size and (int(m.min()) < 0 or int(m.max()) > 255):
            raise ValueError(f"{name}: label values outside 0..255 (min {m.min()}, max {m.max()})")
        out[i] = m.reshape(-1)
    return out


__all__ = ["stack_counts", "vote", "changed_and_foreground", "as_label_stack", "label_stack", "check_labels_in_table",
           "_n_chunks"]


def label_stack(maps: Sequence[np.ndarray], what: str) -> np.ndarray:
    """``maps`` as one (n, voxels) label stack; ``what`` names them in errors (``fold 0``, ...)."""
    return as_label_stack(list(maps), [f"{what} {i}" for i in range(len(maps))])


def check_labels_in_table(stack: np.ndarray, bad: int, what: str) -> None:
    """An error when a kernel counted ``bad`` voxels of ``stack`` outside the organ table."""
    if bad:
        worst = int(stack.max())
        raise ValueError(f"{what}: {bad} voxels carry labels outside the organ table 0..{MAX_LABEL} (max {worst})")
