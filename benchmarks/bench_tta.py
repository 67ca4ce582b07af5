"""Test-time mirroring's equivariance and cost on one fold: a scan and its mirror image predicted
without TTA, with nnU-Net's per-tile mirroring, and with napari-uda's whole-volume flip group
(:mod:`napari_uda.segment.mirroring`); prints the max probability difference once mirrored back, the
labels that differ and the seconds per scan. The fold needs mirror axes (a ``-mirror`` budget).

    .venv/bin/python benchmarks/bench_tta.py --model MODEL_DIR --scan SCAN.nii.gz [--fold 0] [--axis 1]
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from napari_uda.core.io import Volume, read_scan, read_volume
from napari_uda.segment.prediction import FoldPredictor
from napari_uda.segment.prediction_folder import PredictionFolder
from napari_uda.segment.probabilities import ProbabilityFile


def compare(predictor: FoldPredictor, scan: Volume, axis: int, out: PredictionFolder) -> tuple[float, int, float]:
    """(max |p(flip x) flipped back - p(x)|, labels that differ, seconds per scan)."""
    start = time.perf_counter()
    predictor.predict(scan, out, "a")
    predictor.predict(Volume(np.ascontiguousarray(np.flip(scan.array, axis)), scan.geometry), out, "b")
    seconds = (time.perf_counter() - start) / 2
    fold = predictor.fold
    with (ProbabilityFile(out.fold_probabilities(fold, "a")) as pa,
          ProbabilityFile(out.fold_probabilities(fold, "b")) as pb):
        a, b = pa.read_all().astype(np.float32), np.flip(pb.read_all(), axis + 1).astype(np.float32)
    la = read_volume(out.fold_label(fold, "a")).array
    lb = np.flip(read_volume(out.fold_label(fold, "b")).array, axis)
    return float(np.abs(a - b).max()), int((la != lb).sum()), seconds


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", type=Path, required=True)
    p.add_argument("--scan", type=Path, required=True)
    p.add_argument("--fold", type=int, default=0)
    p.add_argument("--axis", type=int, default=1, help="the array axis the scan is mirrored along")
    p.add_argument("--out", type=Path, default=Path("/tmp/bench_tta"))
    args = p.parse_args()
    scan = read_scan(args.scan)
    print(f"{scan.array.size} voxels; | test-time mirroring | max difference | labels that differ | s per scan |")
    for name, mirroring, per_tile in [("none", False, False), ("nnU-Net's per tile", False, True),
                                      ("whole-volume flip group", True, False)]:
        predictor = FoldPredictor(args.model, args.fold, "cpu", mirroring)
        predictor.predictor.use_mirroring = per_tile  # nnU-Net's own mirroring, for the comparison only
        diff, labels, seconds = compare(predictor, scan, args.axis, PredictionFolder(args.out / name.replace(" ", "_")))
        print(f"| {name} | {diff:.3g} | {labels} | {seconds:.2f} |")


if __name__ == "__main__":
    main()
