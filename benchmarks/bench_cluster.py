"""Throughput of batch prediction: serial in one process vs a Dask LocalCluster of worker processes.

N phantom T2WI scans (seed 4242, the sample data's grid) are predicted with the bundled model's
folds, once serially (``predict_folds``: one fold loaded at a time) and once on a local cluster
(``napari_uda.cluster``: one task per scan and fold, models kept on the workers). Scans per
minute of each, the cluster's start-up apart, and whether the two wrote the same labels.

    .venv/bin/python benchmarks/bench_cluster.py [--scans 8] [--workers 2] [--device cuda]

Writes benchmarks/cluster_throughput.json.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

from napari_uda.cluster.engine import dask_client
from napari_uda.cluster.predict import predict_folds_on
from napari_uda.core.files import list_volumes
from napari_uda.core.io import read_volume
from napari_uda.data.phantom import write_phantom_dataset
from napari_uda.data.sample_data import sample_data_dir
from napari_uda.napari.demo import BUNDLED_MODEL
from napari_uda.segment.prediction_folder import PredictionFolder

OUT = Path(__file__).with_name("cluster_throughput.json")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scans", type=int, default=8)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--device", default="cpu", help="cpu, or cuda (one worker per --workers, each a GPU resource)")
    args = parser.parse_args()
    model = sample_data_dir() / "models" / BUNDLED_MODEL
    folds = sorted(int(p.name.split("_")[1]) for p in (model / "segmenter").glob("fold_*"))
    with tempfile.TemporaryDirectory(prefix="bench-cluster-") as tmp:
        root = Path(tmp)
        shape = read_volume(next(iter(list_volumes(sample_data_dir() / "t2wi" / "images")))).shape
        write_phantom_dataset(root / "data", {"t2wi": args.scans}, seed=4242, shape=shape)
        scans = list_volumes(root / "data" / "t2wi" / "images")
        t0 = time.perf_counter()
        predict_folds_on(None, model, scans, root / "serial", folds, args.device)
        serial_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        with dask_client("local", args.workers, args.device) as client:
            start_s = time.perf_counter() - t0
            t1 = time.perf_counter()
            predict_folds_on(client, model, scans, root / "cluster", folds, args.device)
            cluster_s = time.perf_counter() - t1
        a, b = PredictionFolder(root / "serial"), PredictionFolder(root / "cluster")
        differing = max(float(np.mean(read_volume(a.fused(p.name[:-7])).array != read_volume(b.fused(p.name[:-7])).array))
                        for p in scans)
    report = {"scans": args.scans, "folds": folds, "shape_zyx": list(shape), "workers": args.workers, "device": args.device,
              "cpu_count": os.cpu_count(), "processor": platform.processor() or platform.machine(),
              "serial_seconds": round(serial_s, 1), "cluster_start_seconds": round(start_s, 1),
              "cluster_seconds": round(cluster_s, 1),
              "serial_scans_per_minute": round(60 * args.scans / serial_s, 2),
              "cluster_scans_per_minute": round(60 * args.scans / cluster_s, 2),
              "max_fraction_of_fused_voxels_differing": differing}
    OUT.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
