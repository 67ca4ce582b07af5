"""Speed and memory of the pseudo-label core (issue: metrics, post-processing, pseudo-labels).

Run:  .venv/bin/python benchmarks/bench_pseudo.py [--skip-fusion]
Data: a 120x384x384 phantom label map and 5 perturbed "folds"; for fusion, 5 folds of
14-class float16 probabilities at 168x512x512 (written once into benchmarks/.cache/).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from scipy import ndimage

HERE = Path(__file__).resolve().parent
CACHE = HERE / ".cache"
sys.path.insert(0, str(HERE.parent))
from tests.test_pseudo import naive_consistency  # noqa: E402  the tests' reference loop is the baseline


def best_of(fn, repeat: int = 3) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def make_folds(shape=(120, 384, 384), n=5):
    from napari_uda.data.phantom import make_case

    CACHE.mkdir(exist_ok=True)
    path = CACHE / f"folds_{'x'.join(map(str, shape))}.npz"
    if path.exists():
        d = np.load(path)
        return d["gt"], [d[f"f{i}"] for i in range(n)], tuple(d["spacing"])
    _, lab = make_case("ct", 0, seed=99, shape=shape)
    gt = lab.array
    rng = np.random.default_rng(0)
    folds = []
    for _ in range(n):
        f = np.roll(gt, tuple(rng.integers(-1, 2, 3)), axis=(0, 1, 2)).copy()
        for c in rng.choice(np.arange(1, 14), 4, replace=False):  # some organs grow, some shrink by a voxel
            m = f == c
            if rng.random() < 0.5:
                f[ndimage.binary_dilation(m) & (f == 0)] = c
            else:
                f[m & ~ndimage.binary_erosion(m)] = 0
        folds.append(f)
    np.savez(path, gt=gt, spacing=np.array(lab.spacing), **{f"f{i}": f for i, f in enumerate(folds)})
    return gt, folds, lab.spacing


def bench_consistency(folds) -> dict:
    from napari_uda.pseudo.consistency import fold_consistency

    t = time.perf_counter()
    fold_consistency(folds[:2], labels=[1])  # numba compile (cached on disk afterwards)
    first = time.perf_counter() - t
    ours = best_of(lambda: fold_consistency(folds))
    naive = best_of(lambda: naive_consistency(folds, range(1, 14)), repeat=1)
    assert np.allclose(list(fold_consistency(folds).values()), list(naive_consistency(folds, range(1, 14)).values()))
    gb = sum(f.nbytes for f in folds) / 1e9
    return {"naive_s": naive, "ours_s": ours, "speedup": naive / ours, "first_call_s": first,
            "read_GB_per_s": gb / ours}


def bench_nsd(gt, pred, spacing) -> dict:
    import surface_distance as sd

    from napari_uda.core.organs import ORGANS
    from napari_uda.evaluate.metrics import nsd

    ours = best_of(lambda: nsd(pred, gt, spacing))
    mine = nsd(pred, gt, spacing)

    def reference():
        return {o.index: sd.compute_surface_dice_at_tolerance(
            sd.compute_surface_distances(gt == o.index, pred == o.index, spacing), o.nsd_tolerance_mm) for o in ORGANS}

    ref_t = best_of(reference, repeat=1)
    ref = reference()
    max_diff = max(abs(ref[c] - mine[c]) for c in ref)
    return {"surface_distance_s": ref_t, "ours_s": ours, "speedup": ref_t / ours, "max_abs_diff": max_diff}


def make_prob_folds(shape=(168, 512, 512), n=5, n_classes=14) -> list[Path]:
    from napari_uda.data.phantom import make_case
    from napari_uda.segment.probabilities import save_probabilities

    paths = [CACHE / f"prob_fold{i}.npz" for i in range(n)]
    if all(p.exists() for p in paths):
        return paths
    _, lab = make_case("ct", 1, seed=99, shape=shape)
    rng = np.random.default_rng(1)
    for i, p in enumerate(paths):
        labels = np.roll(lab.array, tuple(rng.integers(-1, 2, 3)), axis=(0, 1, 2))
        probs = np.empty((n_classes, *shape), np.float16)
        soft = np.full(shape, 0.02 / (n_classes - 1), np.float16)
        for c in range(n_classes):
            probs[c] = soft
            probs[c][labels == c] = 0.98
        save_probabilities(p, probs, slab=8)
        del probs
        print(f"wrote {p.name}", file=sys.stderr)
    return paths


# VmHWM (peak resident set) is reset by exec, unlike ru_maxrss, which a child inherits from its parent.
FUSE_CHILD = """
import sys, time, json
from napari_uda.segment.ensemble import fuse_probabilities
def hwm_mb():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
base = hwm_mb()
t = time.perf_counter()
out = fuse_probabilities(sys.argv[1:])
sec = time.perf_counter() - t
print(json.dumps({"seconds": sec, "peak_rss_MB": hwm_mb(), "rss_before_MB": base, "labels": list(out.shape)}))
"""


def bench_fusion() -> dict:
    paths = make_prob_folds()
    res = subprocess.run([sys.executable, "-c", FUSE_CHILD, *map(str, paths)], capture_output=True, text=True, check=True)
    out = json.loads(res.stdout)
    one_fold_mb = 14 * 168 * 512 * 512 * 2 / 2**20
    out["one_fold_float16_MB"] = one_fold_mb
    out["fusion_extra_MB"] = out["peak_rss_MB"] - out["rss_before_MB"]
    out["bound_MB (2 x one fold)"] = 2 * one_fold_mb
    out["file_MB_each"] = paths[0].stat().st_size / 2**20
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--skip-fusion", action="store_true")
    parser.add_argument("--only-fusion", action="store_true")
    args = parser.parse_args()
    if args.only_fusion:
        print(json.dumps(bench_fusion(), indent=2))
        return
    gt, folds, spacing = make_folds()
    results = {"machine": f"{os.cpu_count()} cores", "shape": list(gt.shape), "spacing_mm": [float(s) for s in spacing]}
    results["fold_consistency"] = bench_consistency(folds)
    print(json.dumps(results, indent=2), flush=True)
    results["nsd_13_organs"] = bench_nsd(gt, folds[0], spacing)
    print(json.dumps(results["nsd_13_organs"], indent=2), flush=True)
    if not args.skip_fusion:
        results["fusion_5_folds_168x512x512"] = bench_fusion()
    print(json.dumps(results, indent=2))
    (CACHE / "bench_pseudo.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
