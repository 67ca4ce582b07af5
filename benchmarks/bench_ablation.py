"""Ablation: does each stage of the method improve on the one before? (issue 8)

Phantom CT (labelled, seed 100) is adapted to phantom T2WI (seed 200, labels used for evaluation
only); every stage's model is also applied to held-out T2WI scans (seed 300) it never saw.
Stages: no adaptation (nnU-Net on raw CT), CycleGAN, Organ Attention CycleGAN, and Organ
Attention + one self-training round on consistency-selected pseudo-labels (top half by fold
consistency, FLARE 2024's rule). Per-organ DSC/NSD of every stage, wall time of every step.

    .venv/bin/python benchmarks/bench_ablation.py [--budget small] [--out benchmarks/ablation_small]

Writes OUT.json (everything) and OUT.md (tables); the workspace stays in OUT_workspace/.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from pathlib import Path

from napari_uda.evaluation import compare_markdown, evaluate_folders
from napari_uda.io import Volume, read_volume, stem_of, write_volume
from napari_uda.phantom import write_phantom_dataset
from napari_uda.pipeline import FilterSettings, get_budget, run_pipeline, stage_order
from napari_uda.postprocess import postprocess
from napari_uda.segmenter import predict_folds
from napari_uda.slices import list_volumes
from napari_uda.workspace import Workspace

SHAPE = (24, 48, 48)
N_CT, N_ADAPT, N_HELD_OUT = 6, 6, 4


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", default="small")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/ablation_small"))
    parser.add_argument("--fresh", action="store_true", help="start over instead of resuming")
    args = parser.parse_args()
    os.environ.setdefault("nnUNet_n_proc_DA", "0")
    root = args.out.with_name(args.out.name + "_workspace")
    if args.fresh:
        shutil.rmtree(root, ignore_errors=True)
    t0 = time.perf_counter()
    data = root / "data"
    if not (data / "done").exists():
        write_phantom_dataset(data / "source", {"ct": N_CT}, seed=100, shape=SHAPE)
        write_phantom_dataset(data / "adapt", {"t2wi": N_ADAPT}, seed=200, shape=SHAPE)
        write_phantom_dataset(data / "heldout", {"t2wi": N_HELD_OUT}, seed=300, shape=SHAPE)
        (data / "done").touch()
    ws = Workspace.create(root / "ws", data / "source/ct/images", data / "source/ct/labels", data / "adapt/t2wi/images", "T2WI")
    events: list[dict] = []

    def progress(e: dict) -> None:
        e = {**e, "t": round(time.perf_counter() - t0, 1)}
        events.append(e)
        print(f"[{e['t']:7.1f}s {e['stage']}] {e['message']}", flush=True)

    settings = FilterSettings(top_k=N_ADAPT // 2, rule="consistency")
    result = run_pipeline(ws, get_budget(args.budget), "organ-attention", rounds=1, auto=True, ablation=True,
                          device="cpu", settings=settings, progress=progress)
    t_pipeline = time.perf_counter() - t0
    stages = stage_order(list(ws.manifest["models"]))
    held_out = list_volumes(data / "heldout/t2wi/images")
    evaluations = {"adapted scans": {}, "held-out scans": {}}
    for stage in stages:
        out = root / "heldout_predictions" / stage
        if not (out / "predictions.json").exists():
            predict_folds(ws.manifest["models"][stage]["path"], held_out, out, ws.manifest["models"][stage]["folds"], "cpu")
        evaluations["held-out scans"][stage] = evaluate_folders(out, data / "heldout/t2wi/labels")
        evaluations["adapted scans"][stage] = evaluate_folders(ws.predictions_dir(stage), data / "adapt/t2wi/labels")
    final_out, last = root / "heldout_predictions" / "final", result["from_stage"]
    for p in held_out:
        vol = read_volume(root / "heldout_predictions" / last / f"{stem_of(p)}.nii.gz")
        write_volume(Volume(postprocess(vol.array, vol.spacing), vol.geometry), final_out / f"{stem_of(p)}.nii.gz")
    evaluations["held-out scans"]["final (post-processed)"] = evaluate_folders(final_out, data / "heldout/t2wi/labels")
    total = time.perf_counter() - t0

    timeline = {}
    for e in events:  # first and last event of each stage
        timeline.setdefault(e["stage"], [e["t"], e["t"]])[1] = e["t"]
    report = {"budget": args.budget, "shape_zyx": SHAPE, "n_ct": N_CT, "n_adapt": N_ADAPT, "n_held_out": N_HELD_OUT,
              "accept": {"rule": settings.rule, "top_k": settings.top_k}, "pipeline_seconds": round(t_pipeline, 1),
              "total_seconds": round(total, 1), "stage_timeline_s": timeline, "cpu_count": os.cpu_count(),
              "evaluations": {k: {s: e.to_dict() for s, e in v.items()} for k, v in evaluations.items()}}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(report, indent=2))
    md = [f"# Ablation, budget `{args.budget}` ({total / 60:.1f} min on {os.cpu_count()} CPU cores; pipeline {t_pipeline / 60:.1f} min)", ""]
    for name, evs in evaluations.items():
        md += [f"## {name}", "", compare_markdown(evs, "dsc"), compare_markdown(evs, "nsd")]
    args.out.with_suffix(".md").write_text("\n".join(md))
    print("\n".join(md))


if __name__ == "__main__":
    main()
