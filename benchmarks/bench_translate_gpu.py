"""Translator speed and GPU memory at the reference size (256 px, ngf 64, 9 blocks), AMP vs float32.

Run on a CUDA machine:  python benchmarks/bench_translate_gpu.py [--iterations 100]
"""
from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import torch

import napari_uda.translate.training as training
import napari_uda.translate.translator as T
from napari_uda.core.efficiency import RunMeter
from napari_uda.core.files import list_volumes
from napari_uda.core.io import read_volume
from napari_uda.data.phantom import write_phantom_dataset


def run(amp: bool, data: Path, iterations: int, variant: str) -> dict:
    if not amp:
        T.amp_dtype = training.amp_dtype = lambda device: None  # force float32 (training and applying)
    cfg = T.TranslatorConfig("T2WI", variant=variant, iterations=iterations, preview_every=0, checkpoint_every=10**6)
    out = Path(tempfile.mkdtemp())
    times = []
    torch.cuda.empty_cache()
    with RunMeter("cuda:0") as train_meter:
        training.train_translator(cfg, list_volumes(data / "ct/images"), list_volumes(data / "ct/labels"),
                                  list_volumes(data / "t2wi/images"), out, device="cuda", progress=lambda e: times.append(e.data.get("seconds")))
    steady = [t for t in times if t is not None]
    per_iter = (steady[-1] - steady[9]) / (len(steady) - 10)
    tr = T.load_translator(out, device="cuda")
    vol = read_volume(list_volumes(data / "ct/images")[0], "CT")
    T.translate_volume(tr, vol, batch=32)  # warm-up
    torch.cuda.empty_cache()  # the training run's cached blocks would otherwise count as inference memory
    with RunMeter("cuda:0") as infer_meter:
        for _ in range(5):
            T.translate_volume(tr, vol, batch=32)
    return {"variant": variant, "amp": amp, "train_s_per_iter": per_iter, "train_gpu_peak_mb": train_meter.result["gpu_peak_mb"],
            "translate_slices_per_s": 5 * vol.shape[0] / infer_meter.result["seconds"],
            "translate_gpu_peak_mb": infer_meter.result["gpu_peak_mb"], "translate_gpu_auc_mb_s": infer_meter.result["gpu_auc_mb_s"]}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--iterations", type=int, default=100)
    args = p.parse_args()
    data = Path(tempfile.mkdtemp())
    write_phantom_dataset(data, {"ct": 2, "t2wi": 2}, seed=5, shape=(48, 256, 256))
    print(json.dumps({"device": torch.cuda.get_device_name(0), "torch": torch.__version__}))
    for variant in ("cyclegan", "organ-attention"):
        for amp in (True, False):
            print(json.dumps(run(amp, data, args.iterations, variant)), flush=True)


if __name__ == "__main__":
    main()
