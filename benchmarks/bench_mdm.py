"""ASIT's multi-domain matching on held-out phantom patients: labels carried from the sub-domain
where the segmenter is good to one where it is poor, against segmenting the poor one directly.

The bundled CT->T2WI model (``sample_data/models/t2wi_organ_attention``, never trained on these
patients) segments each patient's T2WI scan; the same patients scanned again, moved, in another
sequence (``--other``, default T1 in-phase; :func:`napari_uda.data.phantom.make_same_patient`,
under names that say nothing) are what it segments poorly. Rows: the model on the other sequence
directly; its T2WI labels transferred by affine registration, with pairs by name (the truth) and
by volume matching; and the T2WI *truth* transferred, the registration's own ceiling. Writes
``OUT.json`` and ``OUT.md``.

    .venv/bin/python benchmarks/bench_mdm.py --patients 8 --seed 31 --out benchmarks/mdm_t2wi_inphase
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from napari_uda.core.io import write_volume
from napari_uda.core.modalities import get_modality
from napari_uda.data.phantom import make_case, make_same_patient
from napari_uda.data.sample_data import sample_data_dir
from napari_uda.evaluate.evaluation import evaluate_folders
from napari_uda.pipeline.transfer import match_by_volume
from napari_uda.pseudo.label_transfer import transfer_label_files
from napari_uda.segment.prediction import predict_folds

MODEL = sample_data_dir() / "models" / "t2wi_organ_attention"


def write_patients(root: Path, n: int, seed: int, other: str) -> dict[str, str]:
    """T2WI scans ``t2wi/images/p<i>`` and the same patients in ``other`` under shuffled names
    ``other/images/s<j>``, each with its truth; returns T2WI case -> its patient's other-sequence case."""
    order = np.random.default_rng(seed).permutation(n)
    pairs = {}
    for i in range(n):
        image, truth = make_case("t2wi", i, seed)
        write_volume(image, root / "t2wi/images" / f"p{i:02d}.nii.gz")
        write_volume(truth, root / "t2wi/labels" / f"p{i:02d}.nii.gz")
        image, truth = make_same_patient(other, "t2wi", i, seed)
        name = f"s{int(order[i]):02d}"
        write_volume(image, root / other / "images" / f"{name}.nii.gz")
        write_volume(truth, root / other / "labels" / f"{name}.nii.gz")
        pairs[f"p{i:02d}"] = name
    return pairs


def transfer(root: Path, other: str, pairs: dict[str, str], labels: Path, out: Path) -> float:
    """Each T2WI label in ``labels`` carried onto its paired other-sequence scan into ``out``; seconds taken."""
    start = time.perf_counter()
    for t2, name in pairs.items():
        moved = transfer_label_files(labels / f"{t2}.nii.gz", root / "t2wi/images" / f"{t2}.nii.gz",
                                     root / other / "images" / f"{name}.nii.gz")
        write_volume(moved.label, out / f"{name}.nii.gz")
    return time.perf_counter() - start


def summary(pred: Path, truth: Path) -> dict:
    s = evaluate_folders(pred, truth).summary()
    return {"dsc": s["all"]["dsc_mean"], "nsd": s["all"]["nsd_mean"],
            "organs": {k: round(v["dsc_mean"], 3) for k, v in s.items() if k != "all"}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--patients", type=int, default=8)
    ap.add_argument("--seed", type=int, default=31)
    ap.add_argument("--other", default="inphase", help="the poor sub-domain's sequence (a phantom modality)")
    ap.add_argument("--work", type=Path, default=Path("/tmp/bench_mdm"))
    ap.add_argument("--out", type=Path, default=Path("benchmarks/mdm_t2wi_inphase"))
    args = ap.parse_args()
    other = get_modality(args.other).slug
    root = args.work / f"s{args.seed}_{other}"
    pairs = write_patients(root, args.patients, args.seed, other)
    timing, rows = {}, {}
    for seq in ("t2wi", other):
        start = time.perf_counter()
        scans = sorted((root / seq / "images").glob("*.nii.gz"))
        predict_folds(MODEL, scans, root / "pred" / seq, save_probabilities_files=False)
        timing[f"predict {seq}"] = time.perf_counter() - start
    rows["model on T2WI (the labels' source)"] = summary(root / "pred/t2wi", root / "t2wi/labels")
    rows[f"model on {other} directly"] = summary(root / "pred" / other, root / other / "labels")
    start = time.perf_counter()
    found = match_by_volume(*(sorted((root / seq / "images").glob("*.nii.gz")) for seq in ("t2wi", other)))
    timing["volume matching"] = time.perf_counter() - start
    by_volume = {t.name.removesuffix(".nii.gz"): s.name.removesuffix(".nii.gz") for t, s, _ in found}
    correct = sum(by_volume[k] == v for k, v in pairs.items() if k in by_volume)
    for name, folder, chosen, labels in (
            ("T2WI labels transferred, pairs by name", "by_name", pairs, root / "pred/t2wi"),
            ("T2WI labels transferred, pairs by volume matching", "by_volume", by_volume, root / "pred/t2wi"),
            ("T2WI truth transferred (the registration's ceiling)", "truth", pairs, root / "t2wi/labels")):
        out = root / "transfer" / folder
        timing[f"transfer: {name}"] = transfer(root, other, chosen, labels, out)
        rows[name] = summary(out, root / other / "labels")
    report = {"patients": args.patients, "seed": args.seed, "other": other, "model": str(MODEL.relative_to(Path.cwd())),
              "volume_matching_correct": correct, "volume_matching_pairs": [m[2] for m in found],
              "rows": rows, "seconds": timing}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(report, indent=2))
    lines = [f"# ASIT multi-domain matching, {args.patients} held-out patients (seed {args.seed}), T2WI -> {other}", "",
             f"Volume matching paired {correct} of {args.patients} patients correctly.", "",
             "| labels on the other sequence | mean DSC | mean NSD |", "|---|---:|---:|"]
    lines += [f"| {k} | {v['dsc']:.3f} | {v['nsd']:.3f} |" for k, v in rows.items()]
    lines += ["", "| seconds | |", "|---|---:|"] + [f"| {k} | {v:.1f} |" for k, v in timing.items()]
    args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
