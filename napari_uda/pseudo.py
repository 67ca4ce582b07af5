"""Pseudo-labels from fold predictions: consistency, ranking, fusion, filtering, uncertainty.

Pure numpy / numba; the CLI, the widgets and self-training call these. Equation numbers
refer to ``DESIGN.md``: fold consistency (8) ``C(c) = mean_{i<j} Dice(P_i^c, P_j^c)``,
fusion (9) ``argmax_c mean_i P_i^c``, and the uncertainty across self-training rounds
``u = 1/(K-1) * sum_k |y_k != y_{k-1}| / |y_k > 0|``.
"""
from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from . import _kernels
from .metrics import dice_from_counts
from .organs import MAX_LABEL, ORGAN_INDICES, organ_name
from .probabilities import ProbabilityFile

N_LABELS = MAX_LABEL + 1


def _label_stack(maps: Sequence[np.ndarray], what: str) -> np.ndarray:
    return _kernels.as_label_stack(list(maps), [f"{what} {i}" for i in range(len(maps))])


def _check_labels_in_table(stack: np.ndarray, bad: int, what: str) -> None:
    if bad:
        worst = int(stack.max())
        raise ValueError(f"{what}: {bad} voxels carry labels outside the organ table 0..{MAX_LABEL} (max {worst})")


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
    stack = _label_stack(fold_labels, "fold")
    vol, inter, bad = _kernels.stack_counts(stack, N_LABELS, _kernels._n_chunks(stack.shape[1]))
    _check_labels_in_table(stack, int(bad), "fold labels")
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
    return _vote(label_maps, union=False)[0]


def fold_disagreement(label_maps: Sequence[np.ndarray]) -> np.ndarray:
    """Where the folds disagree: True at voxels where not every label map has the same label."""
    _, agree = _vote(label_maps, union=False)
    return agree < len(label_maps)


def union_ensemble(label_maps: Sequence[np.ndarray]) -> np.ndarray:
    """Foreground wherever any map says so, with the most frequent foreground label there."""
    return _vote(label_maps, union=True)[0]


def _vote(label_maps: Sequence[np.ndarray], union: bool) -> tuple[np.ndarray, np.ndarray]:
    stack = _label_stack(label_maps, "label map")
    if stack.size and int(stack.max()) > MAX_LABEL:
        raise ValueError(f"label maps carry labels outside the organ table 0..{MAX_LABEL} (max {int(stack.max())})")
    out, agree = _kernels.vote(stack, N_LABELS, union, _kernels._n_chunks(stack.shape[1]))
    shape = np.shape(label_maps[0])
    return out.reshape(shape), agree.reshape(shape)


# --- dual-stage filtering ------------------------------------------------------------------
@dataclass(frozen=True)
class FilterResult:
    """Outcome of one filter for one case, with the reason in words (shown to reviewers)."""

    name: str
    passed: bool
    reason: str


def filter_organs_present(labels: np.ndarray, expected: Iterable[int] = ORGAN_INDICES) -> FilterResult:
    """(a) Every expected organ has at least one voxel."""
    counts = np.bincount(np.asarray(labels).ravel(), minlength=N_LABELS)
    missing = [c for c in expected if counts[c] == 0]
    if missing:
        return FilterResult("organs_present", False, "missing: " + ", ".join(organ_name(c) for c in missing))
    return FilterResult("organs_present", True, "all expected organs present")


def relative_volumes(labels: np.ndarray, organs: Iterable[int] = ORGAN_INDICES) -> dict[int, float]:
    """Each organ's voxel count divided by the volume of the bounding box of all foreground."""
    labels = np.asarray(labels)
    fg = np.argwhere(labels > 0)
    if len(fg) == 0:
        return {c: 0.0 for c in organs}
    box = tuple(slice(lo, hi + 1) for lo, hi in zip(fg.min(axis=0), fg.max(axis=0)))
    box_volume = float(np.prod([s.stop - s.start for s in box]))
    counts = np.bincount(labels[box].ravel(), minlength=N_LABELS)
    return {c: float(counts[c]) / box_volume for c in organs}


@dataclass
class SourceStats:
    """Mean and standard deviation of each organ's relative volume over the source CT labels."""

    mean: dict[int, float]
    std: dict[int, float]
    n_cases: int

    @classmethod
    def from_labels(cls, label_maps: Iterable[np.ndarray], organs: Iterable[int] = ORGAN_INDICES) -> SourceStats:
        organs = list(organs)
        rel = [relative_volumes(m, organs) for m in label_maps]
        if len(rel) < 2:
            raise ValueError(f"source statistics need at least 2 labelled CT cases, got {len(rel)}")
        return cls({c: float(np.mean([r[c] for r in rel])) for c in organs},
                   {c: float(np.std([r[c] for r in rel], ddof=1)) for c in organs}, len(rel))

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(asdict(self), indent=2))

    @classmethod
    def load(cls, path: str | Path) -> SourceStats:
        d = json.loads(Path(path).read_text())
        return cls({int(k): v for k, v in d["mean"].items()}, {int(k): v for k, v in d["std"].items()}, d["n_cases"])


def filter_relative_volume(labels: np.ndarray, stats: SourceStats, k: float = 3.0,
                           organs: Iterable[int] | None = None) -> FilterResult:
    """(b) Each organ's relative volume within mean +- k std of the source CT statistics, for
    ``organs`` (default: every organ of the statistics; PET checks its 4 scored organs only)."""
    rel = relative_volumes(labels, list(organs) if organs is not None else list(stats.mean))
    out = []
    for c, v in rel.items():
        lo, hi = stats.mean[c] - k * stats.std[c], stats.mean[c] + k * stats.std[c]
        if not lo <= v <= hi:
            out.append(f"{organ_name(c)} {v:.4f} outside [{max(lo, 0):.4f}, {hi:.4f}]")
    if out:
        return FilterResult("relative_volume", False, "; ".join(out))
    return FilterResult("relative_volume", True, f"all organ volumes within mean +- {k:g} sd of source CT")


def mean_dice(a: np.ndarray, b: np.ndarray, labels: Iterable[int] = ORGAN_INDICES) -> float:
    """Mean Dice over the organs present in either map (1.0 when both are empty)."""
    details = fold_consistency_details([a, b], labels)
    return details.present_score if details.present else 1.0


def filter_checkpoint_agreement(case_dice: Mapping[str, float], threshold: float, top_k: int | None = None) -> dict[str, FilterResult]:
    """(c) Dice between the two best checkpoints' predictions >= ``threshold`` and in the top ``top_k``.

    Default thresholds (``DEFAULT_AGREEMENT``) are 0.9 for MRI and 0.82 for PET.
    """
    ranked = sorted(case_dice, key=lambda c: (-case_dice[c], c))
    rank = {c: r for r, c in enumerate(ranked)}
    out = {}
    for case, d in case_dice.items():
        if d < threshold:
            out[case] = FilterResult("checkpoint_agreement", False, f"checkpoint Dice {d:.3f} < {threshold:g}")
        elif top_k is not None and rank[case] >= top_k:
            out[case] = FilterResult("checkpoint_agreement", False, f"checkpoint Dice {d:.3f} ranks {rank[case] + 1}, outside top {top_k}")
        else:
            out[case] = FilterResult("checkpoint_agreement", True, f"checkpoint Dice {d:.3f} >= {threshold:g}")
    return out


DEFAULT_AGREEMENT = {"mri": 0.9, "pet": 0.82}


def strict_majority_label(label_maps: Sequence[np.ndarray]) -> np.ndarray:
    """FLARE 2025's pixel-wise stage: a voxel gets label ``l`` where more than half of the N maps
    (folds and checkpoints) say ``l``; everywhere else, including every voxel where the models
    disagree without a strict majority, it is background (0). There are no ties: at most one
    label can hold a strict majority. With N = 2 this keeps exactly the voxels both agree on."""
    voted, agree = _vote(label_maps, union=False)
    return np.where(agree > len(label_maps) / 2, voted, 0).astype(np.uint8)


# --- uncertainty across self-training rounds ----------------------------------------------------
def round_uncertainty(round_labels: Sequence[np.ndarray]) -> float:
    """``u = 1/(K-1) * sum_k |y_k != y_{k-1}| / |y_k > 0|`` over K >= 2 rounds' labels of one case."""
    k = len(round_labels)
    if k < 2:
        raise ValueError(f"uncertainty across rounds needs at least 2 rounds, got {k}")
    stack = _label_stack(round_labels, "round")
    total = 0.0
    for i in range(1, k):
        diff, fg = _kernels.changed_and_foreground(stack[i - 1], stack[i], _kernels._n_chunks(stack.shape[1]))
        total += (float(diff) / float(fg)) if fg else (0.0 if diff == 0 else float("inf"))
    return total / (k - 1)


def select_by_uncertainty(uncertainty: Mapping[str, float], threshold: float) -> list[str]:
    """Cases whose uncertainty is at most ``threshold``, most certain first."""
    return sorted((c for c, u in uncertainty.items() if u <= threshold), key=lambda c: (uncertainty[c], c))


