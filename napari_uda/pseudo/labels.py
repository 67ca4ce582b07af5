"""The pseudo-label of a case and its uncertainty across self-training rounds.

FLARE 2025's strict per-voxel majority over the models, and ``DESIGN.md``'s uncertainty
``u = 1/(K-1) * sum_k |y_k != y_{k-1}| / |y_k > 0|`` between the labels of successive rounds.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from napari_uda.core import _kernels
from napari_uda.segment.ensemble import vote_with_agreement


def strict_majority_label(label_maps: Sequence[np.ndarray]) -> np.ndarray:
    """FLARE 2025's pixel-wise stage: a voxel gets label ``l`` where more than half of the N maps
    (folds and checkpoints) say ``l``; everywhere else, including every voxel where the models
    disagree without a strict majority, it is background (0). There are no ties: at most one
    label can hold a strict majority. With N = 2 this keeps exactly the voxels both agree on."""
    voted, agree = vote_with_agreement(label_maps, union=False)
    return np.where(agree > len(label_maps) / 2, voted, 0).astype(np.uint8)


# --- uncertainty across self-training rounds ----------------------------------------------------
def round_uncertainty(round_labels: Sequence[np.ndarray]) -> float:
    """``u = 1/(K-1) * sum_k |y_k != y_{k-1}| / |y_k > 0|`` over K >= 2 rounds' labels of one case."""
    k = len(round_labels)
    if k < 2:
        raise ValueError(f"uncertainty across rounds needs at least 2 rounds, got {k}")
    stack = _kernels.label_stack(round_labels, "round")
    total = 0.0
    for i in range(1, k):
        diff, fg = _kernels.changed_and_foreground(stack[i - 1], stack[i], _kernels._n_chunks(stack.shape[1]))
        total += (float(diff) / float(fg)) if fg else (0.0 if diff == 0 else float("inf"))
    return total / (k - 1)


def select_by_uncertainty(uncertainty: Mapping[str, float], threshold: float) -> list[str]:
    """Cases whose uncertainty is at most ``threshold``, most certain first."""
    return sorted((c for c, u in uncertainty.items() if u <= threshold), key=lambda c: (uncertainty[c], c))
