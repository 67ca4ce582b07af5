"""CT -> T2WI translation on the phantom: intensity realism, structure preservation, throughput.

Run:  .venv/bin/python benchmarks/bench_translate.py [--iterations 1500] [--device cpu]
Writes benchmarks/.cache/translate/results.json and prints a Markdown summary.

(1) Per-organ mean intensity of translated CT vs real T2WI phantoms (Spearman rank
    correlation over the 13 organs), against the same for raw CT.
(2) Structure: a 2D U-Net trained on labelled *real* T2WI phantoms (labels used for this
    evaluation only) segments translated CT; Dice against the CT labels, CycleGAN vs
    Organ Attention CycleGAN (raw CT and held-out real T2WI give the floor and ceiling).
(3) Throughput of translating volumes, slices per second.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from scipy.stats import spearmanr

from napari_uda.core.files import list_volumes
from napari_uda.core.io import read_volume
from napari_uda.core.modalities import SOURCE, get_modality
from napari_uda.core.organs import ORGAN_INDICES
from napari_uda.data.phantom import write_phantom_dataset
from napari_uda.evaluate.metrics import dice
from napari_uda.translate.nets import UNet2D, seg_loss
from napari_uda.translate.slices import load_slice_bank
from napari_uda.translate.training import train_translator
from napari_uda.translate.translator import TranslatorConfig, load_translator, translate_slices, translate_volume

HERE = Path(__file__).resolve().parent


def organ_means(slices: torch.Tensor, labels: torch.Tensor) -> np.ndarray:
    x, lab = slices[:, 0].numpy(), labels.numpy()
    return np.array([x[lab == c].mean() if (lab == c).any() else np.nan for c in ORGAN_INDICES])


def train_segmenter(x: torch.Tensor, y: torch.Tensor, iterations: int, device: torch.device) -> UNet2D:
    torch.manual_seed(0)
    net = UNet2D(1, 14, 16).to(device)
    opt = torch.optim.Adam(net.parameters(), 1e-3)
    gen = torch.Generator().manual_seed(0)
    for _ in range(iterations):
        idx = torch.randint(0, len(x), (8,), generator=gen)
        loss = seg_loss(net(x[idx].to(device)), y[idx].to(device))
        opt.zero_grad()
        loss.backward()
        opt.step()
    return net.eval()


@torch.no_grad()
def segment(net: UNet2D, x: torch.Tensor, device: torch.device) -> np.ndarray:
    return torch.cat([net(x[i:i + 32].to(device)).argmax(1).cpu() for i in range(0, len(x), 32)]).numpy().astype(np.uint8)


def mean_dice(pred: np.ndarray, gt: np.ndarray) -> tuple[float, dict[int, float]]:
    d = dice(pred, gt)
    present = [c for c in ORGAN_INDICES if (gt == c).any()]
    return float(np.mean([d[c] for c in present])), d


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--iterations", type=int, default=2000)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--shape", type=int, nargs=3, default=[32, 96, 96])
    p.add_argument("--train-cases", type=int, default=6)
    p.add_argument("--eval-cases", type=int, default=2)
    p.add_argument("--device", default="cpu")
    p.add_argument("--variants", nargs="+", default=["cyclegan", "organ-attention"])
    p.add_argument("--out", type=Path, default=HERE / ".cache" / "translate")
    args = p.parse_args()
    dev = torch.device(args.device)
    n = args.train_cases + args.eval_cases
    data = args.out / "phantom"
    if not (data / "manifest.json").exists():
        write_phantom_dataset(data, {"ct": n, "t2wi": n}, seed=11, shape=tuple(args.shape))
    ct, ct_lab = list_volumes(data / "ct/images"), list_volumes(data / "ct/labels")
    t2, t2_lab = list_volumes(data / "t2wi/images"), list_volumes(data / "t2wi/labels")
    k = args.train_cases
    results: dict = {"settings": vars(args) | {"out": str(args.out)}, "torch_threads": torch.get_num_threads()}

    t2_mod, size = get_modality("T2WI"), args.size
    t2_x, t2_y = load_slice_bank(t2[:k], t2_mod, None, t2_lab[:k]).stacked(size)    # real T2WI (segmenter training)
    t2e_x, t2e_y = load_slice_bank(t2[k:], t2_mod, None, t2_lab[k:]).stacked(size)  # held-out real T2WI
    cte_x, cte_y = load_slice_bank(ct[k:], SOURCE, None, ct_lab[k:]).stacked(size)   # held-out CT to translate
    real_means = organ_means(t2_x, t2_y)

    t = time.perf_counter()
    seg = train_segmenter(t2_x, t2_y, 3000, dev)
    results["segmenter_train_s"] = time.perf_counter() - t
    results["structure_dice"] = {"raw_ct (floor)": mean_dice(segment(seg, cte_x, dev), cte_y.numpy())[0],
                                 "real_t2wi_heldout (ceiling)": mean_dice(segment(seg, t2e_x, dev), t2e_y.numpy())[0]}
    raw_rho = spearmanr(organ_means(cte_x, cte_y), real_means).statistic
    results["intensity_spearman"] = {"raw_ct": float(raw_rho)}
    results["train_s"], results["throughput_slices_per_s"], results["per_organ_dice"] = {}, {}, {}

    for variant in args.variants:
        out = args.out / variant
        cfg = TranslatorConfig("T2WI", variant=variant, size=size, ngf=32, ndf=32, n_blocks=6, s_base=16,
                               iterations=args.iterations, checkpoint_every=500, preview_every=0, seed=0)
        t = time.perf_counter()
        train_translator(cfg, ct[:k], ct_lab[:k], t2[:k], out, device=args.device)
        results["train_s"][variant] = time.perf_counter() - t
        tr = load_translator(out, device=args.device)
        fake = translate_slices(tr, cte_x)
        results["intensity_spearman"][variant] = float(spearmanr(organ_means(fake, cte_y), real_means).statistic)
        md, per = mean_dice(segment(seg, fake, dev), cte_y.numpy())
        results["structure_dice"][variant] = md
        results["per_organ_dice"][variant] = {str(c): round(v, 3) for c, v in per.items()}
        vols = [read_volume(pth, "CT") for pth in ct[k:]]
        translate_volume(tr, vols[0])  # warm-up
        t = time.perf_counter()
        for v in vols:
            translate_volume(tr, v)
        results["throughput_slices_per_s"][variant] = sum(v.shape[0] for v in vols) / (time.perf_counter() - t)
        print(json.dumps(results, indent=2), flush=True)
    (args.out / f"results_{'_'.join(args.variants)}.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
