"""Evaluation of a folder of predictions against a folder of ground truth: per-case and per-organ
DSC and NSD with FLARE's rules (:func:`napari_uda.evaluate.metrics.flare_scores`), means and medians,
written as JSON, CSV and a Markdown table.

Cases are matched by file name (without the volume suffix). A ground-truth case without a
prediction is scored as an empty prediction and flagged ``missing``; a prediction without
ground truth is listed as ``extra``. Nothing is skipped silently.
"""
from __future__ import annotations

import csv
import io
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from napari_uda.core.errors import UdaError
from napari_uda.core.files import list_volumes, stem_of
from napari_uda.core.io import check_same_grid, read_volume, require_organ_labels
from napari_uda.core.jobs import Progress, emit
from napari_uda.core.organs import ORGAN_BY_INDEX, ORGAN_INDICES, PET_SCORED
from napari_uda.evaluate.metrics import flare_scores

METRICS = ("dsc", "nsd")


@dataclass
class Evaluation:
    """Scores of every case: ``cases[i] = {"case", "missing", "organs": {index: {"dsc", "nsd"}}}``."""

    organs: tuple[int, ...]
    cases: list[dict[str, Any]] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    extra: list[str] = field(default_factory=list)
    tolerance_mm: float | None = None

    def values(self, organ: int, metric: str) -> np.ndarray:
        return np.array([c["organs"][organ][metric] for c in self.cases], float)

    def summary(self) -> dict[str, dict[str, float]]:
        """Per organ (by key) and ``"all"``: mean and median DSC and NSD over the cases."""
        out: dict[str, dict[str, float]] = {}
        for c in self.organs:
            out[ORGAN_BY_INDEX[c].key] = {f"{m}_{stat}": float(fn(self.values(c, m))) if self.cases else float("nan")
                                          for m in METRICS for stat, fn in (("mean", np.mean), ("median", np.median))}
        case_means = {m: np.array([np.mean([c["organs"][o][m] for o in self.organs]) for c in self.cases]) for m in METRICS}
        out["all"] = {f"{m}_{stat}": float(fn(case_means[m])) if self.cases else float("nan")
                      for m in METRICS for stat, fn in (("mean", np.mean), ("median", np.median))}
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"tolerance_mm": self.tolerance_mm or "FLARE per-organ", "n_cases": len(self.cases),
                "missing": self.missing, "extra": self.extra, "summary": self.summary(),
                "cases": [{"case": c["case"], "missing": c["missing"],
                           "organs": {ORGAN_BY_INDEX[o].key: v for o, v in c["organs"].items()}} for c in self.cases]}

    def to_csv(self) -> str:
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(["case", "organ", "dsc", "nsd", "missing_prediction"])
        for c in self.cases:
            for o, v in c["organs"].items():
                w.writerow([c["case"], ORGAN_BY_INDEX[o].key, f"{v['dsc']:.6f}", f"{v['nsd']:.6f}", int(c["missing"])])
        return buf.getvalue()

    def to_markdown(self) -> str:
        s = self.summary()
        lines = ["| organ | DSC mean | DSC median | NSD mean | NSD median |", "|---|---:|---:|---:|---:|"]
        rows = [(ORGAN_BY_INDEX[o].name, s[ORGAN_BY_INDEX[o].key]) for o in self.organs] + [("**mean of cases**", s["all"])]
        for name, v in rows:
            lines.append(f"| {name} | {v['dsc_mean']:.3f} | {v['dsc_median']:.3f} | {v['nsd_mean']:.3f} | {v['nsd_median']:.3f} |")
        lines.append("")
        lines.append(f"{len(self.cases)} case(s); NSD tolerance: {self.tolerance_mm or 'FLARE per-organ'} mm"
                     + (f"; **missing predictions (scored as empty): {', '.join(self.missing)}**" if self.missing else "")
                     + (f"; predictions without ground truth (not scored): {', '.join(self.extra)}" if self.extra else ""))
        return "\n".join(lines) + "\n"

    def write(self, out: str | Path) -> list[Path]:
        """``out`` with suffix .json, .csv and .md (whatever suffix ``out`` had); returns the three paths."""
        out = Path(out)
        base = out.with_suffix("") if out.suffix.lower() in (".json", ".csv", ".md") else out
        base.parent.mkdir(parents=True, exist_ok=True)
        paths = [base.with_name(base.name + ext) for ext in (".json", ".csv", ".md")]
        for path, text in zip(paths, (json.dumps(self.to_dict(), indent=2), self.to_csv(), self.to_markdown())):
            path.write_text(text)
        return paths


def evaluate_folders(pred_dir: str | Path, gt_dir: str | Path, tolerance_mm: float | None = None,
                     modality_kind: str = "mri", progress: Progress | None = None) -> Evaluation:
    """Score every ground-truth case in ``gt_dir`` against the same-named prediction in ``pred_dir``.

    Spacing comes from the ground truth; a prediction on another grid is an error naming both files.
    """
    if tolerance_mm is not None and not tolerance_mm > 0:
        raise UdaError(f"the NSD tolerance must be a positive number of mm, got {tolerance_mm}")
    gts = {stem_of(p): p for p in list_volumes(gt_dir)}
    preds = {stem_of(p): p for p in list_volumes(pred_dir)}
    ev = Evaluation(PET_SCORED if modality_kind == "pet" else ORGAN_INDICES, tolerance_mm=tolerance_mm,
                    missing=sorted(set(gts) - set(preds)), extra=sorted(set(preds) - set(gts)))
    for i, case in enumerate(sorted(gts)):
        gt = read_volume(gts[case])
        require_organ_labels(gt, str(gts[case]))
        if case in preds:
            pred = read_volume(preds[case])
            check_same_grid(gt, pred, str(gts[case]), str(preds[case]))
            require_organ_labels(pred, str(preds[case]))
            pred_array = pred.array
        else:
            pred_array = np.zeros_like(gt.array)
        scores = flare_scores(pred_array, gt.array, gt.spacing, modality_kind, ev.organs, tolerance_mm)
        ev.cases.append({"case": case, "missing": case not in preds, "organs": scores})
        emit(progress, "evaluate", case, i + 1, len(gts), "cases")
    return ev


def compare_markdown(evaluations: Mapping[str, Evaluation], metric: str = "dsc") -> str:
    """One row per organ, one column per evaluation (e.g. pipeline stage): the mean ``metric``."""
    if not evaluations:
        raise UdaError("nothing to compare")
    names = list(evaluations)
    organs = next(iter(evaluations.values())).organs
    lines = [f"| organ ({metric.upper()} mean) | " + " | ".join(names) + " |", "|---|" + "---:|" * len(names)]
    summaries = {n: e.summary() for n, e in evaluations.items()}
    for o in organs:
        key = ORGAN_BY_INDEX[o].key
        lines.append(f"| {ORGAN_BY_INDEX[o].name} | " + " | ".join(f"{summaries[n][key][f'{metric}_mean']:.3f}" for n in names) + " |")
    lines.append("| **mean** | " + " | ".join(f"**{summaries[n]['all'][f'{metric}_mean']:.3f}**" for n in names) + " |")
    return "\n".join(lines) + "\n"
