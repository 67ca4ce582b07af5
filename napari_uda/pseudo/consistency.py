"""Fold consistency and case ranking: how much the folds of a stage agree on each organ of a case.

Pure numpy / numba. Equation numbers refer to ``DESIGN.md``: fold consistency (8)
``C(c) = mean_{i<j} Dice(P_i^c, P_j^c)``; a case's score counts an organ no fold found as 0.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from napari_uda.core import _kernels
from napari_uda.core.organs import N_CLASSES, ORGAN_INDICES
from napari_uda.evaluate.metrics import dice_from_counts


# --- fold consistency ----------------------------------------------------------------------
@dataclass(frozen=True)
class Consistency:
    """Per-organ fold consistency of one case, and which organs any fold predicted."""

    per_organ: dict[int, float]
    present: tuple[int, ...]

    @property
    def scored(self) -> dict[int, float]:
        """Per-organ consistency as the case score counts it: an organ that no fold found is 0, not
        the 1.0 that eq. 8 gives two empty masks (what the review store and the panel show)."""
        return {c: (v if c in self.present else 0.0) for c, v in self.per_organ.items()}

    @property
    def case_score(self) -> float:
        """Mean consistency over every expected organ, an organ that no fold found counting 0
        (so a small, consistent fragment of one organ cannot rank a case first)."""
        return float(np.mean(list(self.scored.values()))) if self.per_organ else 0.0

    @property
    def present_score(self) -> float:
        """Mean consistency over the organs present in at least one fold (0.0 when none is)."""
        return float(np.mean([self.per_organ[c] for c in self.present])) if self.present else 0.0


def fold_consistency_details(fold_labels: Sequence[np.ndarray], labels: Iterable[int] = ORGAN_INDICES) -> Consistency:
    """Mean pairwise Dice per organ over N >= 2 fold label maps (eq. 8), read in one pass."""
    if len(fold_labels) < 2:
        raise ValueError(f"fold consistency needs at least 2 fold label maps, got {len(fold_labels)}")
    labels = list(labels)
    stack = _kernels.label_stack(fold_labels, "fold")
    vol, inter, bad = _kernels.stack_counts(stack, N_CLASSES, _kernels._n_chunks(stack.shape[1]))
    _kernels.check_labels_in_table(stack, int(bad), "fold labels")
    n = len(fold_labels)
    pairs = [(i, j) for i in range(n) for j in range(i + 1, n)]
    per_organ = {
        c: float(np.mean([dice_from_counts(inter[p, c], vol[i, c], vol[j, c]) for p, (i, j) in enumerate(pairs)]))
        for c in labels
    }
    present = tuple(c for c in labels if vol[:, c].sum() > 0)
    return Consistency(per_organ, present)


def fold_consistency(fold_labels: Sequence[np.ndarray], labels: Iterable[int] = ORGAN_INDICES) -> dict[int, float]:
    """Per-organ fold consistency ``C(c)`` (eq. 8). Organs absent from every fold score 1.0."""
    return fold_consistency_details(fold_labels, labels).per_organ


@dataclass(frozen=True)
class CaseScore:
    case: str
    modality: str
    score: float


def rank_cases(scores: Iterable[CaseScore], top_k: int | None = None) -> dict[str, list[CaseScore]]:
    """Cases ranked by score (best first) per modality, cut to the top ``top_k`` when given.

    Ties are broken by case name so the ranking is reproducible.
    """
    by_mod: dict[str, list[CaseScore]] = {}
    for s in scores:
        by_mod.setdefault(s.modality, []).append(s)
    return {m: sorted(v, key=lambda s: (-s.score, s.case))[: top_k if top_k is not None else None] for m, v in by_mod.items()}
