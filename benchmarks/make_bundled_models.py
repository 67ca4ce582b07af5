"""Make the demo's bundled model: the method's ``small`` CPU recipe (CT -> T2WI, Organ Attention,
one self-training round) on phantom patients that are not the sample data, exported as a model
folder (safetensors + JSON, :mod:`napari_uda.core.model_folder`) into ``sample_data/models/<name>/``,
with its evaluation on the sample T2WI (what ``./uda demo`` shows) written next to it.

    .venv/bin/python benchmarks/make_bundled_models.py [--seed 1] [--ablation-out benchmarks/ablation_small_t2wi_s1]

The phantom data and workspace are ``bench_ablation.py``'s for the same seed (with or without the
ablation stages, the Organ Attention and self-training stages are the same), so a finished
ablation run is reused and only the export and the evaluation run; otherwise the pipeline runs
first (about 30 minutes on 2 CPU cores).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
from pathlib import Path

from bench_ablation import N_ADAPT, default_out, phantom_workspace, workspace_root

from napari_uda.core.choices import get_budget
from napari_uda.core.model_folder import SIDECAR
from napari_uda.data.sample_data import sample_data_dir
from napari_uda.napari.demo import BUNDLED_MODEL, run_sample_bundled
from napari_uda.pipeline.export import export_stage
from napari_uda.pipeline.workflow import FilterSettings, run_pipeline


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=1, help="phantom seed offset (bench_ablation.py's)")
    parser.add_argument("--budget", default="small")
    parser.add_argument("--ablation-out", type=Path, default=None,
                        help="bench_ablation.py's --out (default benchmarks/ablation_<budget>_t2wi_s<seed>)")
    args = parser.parse_args()
    os.environ.setdefault("nnUNet_n_proc_DA", "0")
    out = args.ablation_out or default_out(args.budget, "t2wi", args.seed)
    ws = phantom_workspace(workspace_root(out), args.seed, "t2wi")
    if not ws.stage("final"):
        run_pipeline(ws, get_budget(args.budget), "organ-attention", rounds=1, auto=True, device="cpu",
                     settings=FilterSettings(top_k=N_ADAPT // 2, rule="consistency"),
                     progress=lambda e: print(e.line(), flush=True))
    target = sample_data_dir() / "models" / BUNDLED_MODEL
    staging = target.with_name(f".{target.name}.new")
    shutil.rmtree(staging, ignore_errors=True)
    export_stage(ws, "final", staging)
    with tempfile.TemporaryDirectory() as tmp:  # the demo's own path, on the staged model
        shutil.rmtree(target, ignore_errors=True)
        staging.rename(target)
        demo_ws, table = run_sample_bundled(Path(tmp))
        report = json.loads((demo_ws / "reports" / "evaluation_final.json").read_text())
    meta = json.loads((target / SIDECAR).read_text())
    meta["evaluation"] = {"data": "the sample T2WI (sample_data/t2wi, never used in training)",
                          "cases": report["n_cases"], "summary": report["summary"]}
    meta["made_by"] = f"benchmarks/make_bundled_models.py --seed {args.seed} --budget {args.budget}" + (
        f" --ablation-out {args.ablation_out}" if args.ablation_out else "")
    (target / SIDECAR).write_text(json.dumps(meta, indent=2))
    (target / "evaluation.md").write_text(
        f"# Evaluation of the bundled model on the sample T2WI\n\nMade by `{meta['made_by']}` from the workspace "
        f"`{ws.root}` (stage `{meta['model_stage']}`). Columns: the model's folds fused, and post-processed "
        f"(`final`).\n\n{table}\n")
    print(f"bundled model in {target}")


if __name__ == "__main__":
    main()
