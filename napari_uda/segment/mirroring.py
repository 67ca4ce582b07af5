"""Test-time mirroring that flips back exactly: the mean of a whole-volume predictor's outputs over
every combination of flips of the model's mirror axes, each flipped back.

nnU-Net mirrors inside each sliding-window tile and aggregates the tiles in half precision under a
Gaussian importance map centred at ``size // 2``, which is not symmetric for an even patch size; a
mirrored scan's probabilities, mirrored back, then differ from the scan's by up to 0.5 in a logit
(``benchmarks/RESULTS.md``). Averaging whole predictions over the flip group instead, summed pairwise
one axis at a time, makes the result equivariant bit for bit: for a flip ``f`` of one of the axes,
``mirrored_mean(p, f(x)) == f(mirrored_mean(p, x))`` whenever ``p`` is deterministic, because each
pairwise sum adds the same two numbers in the other order.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

Predict = Callable[[np.ndarray], np.ndarray]


def volume_axes(mirror_axes: Sequence[int] | None, patch_dims: int, volume_dims: int = 3) -> tuple[int, ...]:
    """The volume's array axes (``volume_dims`` of them) that nnU-Net's ``mirror_axes`` name: they are
    axes of a ``patch_dims``-D patch, the last ones of the volume (a 2D model's (0, 1) are a 3D
    volume's (1, 2)). None (mirroring not allowed): no axes."""
    return tuple(sorted(a + volume_dims - patch_dims for a in mirror_axes or ()))


def mirrored_mean(predict: Predict, array: np.ndarray, axes: Sequence[int]) -> np.ndarray:
    """Mean over every combination of flips of ``axes`` of ``array`` (shape (z, y, x)) of
    ``predict``'s output (shape (c, z, y, x)) flipped back: ``2 ** len(axes)`` calls of ``predict``,
    ``len(axes) + 1`` outputs held at once. Exactly flip-equivariant along ``axes`` (module doc)."""
    return _mirrored_sum(predict, array, tuple(axes)) / np.float32(2 ** len(axes))


def _mirrored_sum(predict: Predict, array: np.ndarray, axes: tuple[int, ...]) -> np.ndarray:
    """``S(x) = S'(x) + f(S'(f(x)))`` for the last axis's flip ``f`` and ``S'`` over the others."""
    if not axes:
        return np.asarray(predict(array), dtype=np.float32)
    *rest, axis = axes
    total = _mirrored_sum(predict, array, tuple(rest))
    flipped = _mirrored_sum(predict, np.ascontiguousarray(np.flip(array, axis)), tuple(rest))
    total += np.flip(flipped, axis + 1)  # the outputs' channel axis comes first
    return total
