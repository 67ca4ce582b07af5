"""The dual-stage filters that decide which pseudo-labels are kept: organs present, relative organ
volumes against the labelled source (FLARE 2024), agreement between checkpoints (FLARE 2025).

Each filter returns a :class:`FilterResult` whose reason is shown to reviewers.
"""
from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from napari_uda.core.organs import N_CLASSES, ORGAN_INDICES, organ_name
from napari_uda.pseudo.consistency import fold_consistency_details


# --- dual-stage filtering ------------------------------------------------------------------
@dataclass(frozen=True)
class FilterResult:
    """Outcome of one filter for one case, with the reason in words (shown to reviewers)."""

    name: str
    passed: bool
    reason: str


def filter_organs_present(labels: np.ndarray, expected: Iterable[int] = ORGAN_INDICES) -> FilterResult:
    """(a) Every expected organ has at least one voxel."""
    counts = np.bincount(np.asarray(labels).ravel(), minlength=N_CLASSES)
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
    counts = np.bincount(labels[box].ravel(), minlength=N_CLASSES)
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
