"""One fold of one stage's segmenter, trained and scored on held-out scans: a 12-minute question
where the whole ablation (``bench_ablation.py``) is a 90-minute one.

On the ablation's data of seed S (``<ablation workspace>/data``: CT seed S+100, target seed S+200,
held-out seed S+300), train fold F of a stage with the ``small`` budget and score it on the held-out
scans (mean DSC over the 13 organs, per organ too). Stages: ``no_adaptation`` (real CT, the ``-aug``
trainer), ``translated`` (the CT translated into ``--translated DIR`` plus the real CT, the ``-aug``
trainer: the cyclegan / organ_attention stages), ``translated_only`` (the translated CT alone) and ``oracle`` (the labelled adaptation scans, no
augmentation). Compare a change against this script's own run of the unchanged code, never against a
two-fold model: single folds of the CPU budget vary a lot (``benchmarks/RESULTS.md``).

    .venv/bin/python benchmarks/bench_stage_fold.py --seed 2 --stage no_adaptation --name NAME \
        [--fold 0] [--translated DIR | --translator JSON] [--ablation-out benchmarks/ablation_small_t2wi_s2_noid]

``--translator JSON`` (``TranslatorConfig`` fields, e.g. ``'{"seg_head": true}'``) first trains an Organ
Attention translator as the ``small`` budget does, with those fields changed, on the ablation's CT and
target scans, and translates the CT with it (into the run's workspace ``<run>/ws``): a translator
recipe judged by what a segmenter learns from its translations.

Needs the ablation's data (``bench_ablation.py --seed S`` writes them first). Appends one JSON line
to benchmarks/.cache/stage_fold_s<seed>/results.jsonl and prints it.
"""
from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

from bench_ablation import default_out, workspace_root

from napari_uda.core.choices import Budget, get_budget
from napari_uda.core.files import list_volumes, stem_of
from napari_uda.core.workspace import Workspace
from napari_uda.evaluate.evaluation import evaluate_folders
from napari_uda.pipeline.workflow import budget_translator_config, train_stage_model, translate_sources
from napari_uda.segment.prediction import predict_folds

HERE = Path(__file__).resolve().parent


def training_set(data: Path, stage: str, translated: Path | None) -> tuple[list[Path], list[Path], list[str] | None]:
    """(images, labels, nnU-Net case names or None) of ``stage`` on the ablation's ``data``."""
    ct, ct_labels = list_volumes(data / "source/ct/images"), list_volumes(data / "source/ct/labels")
    if stage == "no_adaptation":
        return ct, ct_labels, None
    if stage == "oracle":
        return list_volumes(data / "adapt/t2wi/images"), list_volumes(data / "adapt/t2wi/labels"), None
    if translated is None:
        raise SystemExit(f"--stage {stage} needs --translated DIR (the translated CT, named as the CT)")
    if stage == "translated_only":
        return [translated / p.name for p in ct], ct_labels, None
    names = [stem_of(p) for p in ct]
    return [translated / p.name for p in ct] + ct, ct_labels * 2, names + [f"real_{n}" for n in names]


def translate_with_recipe(ws: Workspace, budget: Budget, override: dict) -> tuple[Path, float]:
    """Train the ``budget``'s Organ Attention translator with ``override`` in ``ws`` and translate
    its CT; returns (the translated folder, training seconds)."""
    from napari_uda.translate.training import train_translator

    cfg = replace(budget_translator_config(budget, "T2WI", "organ-attention"), checkpoint_every=10**9, preview_every=0,
                  **override)
    t0 = time.perf_counter()
    train_translator(cfg, ws.files("source_images"), ws.files("source_labels"), ws.files("target_images"),
                     ws.translator_dir("organ-attention"), device="cpu")
    seconds = time.perf_counter() - t0
    return translate_sources(ws, "organ-attention", "cpu"), seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=2)
    parser.add_argument("--stage", choices=["no_adaptation", "translated", "translated_only", "oracle"], required=True)
    parser.add_argument("--name", required=True, help="what this run measures (its results line and folder)")
    parser.add_argument("--fold", type=int, default=0)
    parser.add_argument("--translated", type=Path, default=None)
    parser.add_argument("--translator", default=None, metavar="JSON",
                        help="train a translator with these TranslatorConfig fields first and use its translations")
    parser.add_argument("--ablation-out", type=Path, default=None,
                        help="the ablation run whose data to use (its --out); default that of --seed")
    args = parser.parse_args()
    data = workspace_root(args.ablation_out or HERE.parent / default_out("small", "t2wi", args.seed)) / "data"
    if not (data / "done").exists():
        raise SystemExit(f"{data}: no ablation data; run bench_ablation.py --seed {args.seed} first")
    root = HERE / ".cache" / f"stage_fold_s{args.seed}"
    run = root / args.name
    ws = Workspace.create(run / "ws", data / "source/ct/images", data / "source/ct/labels", data / "adapt/t2wi/images", "T2WI")
    translated, translator_s = args.translated, None
    if args.translator is not None:
        translated, translator_s = translate_with_recipe(ws, get_budget("small"), json.loads(args.translator))
    images, labels, names = training_set(data, args.stage, translated)
    t0 = time.perf_counter()
    model = train_stage_model(ws, "oracle" if args.stage == "oracle" else "no_adaptation", images, labels, "T2WI",
                              replace(get_budget("small"), folds=(args.fold,)), "cpu", augment=args.stage != "oracle",
                              names=names)
    seconds = time.perf_counter() - t0
    predict_folds(model, list_volumes(data / "heldout/t2wi/images"), run / "heldout", [args.fold], "cpu")
    summary = evaluate_folders(run / "heldout", data / "heldout/t2wi/labels", modality_kind="mri").to_dict()["summary"]
    line = {"name": args.name, "stage": args.stage, "seed": args.seed, "fold": args.fold, "train_s": round(seconds),
            "translator": args.translator, "translator_s": None if translator_s is None else round(translator_s),
            "mean_dsc": round(summary["all"]["dsc_mean"], 3),
            "dsc": {k: round(v["dsc_mean"], 3) for k, v in summary.items() if k != "all"}}
    with open(root / "results.jsonl", "a") as f:
        f.write(json.dumps(line) + "\n")
    print(json.dumps(line))


if __name__ == "__main__":
    main()
