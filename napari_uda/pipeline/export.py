"""Exporting a stage's models as a model folder (:mod:`napari_uda.core.model_folder` holds the layout).

``model.json`` records the stage, the target modality and channel, the translator variant, the
nnU-Net configuration, folds and budget, a summary of the training data, the evaluation when the
workspace holds one, and the versions that made it. Weights are safetensors only: export never
copies nnU-Net's pickled checkpoints.
"""
from __future__ import annotations

import json
import platform
import shutil
from pathlib import Path
from typing import Any

from napari_uda.core.errors import UdaError
from napari_uda.core.files import utc_timestamp
from napari_uda.core.model_folder import FORMAT, SEGMENTER, SIDECAR, TRANSLATOR, TRANSLATOR_FILES
from napari_uda.core.records import ModelRecord
from napari_uda.core.workspace import Workspace
from napari_uda.segment.nnunet_model import FOLD_SIDECAR, FOLD_WEIGHTS, trained_folds


def stage_variant(ws: Workspace, stage: str) -> str | None:
    """The translator variant whose translations trained ``stage`` (None for models trained on
    real scans only: the source-only baseline and the oracle)."""
    from napari_uda.core.choices import BASE_STAGES, POOLED

    by_stage = {s: v for v, s in BASE_STAGES.items()}
    if stage in by_stage:
        return by_stage[stage]
    if stage.startswith("self_training_r") or stage == POOLED:
        pipeline = ws.pipeline()
        return pipeline.variant if pipeline else None
    return None


def _stage_model(ws: Workspace, stage: str) -> tuple[str, ModelRecord]:
    """The stage whose nnU-Net folds ``stage`` stands for (``final`` is a post-processed earlier stage)."""
    if stage == "final":
        final = ws.stage("final")
        if not final:
            raise UdaError(f"{ws.root}: no final stage yet (run the pipeline first)")
        stage = final.from_stage
    info = ws.model(stage)
    if not info:
        known = ", ".join(ws.models()) or "none"
        raise UdaError(f"{ws.root}: no trained model for stage {stage!r} (trained: {known})")
    if info.crop_margin_mm is not None:  # alone, the fine model would be applied to whole scans it never saw
        raise UdaError(f"{ws.root}: stage {stage!r} is a coarse-to-fine pair (its model trained on organ crops); a "
                       "model folder holds one segmenter, so export a stage trained on whole volumes")
    return stage, info


def _evaluation(ws: Workspace, stage: str) -> dict[str, Any] | None:
    """The mean DSC/NSD per organ of ``stage`` from ``W/reports/evaluation_<stage>.json``, if evaluated."""
    path = ws.evaluation_prefix(stage).with_suffix(".json")
    if not path.exists():
        return None
    report = json.loads(path.read_text())
    return {"cases": report.get("n_cases"), "tolerance_mm": report.get("tolerance_mm"), "summary": report.get("summary")}


def export_stage(ws: Workspace, stage: str, out: str | Path) -> Path:
    """Write ``stage``'s nnU-Net folds (safetensors) and its translator into the model folder ``out``.

    ``out`` must not exist yet; the folder is assembled beside it and renamed into place, so an
    interrupted export leaves nothing that looks like a model.
    """
    from napari_uda import __version__

    out = Path(out)
    if out.exists():
        raise UdaError(f"{out}: already exists; choose a new folder for the exported model")
    model_stage, info = _stage_model(ws, stage)
    model = Path(info.path)
    folds = [f for f in info.folds if f in trained_folds(model)]
    if not folds:
        raise UdaError(f"{model}: stage {model_stage!r} has no fold with safe weights ({FOLD_WEIGHTS}) to export")
    variant = stage_variant(ws, model_stage)
    translator = ws.translator(variant) if variant else None
    tmp = out.with_name(f".{out.name}.partial")
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / SEGMENTER).mkdir(parents=True)
    for name in ("plans.json", "dataset.json"):
        shutil.copy2(model / name, tmp / SEGMENTER / name)
    fold_meta = {}
    for f in folds:
        (tmp / SEGMENTER / f"fold_{f}").mkdir()
        for name in (FOLD_WEIGHTS, FOLD_SIDECAR):
            shutil.copy2(model / f"fold_{f}" / name, tmp / SEGMENTER / f"fold_{f}" / name)
        fold_meta[str(f)] = json.loads((model / f"fold_{f}" / FOLD_SIDECAR).read_text())
    if translator:
        (tmp / TRANSLATOR).mkdir()
        for name in TRANSLATOR_FILES:
            shutil.copy2(Path(translator.path) / name, tmp / TRANSLATOR / name)
    import torch

    pipeline = ws.pipeline()
    sidecar = {
        "format": FORMAT, "format_version": 1, "stage": stage, "model_stage": model_stage,
        "modality": ws.modality, "channel": info.channel or ws.modality,
        "translator": {"variant": variant, "iterations": translator.iterations, "size": translator.size}
        if translator else None,
        "segmenter": {"configuration": info.configuration, "planner": info.planner, "budget": info.budget,
                      "folds": folds, "trainer": next(iter(fold_meta.values()))["trainer"],
                      "epochs": {k: v.get("epochs") for k, v in fold_meta.items()}},
        "training_data": {"source_cases": len(ws.files("source_images")), "target_cases": len(ws.files("target_images")),
                          "segmenter_cases": info.trained_on, "self_training_round": info.round,
                          "real_ct": pipeline.real_ct if pipeline else None},
        "evaluation": _evaluation(ws, stage),
        "postprocessed": stage == "final",
        "versions": {"napari_uda": __version__, "torch": torch.__version__, "python": platform.python_version()},
        "exported": utc_timestamp(),
    }
    (tmp / SIDECAR).write_text(json.dumps(sidecar, indent=2))
    tmp.rename(out)
    return out
