"""Which translator recipe makes CT look like the target to a segmenter of the target? (CPU budget)

A 2D U-Net trained on labelled *real* phantom T2WI (the "judge"; labels used for this evaluation
only) segments held-out CT translated by each recipe; the mean Dice of its organs against the CT
labels says how target-like the translation is where it matters (organs), the Spearman rank
correlation of the 13 per-organ mean intensities with real T2WI says whether the organ contrast was
reordered as T2WI orders it. Raw CT is the floor and held-out real T2WI the ceiling. The data are the
ablation's (``bench_ablation.py --seed S``: CT seed S+100, T2WI seed S+200, held-out seed S+300,
40x96x96 voxels); translators train as the ``small`` budget does (64 px crops, ngf/ndf 32, 6 blocks).

    .venv/bin/python benchmarks/bench_translator_recipe.py [--seed 2] [--iterations 1500] \
        [--recipe NAME JSON ...]   (JSON: TranslatorConfig fields, e.g. '{"lambda_identity": 0}')

Writes benchmarks/.cache/translator_recipe_s<seed>/results.jsonl (one line per recipe) and prints it.
"""
from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from bench_ablation import N_ADAPT, N_CT, N_HELD_OUT, SHAPE
from bench_translate import mean_dice, organ_means, segment, train_segmenter
from scipy.stats import spearmanr

from napari_uda.core.choices import get_budget
from napari_uda.core.files import list_volumes
from napari_uda.core.modalities import SOURCE, get_modality
from napari_uda.data.phantom import write_phantom_dataset
from napari_uda.pipeline.workflow import budget_translator_config
from napari_uda.translate.nets import UNet2D
from napari_uda.translate.slices import load_slice_bank
from napari_uda.translate.training import train_translator
from napari_uda.translate.translator import load_translator, translate_slices

HERE = Path(__file__).resolve().parent
DEFAULT_RECIPES = [("reference identity 0.5", {}), ("no identity loss", {"lambda_identity": 0.0})]


def phantom(root: Path, seed: int) -> dict[str, list[Path]]:
    if not (root / "done").exists():
        write_phantom_dataset(root / "source", {"ct": N_CT}, seed=seed + 100, shape=SHAPE)
        write_phantom_dataset(root / "adapt", {"t2wi": N_ADAPT}, seed=seed + 200, shape=SHAPE)
        write_phantom_dataset(root / "heldout", {"t2wi": N_HELD_OUT, "ct": N_HELD_OUT}, seed=seed + 300, shape=SHAPE)
        (root / "done").touch()
    return {key: list_volumes(root / sub) for key, sub in (
        ("ct", "source/ct/images"), ("ct_labels", "source/ct/labels"), ("t2", "adapt/t2wi/images"),
        ("t2_labels", "adapt/t2wi/labels"), ("held_ct", "heldout/ct/images"), ("held_ct_labels", "heldout/ct/labels"),
        ("held_t2", "heldout/t2wi/images"), ("held_t2_labels", "heldout/t2wi/labels"))}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seed", type=int, default=2)
    p.add_argument("--iterations", type=int, default=1500)
    p.add_argument("--variant", default="organ-attention")
    p.add_argument("--recipe", nargs=2, action="append", metavar=("NAME", "JSON"))
    args = p.parse_args()
    torch.set_num_threads(2)
    cache = HERE / ".cache" / f"translator_recipe_s{args.seed}"
    f = phantom(cache / "data", args.seed)
    t2 = get_modality("T2WI")
    spacing = load_slice_bank(f["ct"], SOURCE).spacing_mm  # the translators' working pixel size
    x, y = load_slice_bank(f["t2"], t2, spacing, f["t2_labels"]).stacked(96)
    judge_path = cache / "judge.pt"
    judge = UNet2D(1, 14, 16)
    if judge_path.exists():
        judge.load_state_dict(torch.load(judge_path, weights_only=True))
        judge.eval()
    else:
        judge = train_segmenter(x, y, 2500, torch.device("cpu"))
        torch.save(judge.state_dict(), judge_path)
    hx, hy = load_slice_bank(f["held_t2"], t2, spacing, f["held_t2_labels"]).stacked(96)
    cx, cy = load_slice_bank(f["held_ct"], SOURCE, spacing, f["held_ct_labels"]).stacked(96)
    real_means = organ_means(x, y)
    bounds = {"real T2WI held out (ceiling)": mean_dice(segment(judge, hx, "cpu"), hy.numpy())[0],
              "raw CT (floor)": mean_dice(segment(judge, cx, "cpu"), cy.numpy())[0]}
    print(json.dumps({k: round(v, 3) for k, v in bounds.items()}), flush=True)
    for name, override in ([(n, json.loads(j)) for n, j in args.recipe] if args.recipe else DEFAULT_RECIPES):
        cfg = replace(budget_translator_config(get_budget("small"), "T2WI", args.variant), iterations=args.iterations,
                      checkpoint_every=10**9, preview_every=0, **override)
        out = cache / ("tr_" + "".join(c if c.isalnum() else "_" for c in name))
        t = time.perf_counter()
        train_translator(cfg, f["ct"], f["ct_labels"], f["t2"], out, device="cpu")
        seconds = time.perf_counter() - t
        fake = translate_slices(load_translator(out, "cpu"), cx)
        dice, per = mean_dice(segment(judge, fake, "cpu"), cy.numpy())
        means = organ_means(fake, cy)
        row = {"recipe": name, "override": override, "variant": args.variant, "iterations": args.iterations,
               "train_s": round(seconds), "judge_dice": round(dice, 3),
               "spearman": round(float(spearmanr(means, real_means).statistic), 3),
               "organ_mean_abs_error": round(float(np.nanmean(np.abs(means - real_means))), 3),
               "judge_dice_per_organ": {str(c): round(v, 2) for c, v in per.items()}, "bounds": bounds}
        print(json.dumps(row), flush=True)
        with open(cache / "results.jsonl", "a") as fh:
            fh.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
