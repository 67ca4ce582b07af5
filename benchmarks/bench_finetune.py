"""Self-training round 1 from scratch or fine-tuned (FLARE 2025 fine-tunes each round)?

On a finished ``bench_ablation.py`` run for the seed: round 1 is trained again on exactly the same
data (translated + real CT and the same accepted pseudo-labels, as recorded in the review store),
but fine-tuning the Organ Attention folds (``-ft`` trainer: half the epochs at a tenth of the
learning rate), and both are evaluated on the held-out scans.

    .venv/bin/python benchmarks/bench_finetune.py [--seed 1] [--budget small]

Writes ``benchmarks/finetune_<budget>_t2wi_s<seed>.json``; the nnU-Net files go to ``..._workspace/``.
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from napari_uda.core.choices import get_budget
from napari_uda.core.files import list_volumes, stem_of
from napari_uda.core.workspace import Workspace
from napari_uda.evaluate.evaluation import compare_markdown, evaluate_folders
from napari_uda.pipeline.workflow import source_training_set
from napari_uda.review.store import ReviewStore
from napari_uda.segment.prediction import predict_folds
from napari_uda.segment.segmenter import export_dataset, plan_and_preprocess, train_folds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--budget", default="small")
    args = parser.parse_args()
    os.environ.setdefault("nnUNet_n_proc_DA", "0")
    root = Path(f"benchmarks/ablation_{args.budget}_t2wi_s{args.seed}_workspace")
    out = Path(f"benchmarks/finetune_{args.budget}_t2wi_s{args.seed}")
    ws, budget = Workspace.open(root / "ws"), get_budget(args.budget)
    base = ws.model("organ_attention")
    images, labels, names = source_training_set(ws, ["organ-attention"], True)
    with ReviewStore.for_workspace(ws.root) as store:
        used = store.round_cases(1)
        case_images, case_labels = store.training_pairs(used)
    images, labels, names = images + case_images, labels + case_labels, names + [stem_of(p) for p in case_images]
    nn = out.with_name(out.name + "_workspace")
    t0 = time.perf_counter()
    if not (nn / "nnunet/preprocessed/Dataset111_UDA_self_training_r1_ft").exists():
        export_dataset(nn, 111, "UDA_self_training_r1_ft", images, labels, ws.modality, budget.spacing_factor, names)
        plan_and_preprocess(nn, 111, budget.planner, budget.configuration, None, budget.base_features, budget.max_stages)
    model = train_folds(nn, 111, budget.folds, f"{budget.nnunet}-aug-ft", budget.planner, budget.configuration, "cpu",
                        init_from=Path(base.path))
    seconds = time.perf_counter() - t0
    held = root / "data/heldout/t2wi"
    predictions = nn / "heldout_predictions"
    if not (predictions / "predictions.json").exists():
        predict_folds(model, list_volumes(held / "images"), predictions, budget.folds, "cpu")
    evaluations = {"self_training_r1 (scratch)": evaluate_folders(root / "heldout_predictions/self_training_r1", held / "labels"),
                   "self_training_r1 (fine-tuned)": evaluate_folders(predictions, held / "labels")}
    report = {"seed": args.seed, "budget": args.budget, "accepted_cases": [c for c, _ in used],
              "fine_tune_seconds": round(seconds, 1), "cpu_count": os.cpu_count(),
              "evaluations": {k: v.to_dict() for k, v in evaluations.items()}}
    out.with_suffix(".json").write_text(json.dumps(report, indent=2))
    print(compare_markdown(evaluations, "dsc"))


if __name__ == "__main__":
    main()
