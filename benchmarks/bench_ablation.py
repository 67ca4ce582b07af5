"""Ablation: does each stage of the method improve on the one before, on scans it never saw?

Phantom CT (labelled, data seed S+100) is adapted to phantom target scans (T2WI or PET FDG, seed
S+200, labels used for evaluation and for the oracle only); every stage's model is also applied
to held-out target scans (seed S+300) that no stage used. Stages: the strong source-only baseline
(``no_adaptation``: real CT normalised as the targets, strong intensity augmentation), CycleGAN,
Organ Attention CycleGAN, Organ Attention + one self-training round on consistency-selected
pseudo-labels (top half by fold consistency, FLARE 2024's rule), and the oracle (the budget's
nnU-Net trained on the labelled adaptation scans: an upper bound), and the other translators
(ASIT's Sobel-space stage among them). Per-organ DSC/NSD of every stage, wall time of every step.
One translator's row alone on the same data: ``--variant asit --no-ablation --rounds 0 --skip-oracle``.

    .venv/bin/python benchmarks/bench_ablation.py [--budget small] [--seed 0] [--modality t2wi] [--phantom independent]
        [--variant organ-attention] [--ablation-variants cyclegan,asit | --no-ablation] [--rounds 1]
        [--select consistency|filters|uncertainty] [--tta]

Writes OUT.json (everything) and OUT.md (tables); the workspace stays in OUT_workspace/.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from functools import partial
from pathlib import Path

import numpy as np

from napari_uda.cli.console import Console
from napari_uda.core.choices import ACCEPT_RULES, get_budget
from napari_uda.core.files import list_volumes, stem_of
from napari_uda.core.io import Volume, read_volume, write_volume
from napari_uda.core.jobs import Event
from napari_uda.core.modalities import get_modality
from napari_uda.core.records import ModelRecord
from napari_uda.core.workspace import Workspace
from napari_uda.data.phantom import write_phantom_dataset
from napari_uda.evaluate.evaluation import compare_markdown, evaluate_folders
from napari_uda.pipeline.workflow import (
    COARSE,
    FilterSettings,
    crop_margin_of,
    predict_as_stage,
    run_pipeline,
    stage_order,
    stage_volume,
    train_stage,
    tta_of,
)
from napari_uda.segment.postprocess import postprocess
from napari_uda.segment.segmenter import training_events

SHAPE = (40, 96, 96)
N_CT, N_ADAPT, N_HELD_OUT = 8, 8, 4


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", default="small")
    parser.add_argument("--seed", type=int, default=0, help="phantom seed offset")
    parser.add_argument("--modality", default="t2wi", help="target modality the phantom renders (t2wi, pet_fdg, ...)")
    parser.add_argument("--out", type=Path, default=None, help="default benchmarks/ablation_<budget>_<modality>_s<seed>")
    parser.add_argument("--fresh", action="store_true", help="start over instead of resuming")
    parser.add_argument("--phantom", choices=("napari_uda", "independent"), default="napari_uda",
                        help="the project's phantom, or benchmarks/independent_phantom.py's (T2WI only)")
    parser.add_argument("--skip-oracle", action="store_true",
                        help="evaluate the pipeline's stages without training the oracle (its recipe and data are the seed's)")
    parser.add_argument("--variant", default="organ-attention", help="the pipeline's translator")
    parser.add_argument("--ablation-variants", default=None, help="the other translators, comma-separated (default: all)")
    parser.add_argument("--no-ablation", action="store_true", help="the variant's stages alone")
    parser.add_argument("--pool-variants", default=None, help="multi-view pooling: translators, comma-separated")
    parser.add_argument("--rounds", type=int, default=1, help="self-training rounds")
    parser.add_argument("--select", default="consistency", choices=ACCEPT_RULES, help="the selection rule of the rounds")
    parser.add_argument("--tta", action="store_true", help="mirroring augmentation and test-time mirroring")
    parser.add_argument("--coarse-to-fine", action="store_true", help="coarse and fine (organ-crop) models per stage")
    args = parser.parse_args()
    mod = get_modality(args.modality)
    if args.phantom == "independent" and mod.slug != "t2wi":
        parser.error("the independent phantom renders CT and T2WI only")
    args.out = args.out or default_out(args.budget, mod.slug + ("_ind" if args.phantom == "independent" else ""), args.seed)
    os.environ.setdefault("nnUNet_n_proc_DA", "0")
    root = workspace_root(args.out)
    if args.fresh:
        shutil.rmtree(root, ignore_errors=True)
    t0 = time.perf_counter()
    data = root / "data"
    ws = phantom_workspace(root, args.seed, mod.slug, args.phantom)
    events: list[tuple[str, float]] = []  # (stage, seconds since the start) of every event
    console = Console(sys.stdout, interactive=False)

    def progress(e: Event) -> None:
        events.append((e.task.split()[0], round(time.perf_counter() - t0, 1)))
        console(e)

    finished_before = (ws.stage("final") is not None and (args.skip_oracle or ws.model("oracle") is not None)
                       and args.out.with_suffix(".json").exists())
    settings = FilterSettings(top_k=N_ADAPT // 2, rule=args.select)
    others = args.ablation_variants.split(",") if args.ablation_variants else None
    result = run_pipeline(ws, get_budget(args.budget), args.variant, rounds=args.rounds, auto=True,
                          ablation=not args.no_ablation, device="cpu", settings=settings, progress=progress,
                          ablation_variants=others,
                          pool_variants=args.pool_variants.split(",") if args.pool_variants else None, tta=args.tta,
                          coarse_to_fine=args.coarse_to_fine)
    t_pipeline = time.perf_counter() - t0
    adapt_images = list_volumes(data / f"adapt/{mod.slug}/images")
    if not args.skip_oracle:
        train_stage(ws, "oracle", adapt_images, [data / f"adapt/{mod.slug}/labels" / p.name for p in adapt_images],
                          mod.key, get_budget(args.budget), "cpu", progress=progress)
    t_oracle = time.perf_counter() - t0 - t_pipeline
    models = ws.models()
    stages = stage_order([s for s in models if not s.endswith(COARSE)])  # a coarse model predicts with its stage
    held_out = list_volumes(data / f"heldout/{mod.slug}/images")
    evaluations = {"adapted scans": {}, "held-out scans": {}}
    for stage in stages:
        out = root / "heldout_predictions" / stage
        if not (out / "predictions.json").exists():  # each scan as the stage's segmenter reads it (ASIT: Sobel maps)
            inputs = [write_volume(stage_volume(ws, stage, read_volume(p, mod.key)),
                                   root / "heldout_inputs" / stage / p.name) for p in held_out]
            predict_as_stage(ws, stage, inputs, out, "cpu")
        evaluations["held-out scans"][stage] = evaluate_folders(out, data / f"heldout/{mod.slug}/labels", modality_kind=mod.kind)
        if stage != "oracle":  # the oracle trained on these
            evaluations["adapted scans"][stage] = evaluate_folders(ws.predictions_dir(stage),
                                                                   data / f"adapt/{mod.slug}/labels", modality_kind=mod.kind)
    final_out, last = root / "heldout_predictions" / "final", result["from_stage"]
    for p in held_out:
        vol = read_volume(root / "heldout_predictions" / last / f"{stem_of(p)}.nii.gz")
        write_volume(Volume(postprocess(vol.array, vol.spacing), vol.geometry), final_out / f"{stem_of(p)}.nii.gz")
    evaluations["held-out scans"]["final (post-processed)"] = evaluate_folders(final_out, data / f"heldout/{mod.slug}/labels",
                                                                               modality_kind=mod.kind)
    total = time.perf_counter() - t0

    timeline = {}
    for stage, t in events:  # first and last event of each stage
        timeline.setdefault(stage, [t, t])[1] = t
    report = {"budget": args.budget, "modality": mod.key, "seed": args.seed, "phantom": args.phantom,
              "variant": args.variant, "ablation": None if args.no_ablation else (others or "all"), "rounds": args.rounds,
              "pool_variants": args.pool_variants,
              "oracle_trained": not args.skip_oracle,
              "oracle_seconds": round(t_oracle, 1),
              "shape_zyx": SHAPE, "n_ct": N_CT, "n_adapt": N_ADAPT, "n_held_out": N_HELD_OUT,
              "accept": {"rule": settings.rule, "top_k": settings.top_k}, "tta": tta_of(ws),
              "crop_margin_mm": crop_margin_of(ws), "pipeline_seconds": round(t_pipeline, 1),
              "total_seconds": round(total, 1), "stage_timeline_s": timeline, "cpu_count": os.cpu_count(),
              "evaluations": {k: {s: e.to_dict() for s, e in v.items()} for k, v in evaluations.items()}}
    report["learning_curves"] = learning_curves(ws)
    if finished_before:  # a rerun only re-evaluates: keep the timings of the run that trained
        previous = json.loads(args.out.with_suffix(".json").read_text())
        report.update({k: previous[k] for k in ("pipeline_seconds", "oracle_seconds", "total_seconds", "stage_timeline_s")})
    write_report(args.out, report, evaluations)


def default_out(budget: str, slug: str, seed: int) -> Path:
    """Where a run's report goes by default: ``benchmarks/ablation_<budget>_<slug>_s<seed>``(.json, .md)."""
    return Path(f"benchmarks/ablation_{budget}_{slug}_s{seed}")


def workspace_root(out: Path) -> Path:
    """The folder of a run's data and workspace, beside its report ``out``: ``<out>_workspace``."""
    return out.with_name(out.name + "_workspace")


def phantom_workspace(root: Path, seed: int, slug: str, phantom: str = "napari_uda") -> Workspace:
    """The benchmark's phantom data in ``root/data`` (CT seed+100, target seed+200 to adapt to,
    held-out target seed+300) and its workspace ``root/ws``. ``phantom``: ``napari_uda`` (the
    project's) or ``independent`` (``independent_phantom.py``, written apart from it)."""
    data = root / "data"
    if not (data / "done").exists():
        if phantom == "independent":
            from independent_phantom import write_dataset
        else:
            write_dataset = partial(write_phantom_dataset, shape=SHAPE)
        write_dataset(data / "source", {"ct": N_CT}, seed + 100)
        write_dataset(data / "adapt", {slug: N_ADAPT}, seed + 200)
        write_dataset(data / "heldout", {slug: N_HELD_OUT}, seed + 300)
        (data / "done").touch()
    return Workspace.create(root / "ws", data / "source/ct/images", data / "source/ct/labels",
                            data / f"adapt/{slug}/images", get_modality(slug).key)


def learning_curves(ws: Workspace) -> dict[str, dict[str, list[float]]]:
    """Per stage and fold, nnU-Net's mean pseudo-Dice over the organs on its validation cases after
    every epoch (from the trainers' progress lines in ``W/logs/``)."""
    curves: dict[str, dict[str, list[float]]] = {}
    for stage, info in stage_items(ws):
        log = training_events(ws.root, info.dataset, info.budget)
        for line in log.read_text().splitlines() if log.exists() else []:
            e = Event.from_json(line)
            if e is None or "pseudo_dice" not in e.data:  # iteration lines
                continue
            curves.setdefault(stage, {}).setdefault(str(e.data["fold"]), []).append(round(float(np.mean(e.data["pseudo_dice"])), 4))
    return curves


def stage_items(ws: Workspace) -> list[tuple[str, ModelRecord]]:
    models = ws.models()
    return [(s, models[s]) for s in stage_order(list(models))]


def curve_table(curves: dict[str, dict[str, list[float]]], every: int = 4) -> str:
    """Markdown: mean validation pseudo-Dice per stage and fold at every ``every``-th epoch."""
    n = max((len(c) for folds in curves.values() for c in folds.values()), default=0)
    epochs = list(range(every, n + 1, every)) or [n]
    rows = ["| stage, fold | " + " | ".join(f"epoch {e}" for e in epochs) + " |", "|---|" + "---:|" * len(epochs)]
    for stage, folds in curves.items():
        for fold, c in folds.items():
            rows.append(f"| {stage}, fold {fold} | " + " | ".join(f"{c[e - 1]:.3f}" if e <= len(c) else "" for e in epochs) + " |")
    return "\n".join(rows) + "\n"


def write_report(out: Path, report: dict, evaluations: dict) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(report, indent=2))
    phantom = " (independent phantom)" if report.get("phantom") == "independent" else ""
    md = [f"# Ablation, budget `{report['budget']}`, {report['modality']}{phantom}, seed {report['seed']} "
          f"({report['total_seconds'] / 60:.1f} min on {report['cpu_count']} CPU cores; "
          f"pipeline {report['pipeline_seconds'] / 60:.1f} min, oracle {report['oracle_seconds'] / 60:.1f} min)", "",
          f"Self-training rounds: {report['rounds']}, selected by {report['accept']['rule']} (top "
          f"{report['accept']['top_k']}); test-time mirroring: {'on' if report.get('tta') else 'off'}; coarse-to-fine: "
          + (f"crops with {report['crop_margin_mm']:g} mm" if report.get("crop_margin_mm") is not None else "off") + ".", ""]
    for name, evs in evaluations.items():
        md += [f"## {name}", "", compare_markdown(evs, "dsc"), compare_markdown(evs, "nsd")]
    md += ["## learning curves (nnU-Net's validation pseudo-Dice, mean over organs)", "", curve_table(report["learning_curves"])]
    out.with_suffix(".md").write_text("\n".join(md))
    print("\n".join(md))


if __name__ == "__main__":
    main()
