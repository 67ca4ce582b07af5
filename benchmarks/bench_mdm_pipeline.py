"""ASIT's multi-domain matching inside the pipeline, on held-out scans: one self-training round on a
sub-domain the segmenter is poor at (DWI) on its own pseudo-labels, against the same round with
another sub-domain's final labels of the same patients transferred into its queue (``--transfer-from``).

The DWI data and base stage are ``bench_ablation.py``'s (``--modality dwi --seed S``, budget small,
8 adaptation scans, top 4 by consistency). The other sub-domain: the same 8 patients scanned again
as T2WI, moved (:func:`napari_uda.data.phantom.make_same_patient`), in a workspace of their own whose
final labels are the bundled CT->T2WI model's (never trained on these patients). The base stage is
trained once; each arm's round runs on a copy of that workspace (the original is only read).
Rows on the held-out DWI scans (seed S+300, used by nothing): the base stage, round 1 on its own
pseudo-labels, round 1 with the transferred ones (all post-processed as the final labels are); and on
the adaptation scans what the round trained on: the T2WI final labels against the T2WI truth, the
labels transferred onto the DWI scans against the DWI truth. Writes OUT.json and OUT.md.

    .venv/bin/python benchmarks/bench_mdm_pipeline.py --seed 2 --out benchmarks/mdm_pipeline_dwi_s2
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

from bench_ablation import N_ADAPT, SHAPE, phantom_workspace, workspace_root

from napari_uda.cli.console import Console
from napari_uda.core.choices import get_budget
from napari_uda.core.files import list_volumes
from napari_uda.core.io import Volume, read_volume, write_volume
from napari_uda.core.workspace import Workspace
from napari_uda.data.phantom import make_same_patient
from napari_uda.data.sample_data import sample_data_dir
from napari_uda.evaluate.evaluation import Evaluation, compare_markdown, evaluate_folders
from napari_uda.pipeline.transfer import TRANSFERRED, TransferFrom
from napari_uda.pipeline.workflow import (
    FilterSettings,
    predict_as_stage,
    predict_with_model,
    round_stages,
    run_pipeline,
)
from napari_uda.segment.postprocess import postprocess

MODEL = sample_data_dir() / "models" / "t2wi_organ_attention"
PATIENT = r"_(\d+)$"  # dwi_003 and t2wi_003 are one patient


def other_workspace(root: Path, seed: int, progress: Console) -> Workspace:
    """The T2WI rescans of the DWI adaptation patients (``root/data/other``) and a workspace of them
    whose final labels are the bundled model's."""
    data = root / "data"
    images, labels = data / "other/t2wi/images", data / "other/t2wi/labels"
    for i in range(N_ADAPT):
        if not (labels / f"t2wi_{i:03d}.nii.gz").exists():
            image, truth = make_same_patient("t2wi", "dwi", i, seed + 200, SHAPE)
            write_volume(image, images / f"t2wi_{i:03d}.nii.gz")
            write_volume(truth, labels / f"t2wi_{i:03d}.nii.gz")
    ws = Workspace.create(root / "ws_t2wi", data / "source/ct/images", data / "source/ct/labels", images, "T2WI")
    if ws.stage("final") is None:
        predict_with_model(ws, MODEL, "cpu", FilterSettings(top_k=N_ADAPT // 2), progress)
    return ws


def arm(root: Path, name: str, transfer: TransferFrom, budget: str, settings: FilterSettings,
        progress: Console) -> Workspace:
    """Round 1 on a copy ``root/ws_<name>`` of the base workspace ``root/ws``."""
    copy = root / f"ws_{name}"
    if not copy.exists():
        shutil.copytree(root / "ws", copy)
    ws = Workspace.open(copy)
    run_pipeline(ws, get_budget(budget), rounds=1, auto=True, settings=settings, progress=progress, transfer=transfer)
    return ws


def held_out(ws: Workspace, stage: str, root: Path, out: Path) -> Path:
    """``stage`` of ``ws`` on the held-out DWI scans, post-processed, into ``out``."""
    if not (out / "predictions.json").exists():
        predict_as_stage(ws, stage, list_volumes(root / "data/heldout/dwi/images"), out / "raw", "cpu")
        for p in list_volumes(out / "raw"):
            vol = read_volume(p)
            write_volume(Volume(postprocess(vol.array, vol.spacing), vol.geometry), out / p.name)
        (out / "predictions.json").write_text(json.dumps({"stage": stage, "workspace": str(ws.root)}))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=2, help="phantom seed offset (bench_ablation.py's)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/mdm_pipeline_dwi_s2"))
    parser.add_argument("--budget", default="small", help="the segmenters' budget (bench_ablation.py's small)")
    args = parser.parse_args()
    os.environ.setdefault("nnUNet_n_proc_DA", "0")
    root, t0 = workspace_root(args.out), time.perf_counter()
    progress = Console(sys.stdout, interactive=False)
    settings = FilterSettings(top_k=N_ADAPT // 2, rule="consistency")
    base = phantom_workspace(root, args.seed, "dwi")
    run_pipeline(base, get_budget(args.budget), rounds=0, auto=True, settings=settings, progress=progress)
    seconds = {"base": time.perf_counter() - t0}
    other = other_workspace(root, args.seed, progress)
    seconds["other"] = time.perf_counter() - t0 - sum(seconds.values())
    arms = {}
    for name, transfer in (("own", TransferFrom(None)), ("transferred", TransferFrom(str(other.root), "name", PATIENT))):
        arms[name] = arm(root, name, transfer, args.budget, settings, progress)
        seconds[name] = time.perf_counter() - t0 - sum(seconds.values())
    truth = root / "data/heldout/dwi/labels"
    rows = {"base (organ attention)": held_out(base, round_stages(base)[-1], root, root / "heldout/base")}
    for name, ws in arms.items():
        rows[f"round 1, {name} pseudo-labels"] = held_out(ws, round_stages(ws)[-1], root, root / f"heldout/{name}")
    evaluations = {"held-out DWI scans": {k: evaluate_folders(v, truth) for k, v in rows.items()}}
    moved = sorted((arms["transferred"].root / "predictions" / TRANSFERRED).iterdir())[0]  # before round 1
    evaluations["what the round trained on (adaptation scans)"] = {
        "T2WI final labels (bundled model)": evaluate_folders(other.predictions_dir("final"), root / "data/other/t2wi/labels"),
        "labels transferred onto DWI": evaluate_folders(moved, root / "data/adapt/dwi/labels"),
        "DWI base pseudo-labels": evaluate_folders(base.predictions_dir(round_stages(base)[0]), root / "data/adapt/dwi/labels")}
    write(args.out, evaluations, seconds)


def write(out: Path, evaluations: dict[str, dict[str, Evaluation]], seconds: dict[str, float]) -> None:
    report = {"seconds_this_run": {k: round(v, 1) for k, v in seconds.items()}, "cpu_count": os.cpu_count(), "shape_zyx": SHAPE,
              "evaluations": {k: {s: e.to_dict() for s, e in v.items()} for k, v in evaluations.items()}}
    out.with_suffix(".json").write_text(json.dumps(report, indent=2))
    md = ["# Multi-domain matching in the pipeline: DWI, one round", "",
          "Seconds of this run's steps (a step resumed from an earlier run counts only what it did now): "
          + ", ".join(f"{k} {v:.0f} s" for k, v in seconds.items()) + f" on {os.cpu_count()} CPU cores.", ""]
    for name, evs in evaluations.items():
        md += [f"## {name}", "", compare_markdown(evs, "dsc"), compare_markdown(evs, "nsd")]
    out.with_suffix(".md").write_text("\n".join(md))
    print("\n".join(md))


if __name__ == "__main__":
    main()
