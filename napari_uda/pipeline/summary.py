"""What a workspace's stages achieved, for a person comparing self-training rounds: one row per
scored stage with the accepted cases it trained on, its case scores, the uncertainty across
rounds, DSC/NSD where the stage was evaluated, and each organ's mean fold consistency.
"""
from __future__ import annotations

import json
from typing import Any

import numpy as np

from napari_uda.core.organs import ORGANS
from napari_uda.core.workspace import Workspace
from napari_uda.pipeline.workflow import stage_order
from napari_uda.review.store import ReviewStore

HEADER = ["stage", "accepted cases", "mean case score", "mean uncertainty", "DSC", "NSD"] + [o.name for o in ORGANS]


def _evaluated(ws: Workspace, stage: str) -> tuple[float, float]:
    """Mean DSC and NSD of ``stage`` over all organs and cases (NaN when it was not evaluated)."""
    report = ws.evaluation_prefix(stage).with_suffix(".json")
    if not report.exists():
        return float("nan"), float("nan")
    summary = json.loads(report.read_text())["summary"]["all"]
    return summary["dsc_mean"], summary["nsd_mean"]


def compare_rounds(ws: Workspace) -> tuple[list[str], list[list[Any]]]:
    """(header, rows): one row per scored stage (and ``final``), in the method's order."""
    rows = []
    with ReviewStore.for_workspace(ws.root) as store:
        rounds = {r.round: r for r in store.rounds()}
        stages = ws.stages()
        for stage in stage_order([s for s, v in stages.items() if v.model_id is not None or s == "final"]):
            info = stages[stage]
            scores = store.case_scores(info.model_id)
            r = rounds.get(info.round)
            unc = list(r.uncertainty.values()) if r else []
            organ = store.mean_organ_consistency(info.model_id)
            rows.append([stage, len(r.cases) if r else 0, float(np.mean(scores)) if scores else float("nan"),
                         float(np.mean(unc)) if unc else float("nan"), *_evaluated(ws, stage)]
                        + [float(organ.get(o.index, float("nan"))) for o in ORGANS])
    return list(HEADER), rows
