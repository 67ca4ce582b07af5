"""CT-to-target translators: CycleGAN, Organ Attention CycleGAN and Sobel-space (ASIT) CycleGAN.

One translator per target modality. Training is resumable (``train_state.pt``, loaded
with ``weights_only=True``), checkpoints every ``checkpoint_every`` iterations and on
cancel; the deliverable is ``translator.safetensors`` (generator CT->target, and S for
attention variants) with the JSON sidecar ``translator.json``. Loading never runs code
from a file.
"""
from __future__ import annotations

import json
import platform
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn
from torch.nn import functional as F

from napari_uda import __version__
from napari_uda.core.choices import FUSIONS, S_REGIMES, VARIANTS
from napari_uda.core.device import amp_dtype, pick_device
from napari_uda.core.errors import UdaError
from napari_uda.core.intensity import CT_WINDOW, TARGET_PERCENTILES, from_unit_range, to_unit_range
from napari_uda.core.io import Volume, require_finite
from napari_uda.core.modalities import SOURCE, get_modality
from napari_uda.core.organs import N_CLASSES
from napari_uda.core.orientation import from_canonical, to_canonical
from napari_uda.translate.nets import (
    PatchDiscriminator,
    ResnetGenerator,
    UNet2D,
    attention_map,
    init_weights,
    seg_loss,
    sobel,
)
from napari_uda.translate.slices import SliceBank, inplane_spacing, load_slice_bank, resize_slices, working_size

WEIGHTS = "translator.safetensors"
SIDECAR = "translator.json"
STATE = "train_state.pt"
FORMAT = "napari-uda-translator"
FORMAT_VERSION = 1

Progress = Callable[[dict[str, Any]], None]


@dataclass
class TranslatorConfig:
    """Everything that defines a translator and its training. Defaults are the reference
    CycleGAN's (256 px, ngf/ndf 64, 9 blocks, 3-layer PatchGAN, lambda 10, identity 0.5,
    pool 50, Adam 2e-4 / beta1 0.5, constant then linearly decaying learning rate) and the
    FLARE 2025 organ-attention settings (local discriminator 0.5, segmentation loss 5)."""

    modality: str
    variant: str = "organ-attention"
    size: int = 256
    ngf: int = 64
    ndf: int = 64
    n_blocks: int = 9
    d_layers: int = 3
    lambda_cycle: float = 10.0
    lambda_identity: float = 0.5
    lambda_local: float = 0.5
    lambda_seg: float = 5.0
    pool_size: int = 50
    lr: float = 2e-4
    beta1: float = 0.5
    iterations: int = 2000
    constant_fraction: float = 0.5
    batch_size: int = 1
    fusion: str = "additive"
    s_regime: str = "joint"
    s_base: int = 16
    s_pretrain_iterations: int = 200
    seg_head: bool = False
    skips: bool = False  # encoder-decoder skips in the generators (nets.ResnetGenerator)
    spacing_mm: float | None = None  # in-plane working pixel size; None: the median of the training CT
    checkpoint_every: int = 100
    preview_every: int = 50
    seed: int = 0

    def __post_init__(self) -> None:
        self.modality = get_modality(self.modality).key
        if not get_modality(self.modality).is_target:
            raise UdaError("the translation target must be an MRI or PET modality, not CT")
        for name, value, allowed in (("variant", self.variant, VARIANTS), ("fusion", self.fusion, FUSIONS),
                                     ("s_regime", self.s_regime, S_REGIMES)):
            if value not in allowed:
                raise UdaError(f"unknown {name} {value!r}; choose one of {', '.join(allowed)}")
        if self.size < 16 or self.size % 4:
            raise UdaError(f"size must be a multiple of 4 and at least 16, got {self.size}")
        if self.iterations < 1:
            raise UdaError("iterations must be at least 1")

    @property
    def attention(self) -> bool:
        return self.variant == "organ-attention"

    @property
    def s_on_translation(self) -> bool:
        """Whether S looks at the translation (and G learns through it) rather than at the CT."""
        return self.s_regime in ("joint", "invariant")

    def architecture(self) -> dict[str, Any]:
        return {"generator": "resnet", "ngf": self.ngf, "n_blocks": self.n_blocks, "size": self.size,
                "sobel_input": self.variant == "sobel", "seg_head": self.seg_head, "skips": self.skips,
                "segmenter": {"type": "unet2d", "base": self.s_base, "classes": N_CLASSES} if self.attention else None}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TranslatorConfig:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


class ImagePool:
    """History of generated images (Shrivastava et al.): half the time the discriminator
    sees an older fake instead of the newest one."""

    def __init__(self, size: int, gen: torch.Generator) -> None:
        self.size, self.gen = size, gen
        self.images: list[torch.Tensor] = []

    def query(self, batch: torch.Tensor) -> torch.Tensor:
        if self.size == 0:
            return batch
        out = []
        for img in batch.detach():
            img = img[None]
            if len(self.images) < self.size:
                self.images.append(img.cpu())
                out.append(img)
            elif torch.rand(1, generator=self.gen).item() > 0.5:
                k = int(torch.randint(0, self.size, (1,), generator=self.gen).item())
                old = self.images[k].to(img.device)
                self.images[k] = img.cpu()
                out.append(old)
            else:
                out.append(img)
        return torch.cat(out)

    def state(self) -> torch.Tensor:
        return torch.cat(self.images) if self.images else torch.zeros(0)

    def load(self, t: torch.Tensor) -> None:
        self.images = [t[i:i + 1] for i in range(len(t))]


def fuse(image: torch.Tensor, att: torch.Tensor, mode: str) -> torch.Tensor:
    """Fuse a translated image with its organ attention for the local discriminator."""
    if mode == "additive":
        return image + att
    if mode == "multiplicative":
        return image * (1.0 + att)
    return torch.cat([image, att], dim=1)


def lr_factor(iteration: int, cfg: TranslatorConfig) -> float:
    """Constant for the first ``constant_fraction`` of training, then linear decay towards 0."""
    start = int(cfg.iterations * cfg.constant_fraction)
    if iteration < start:
        return 1.0
    return max(0.0, 1.0 - (iteration - start) / max(1, cfg.iterations - start))


@dataclass
class Translator:
    """A trained translator ready to apply: generator CT->target, S for attention variants."""

    config: TranslatorConfig
    generator: ResnetGenerator
    segmenter: UNet2D | None
    output_window: tuple[float, float]
    device: torch.device
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def modality(self) -> str:
        return self.config.modality


class _Nets(nn.Module):
    """All networks of a training run, in one module so they checkpoint together."""

    def __init__(self, cfg: TranslatorConfig) -> None:
        super().__init__()
        seg = N_CLASSES if cfg.seg_head else 0
        self.G_AB = ResnetGenerator(1, 1, cfg.ngf, cfg.n_blocks, seg_classes=seg, skips=cfg.skips)
        self.G_BA = ResnetGenerator(1, 1, cfg.ngf, cfg.n_blocks, skips=cfg.skips)
        self.D_A = PatchDiscriminator(1, cfg.ndf, cfg.d_layers)
        self.D_B = PatchDiscriminator(1, cfg.ndf, cfg.d_layers)
        for net in (self.G_AB, self.G_BA, self.D_A, self.D_B):
            init_weights(net)
        if cfg.attention:
            self.D_L = PatchDiscriminator(2 if cfg.fusion == "concat" else 1, cfg.ndf, cfg.d_layers)
            init_weights(self.D_L)
            self.S = UNet2D(1, N_CLASSES, cfg.s_base)


def _fused_for_local_d(nets: _Nets, cfg: TranslatorConfig, real_a: torch.Tensor, fake_b: torch.Tensor,
                       grad: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The local discriminator's view of a translation: ``fake_b`` fused with organ attention.
    Jointly trained S (the FLARE 2025 release) looks at the translation itself, so a translation
    whose organs S cannot find is penalised; so does the ``invariant`` S (pretrained on CT under
    random organ contrasts, then frozen, so it cannot co-adapt with G); a pretrained, frozen CT
    segmenter S (FLARE 2024's ``A = 1 - softmax(S(x_ct))[:, 0]``) looks at the CT. Returns (fused, S's logits on the
    translation or None)."""
    if cfg.s_on_translation:
        with torch.set_grad_enabled(grad):
            logits = nets.S(fake_b)
        return fuse(fake_b, attention_map(logits), cfg.fusion), logits
    with torch.no_grad():
        att = attention_map(nets.S(attention_input(cfg, real_a, fake_b)))
    return fuse(fake_b, att, cfg.fusion), None


def attention_input(cfg: TranslatorConfig, ct: torch.Tensor, translated: torch.Tensor) -> torch.Tensor:
    """What S looks at to make the organ attention of a translation: the translation itself when S
    is trained jointly on translations (the FLARE 2025 release), the CT for a pretrained CT
    segmenter (FLARE 2024's ``A = 1 - softmax(S(x_ct))[:, 0]``)."""
    return translated if cfg.s_on_translation else ct


def s_dice(nets: _Nets, cfg: TranslatorConfig, ct: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    """How well S finds the organs its attention stands for: mean Dice over the organs present of
    S's argmax on CT slices (``ct``: (N, 1, H, W) in [-1, 1], ``labels``: (N, H, W)) and on their
    translations. Attention from an S near 0 here is noise, not organs."""
    from napari_uda.evaluate.metrics import dice

    dev = next(nets.S.parameters()).device
    src = sobel if cfg.variant == "sobel" else (lambda t: t)
    with torch.no_grad():
        x = ct.to(dev)
        fake = nets.G_AB(src(x))
        out = {}
        for name, images in (("ct", x), ("translated_ct", fake)):
            pred = nets.S(images).argmax(1).cpu().numpy()
            gt = labels.numpy()
            present = [int(c) for c in np.unique(gt) if c > 0]
            out[name] = round(float(np.mean(list(dice(pred, gt, present).values()))) if present else 0.0, 4)
    return out


S_PRETRAIN_BATCH = 8  # CT crops per step while the contrast-invariant S is pretrained


def randomise_contrast(ct: torch.Tensor, labels: torch.Tensor, p: float = 0.8) -> torch.Tensor:
    """CT crops under the segmenters' own strong intensity augmentation (the transforms of
    napari_uda.segment.nnunet_trainers.augment, applied with probability ``p``): random organ brightness,
    then a random non-monotone curve or an inversion, clipped back to [-1, 1]. An S trained on
    these finds organs by shape and context, in CT, in a translation and in the real target
    alike. ct: (N, 1, H, W) in [-1, 1]; labels: (N, H, W). The input is not changed."""
    from napari_uda.segment.nnunet_trainers.augment import IntensityRemapTransform, OrganContrastTransform

    organs, remap = OrganContrastTransform(p=p), IntensityRemapTransform(p=p)
    out = ct.clone()
    for i in range(ct.shape[0]):
        sample = organs(image=out[i], segmentation=labels[i][None])
        out[i] = remap(image=sample["image"])["image"].clamp(-1, 1)
    return out


def _step(opt: torch.optim.Optimizer, loss: torch.Tensor) -> None:
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


def _atomic_torch_save(obj: Any, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save(obj, tmp)
    tmp.replace(path)


def _write_translator(out: Path, cfg: TranslatorConfig, nets: _Nets, output_window: tuple[float, float],
                      iteration: int, extra: dict[str, Any]) -> None:
    tensors = {f"G.{k}": v.detach().float().cpu().contiguous() for k, v in nets.G_AB.state_dict().items()}
    if cfg.attention:
        tensors.update({f"S.{k}": v.detach().float().cpu().contiguous() for k, v in nets.S.state_dict().items()})
    tmp = out / f".{WEIGHTS}.tmp"
    save_file(tensors, str(tmp), metadata={"format": FORMAT})
    tmp.replace(out / WEIGHTS)
    sidecar = {
        "format": FORMAT, "format_version": FORMAT_VERSION, "modality": cfg.modality, "variant": cfg.variant,
        "architecture": cfg.architecture(),
        "intensity": {"source": {"modality": SOURCE.key, "window": list(CT_WINDOW)},
                      "target": {"percentiles": list(TARGET_PERCENTILES)}, "output_window": list(output_window)},
        "training": {**asdict(cfg), "iterations_done": iteration, **extra},
        "versions": {"napari_uda": __version__, "torch": torch.__version__, "python": platform.python_version()},
    }
    tmp = out / f".{SIDECAR}.tmp"
    tmp.write_text(json.dumps(sidecar, indent=2))
    tmp.replace(out / SIDECAR)


def train_translator(cfg: TranslatorConfig, ct_images: list[Path], ct_labels: list[Path] | None, target_images: list[Path],
                     out: str | Path, device: str | None = None, progress: Progress | None = None,
                     should_stop: Callable[[], bool] | None = None) -> Path:
    """Train (or resume) a translator into ``out``; returns ``out``.

    ``progress`` receives ``{"iteration", "total", "losses", "seconds"}`` each iteration and
    also ``"preview": (ct, translated, attention)`` arrays every ``preview_every``.
    ``should_stop`` is polled each iteration: a stop saves a checkpoint and returns.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if cfg.attention and ct_labels is None:
        raise UdaError("the organ-attention variant needs CT labels (--ct-labels) to train S")
    if cfg.seg_head and ct_labels is None:
        raise UdaError("the segmentation head needs CT labels (--ct-labels)")
    dev = pick_device(device)
    amp = amp_dtype(dev)
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)

    target_mod = get_modality(cfg.modality)
    bank_a = load_slice_bank(ct_images, SOURCE, cfg.spacing_mm, ct_labels)
    cfg = replace(cfg, spacing_mm=bank_a.spacing_mm)  # both domains share one pixel size: the CT's
    bank_b = load_slice_bank(target_images, target_mod, cfg.spacing_mm)
    windows = bank_b.windows
    output_window = (float(np.mean([w[0] for w in windows])), float(np.mean([w[1] for w in windows])))

    nets = _Nets(cfg).to(dev)
    g_params = list(nets.G_AB.parameters()) + list(nets.G_BA.parameters())
    d_params = list(nets.D_A.parameters()) + list(nets.D_B.parameters()) + (list(nets.D_L.parameters()) if cfg.attention else [])
    opt_G = torch.optim.Adam(g_params, lr=cfg.lr, betas=(cfg.beta1, 0.999))
    opt_D = torch.optim.Adam(d_params, lr=cfg.lr, betas=(cfg.beta1, 0.999))
    opt_S = torch.optim.Adam(nets.S.parameters(), lr=1e-3) if cfg.attention else None
    pools = {k: ImagePool(cfg.pool_size, gen) for k in (("A", "B", "L") if cfg.attention else ("A", "B"))}
    start, s_pretrained = 0, False

    state_path = out / STATE
    if state_path.exists():
        try:
            state = torch.load(state_path, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - any unreadable state is reported, never executed
            raise UdaError(f"{state_path}: cannot resume from this checkpoint ({exc}); remove it to start over") from None
        saved = TranslatorConfig.from_dict(json.loads(state["config"]))
        if saved.architecture() != cfg.architecture() or saved.variant != cfg.variant or saved.modality != cfg.modality:
            raise UdaError(f"{state_path}: belongs to a different translator ({saved.modality}, {saved.variant}); "
                           "use another --out or remove it")
        nets.load_state_dict(state["nets"])
        opt_G.load_state_dict(state["opt_G"])
        opt_D.load_state_dict(state["opt_D"])
        if opt_S is not None:
            opt_S.load_state_dict(state["opt_S"])
        for k, pool in pools.items():
            pool.load(state["pools"][k])
        gen.set_state(state["gen"])
        torch.set_rng_state(state["torch_rng"])
        start, s_pretrained = int(state["iteration"]), bool(state["s_pretrained"])

    def checkpoint(iteration: int) -> None:
        _atomic_torch_save({
            "iteration": iteration, "config": json.dumps(asdict(cfg)), "nets": nets.state_dict(),
            "opt_G": opt_G.state_dict(), "opt_D": opt_D.state_dict(), "opt_S": opt_S.state_dict() if opt_S else {},
            "pools": {k: p.state() for k, p in pools.items()}, "gen": gen.get_state(), "torch_rng": torch.get_rng_state(),
            "s_pretrained": s_pretrained,
        }, state_path)
        extra: dict[str, Any] = {"device": str(dev), "amp": str(amp)}
        if cfg.attention:
            extra["s_dice"] = s_dice(nets, cfg, eval_a, eval_lab)
        _write_translator(out, cfg, nets, output_window, iteration, extra)

    eval_a, eval_lab = bank_a.sample(16, cfg.size, torch.Generator().manual_seed(cfg.seed + 1))  # fixed, for S's Dice

    def batch(bank: SliceBank) -> tuple[torch.Tensor, torch.Tensor | None]:
        x, y = bank.sample(cfg.batch_size, cfg.size, gen)  # random crops, as the reference CycleGAN trains
        return x.to(dev), (y.to(dev) if y is not None else None)

    def autocast() -> Any:
        return torch.autocast(dev.type, dtype=amp, enabled=amp is not None)

    if cfg.attention and cfg.s_regime != "joint" and not s_pretrained:
        invariant = cfg.s_regime == "invariant"
        for it in range(cfg.s_pretrain_iterations):
            x, lab = bank_a.sample(S_PRETRAIN_BATCH if invariant else cfg.batch_size, cfg.size, gen)
            x = randomise_contrast(x, lab) if invariant else x
            with autocast():
                loss = seg_loss(nets.S(x.to(dev)), lab.to(dev))
            _step(opt_S, loss)
            if progress and it % 10 == 0:
                progress({"stage": "pretrain_S", "iteration": it, "total": cfg.s_pretrain_iterations, "losses": {"S": loss.item()}})
        s_pretrained = True
    if cfg.attention and cfg.s_regime != "joint":
        nets.S.requires_grad_(False)

    mse, l1 = nn.MSELoss(), nn.L1Loss()
    src = sobel if cfg.variant == "sobel" else (lambda t: t)
    t0 = time.perf_counter()
    iteration = start
    for iteration in range(start, cfg.iterations):
        if should_stop is not None and should_stop():
            checkpoint(iteration)
            if progress:
                progress({"event": "cancelled", "iteration": iteration, "total": cfg.iterations})
            return out
        for opt in (opt_G, opt_D) + ((opt_S,) if opt_S else ()):
            for g in opt.param_groups:
                g["lr"] = (cfg.lr if opt is not opt_S else 1e-3) * lr_factor(iteration, cfg)
        real_a, lab_a = batch(bank_a)
        real_b, _ = batch(bank_b)
        losses: dict[str, float] = {}

        # generators
        nets.D_A.requires_grad_(False)
        nets.D_B.requires_grad_(False)
        if cfg.attention:
            nets.D_L.requires_grad_(False)
        with autocast():
            fake_b, seg_logits = nets.G_AB.forward_with_seg(src(real_a))
            rec_a = nets.G_BA(src(fake_b))
            fake_a = nets.G_BA(src(real_b))
            rec_b = nets.G_AB(src(fake_a))
            pred_fb, pred_fa = nets.D_B(fake_b), nets.D_A(fake_a)
            loss_adv = mse(pred_fb, torch.ones_like(pred_fb)) + mse(pred_fa, torch.ones_like(pred_fa))
            loss_cyc = cfg.lambda_cycle * (l1(rec_a, real_a) + l1(rec_b, real_b))
            loss_g = loss_adv + loss_cyc
            if cfg.variant != "sobel" and cfg.lambda_identity > 0:
                loss_idt = cfg.lambda_cycle * cfg.lambda_identity * (l1(nets.G_AB(real_b), real_b) + l1(nets.G_BA(real_a), real_a))
                loss_g = loss_g + loss_idt
                losses["identity"] = loss_idt.item()
            if cfg.attention:
                fused_fake, s_logits = _fused_for_local_d(nets, cfg, real_a, fake_b, grad=True)
                pred_l = nets.D_L(fused_fake)
                loss_local = cfg.lambda_local * mse(pred_l, torch.ones_like(pred_l))
                loss_g = loss_g + loss_local
                losses["local"] = loss_local.item()
                if cfg.s_on_translation:  # G also learns through S: its translation must stay segmentable
                    loss_gs = cfg.lambda_seg * seg_loss(s_logits, lab_a)
                    loss_g = loss_g + loss_gs
                    losses["G_seg"] = loss_gs.item()
            if seg_logits is not None:
                loss_head = cfg.lambda_seg * seg_loss(seg_logits, lab_a)
                loss_g = loss_g + loss_head
                losses["seg_head"] = loss_head.item()
        _step(opt_G, loss_g)
        losses.update(G_adv=loss_adv.item(), cycle=loss_cyc.item())

        # discriminators
        nets.D_A.requires_grad_(True)
        nets.D_B.requires_grad_(True)
        with autocast():
            def d_loss(d: nn.Module, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
                pr, pf = d(real), d(fake.detach())
                return 0.5 * (mse(pr, torch.ones_like(pr)) + mse(pf, torch.zeros_like(pf)))

            loss_da = d_loss(nets.D_A, real_a, pools["A"].query(fake_a))
            loss_db = d_loss(nets.D_B, real_b, pools["B"].query(fake_b))
            loss_d = loss_da + loss_db
            if cfg.attention:
                nets.D_L.requires_grad_(True)
                with torch.no_grad():  # eq. 7: real target and a pooled translation, each fused with S's attention on itself
                    real_l = fuse(real_b, attention_map(nets.S(real_b)), cfg.fusion)
                    if cfg.s_on_translation:  # S looks at the pooled translation itself
                        fake_l, _ = _fused_for_local_d(nets, cfg, real_a, pools["L"].query(fake_b.detach()), grad=False)
                    else:  # the attention belongs to the CT each translation came from: pool them fused
                        fake_l = pools["L"].query(fused_fake.detach())
                loss_dl = cfg.lambda_local * d_loss(nets.D_L, real_l, fake_l)
                loss_d = loss_d + loss_dl
                losses["D_local"] = loss_dl.item()
        _step(opt_D, loss_d)
        losses.update(D_A=loss_da.item(), D_B=loss_db.item())

        # S, trained jointly on the translated CT (detached) with the CT labels, as the authors' code does
        if cfg.attention and cfg.s_regime == "joint":
            with autocast():
                loss_s = seg_loss(nets.S(fake_b.detach()), lab_a)
            _step(opt_S, loss_s)
            losses["S"] = loss_s.item()

        done = iteration + 1
        if progress:
            event: dict[str, Any] = {"iteration": done, "total": cfg.iterations, "losses": losses,
                                     "seconds": time.perf_counter() - t0}
            if cfg.preview_every and (done % cfg.preview_every == 0 or done == cfg.iterations):
                if cfg.attention:  # S's attention where the local discriminator gets it from
                    with torch.no_grad(), autocast():  # fake_b is in the autocast dtype
                        att = attention_map(nets.S(attention_input(cfg, real_a[:1], fake_b[:1])))
                    event["s_dice"] = s_dice(nets, cfg, eval_a, eval_lab)
                else:
                    att = torch.zeros_like(real_a[:1])
                event["preview"] = tuple(t[0, 0].detach().float().cpu().numpy() for t in (real_a[:1], fake_b[:1], att))
            progress(event)
        if done % cfg.checkpoint_every == 0 and done < cfg.iterations:
            checkpoint(done)
    checkpoint(cfg.iterations if cfg.iterations > start else start)
    return out


def load_translator(folder: str | Path, device: str | None = None) -> Translator:
    """Load ``translator.safetensors`` + ``translator.json`` from ``folder`` (no code is executed).

    ``folder`` may also be an exported model folder (:mod:`napari_uda.core.model_folder`). A missing,
    corrupt or mismatched file gives a :class:`UdaError` naming it.
    """
    from napari_uda.core.model_folder import TRANSLATOR, part_folder

    folder = part_folder(folder, TRANSLATOR)
    sidecar_path, weights_path = folder / SIDECAR, folder / WEIGHTS
    try:
        meta = json.loads(sidecar_path.read_text())
    except FileNotFoundError:
        raise UdaError(f"{sidecar_path}: missing; {folder} is not a trained translator") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UdaError(f"{sidecar_path}: not valid JSON ({exc})") from None
    if meta.get("format") != FORMAT:
        raise UdaError(f"{sidecar_path}: not a napari-uda translator sidecar")
    cfg = TranslatorConfig.from_dict(meta["training"])
    if cfg.architecture() != {"skips": False, **meta["architecture"]}:  # sidecars from before skips say nothing of them
        raise UdaError(f"{sidecar_path}: architecture and training settings disagree")
    dev = pick_device(device)
    try:
        tensors = load_file(str(weights_path))
    except FileNotFoundError:
        raise UdaError(f"{weights_path}: missing") from None
    except (SafetensorError, OSError, ValueError) as exc:
        raise UdaError(f"{weights_path}: corrupt or not a safetensors file ({exc})") from None
    generator = ResnetGenerator(1, 1, cfg.ngf, cfg.n_blocks, seg_classes=N_CLASSES if cfg.seg_head else 0, skips=cfg.skips)
    segmenter = UNet2D(1, N_CLASSES, cfg.s_base) if cfg.attention else None
    for prefix, net in (("G.", generator), ("S.", segmenter)):
        if net is None:
            continue
        own = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
        expected = net.state_dict()
        missing = sorted(set(expected) - set(own))
        wrong = sorted(k for k in set(expected) & set(own) if expected[k].shape != own[k].shape)
        if missing or wrong or set(own) - set(expected):
            detail = f"missing {missing[:3]}" if missing else f"shape mismatch in {wrong[:3]}" if wrong else "unexpected tensors"
            raise UdaError(f"{weights_path}: weights do not fit the architecture in {SIDECAR} ({detail})")
        net.load_state_dict(own)
        net.to(dev).eval()
    lo, hi = meta["intensity"]["output_window"]
    return Translator(cfg, generator, segmenter, (float(lo), float(hi)), dev, meta)


@torch.no_grad()
def translate_volume(tr: Translator, volume: Volume, batch: int = 8,
                     should_stop: Callable[[], bool] | None = None,
                     progress: Callable[[int, int], None] | None = None) -> tuple[Volume, Volume | None]:
    """Translate a CT volume slice by slice; returns (translated, attention or None), both with
    the CT's exact geometry. The translation is mapped to the target's intensity window;
    attention is computed by S at the image's own in-plane size. Slices are axial slices of the
    canonical orientation whatever the file's axes. ``progress(done, total)`` is called after
    each batch of slices."""
    require_finite(volume, "the CT volume")
    canon = to_canonical(volume)
    a = canon.array.astype(np.float32)
    z, h, w = a.shape
    spacing = tr.config.spacing_mm or inplane_spacing(canon)
    work = working_size((h, w), canon.spacing[1:], spacing)  # (h, w) when the CT has the working pixel size
    unit = torch.from_numpy(to_unit_range(a, CT_WINDOW))[:, None]
    out = np.empty_like(a)
    att = np.empty_like(a) if tr.segmenter is not None else None
    amp = amp_dtype(tr.device)
    src = sobel if tr.config.variant == "sobel" else (lambda t: t)
    for z0 in range(0, z, batch):
        if should_stop is not None and should_stop():
            raise UdaError("translation cancelled")
        x = unit[z0:z0 + batch].to(tr.device)
        with torch.autocast(tr.device.type, dtype=amp, enabled=amp is not None):
            y = resize_slices(_generate(tr.generator, src(resize_slices(x, work))).float(), (h, w))
            if tr.segmenter is not None:  # S at the image's own size, on what it was trained to look at
                seen = attention_input(tr.config, x, y)
                att[z0:z0 + batch] = attention_map(tr.segmenter(seen))[:, 0].float().cpu().numpy()
        out[z0:z0 + batch] = y[:, 0].cpu().numpy()
        if progress is not None:
            progress(min(z0 + batch, z), z)
    mod = tr.config.modality
    translated = from_canonical(canon.with_array(from_unit_range(out, tr.output_window), mod), volume.geometry)
    return translated, (from_canonical(canon.with_array(att, mod), volume.geometry) if att is not None else None)


def _generate(generator: nn.Module, x: torch.Tensor, multiple: int = 4) -> torch.Tensor:
    """The fully convolutional generator on whole (N, 1, H, W) slices of any size: reflect-padded
    to a multiple of its down-sampling, then cropped back (nothing is stretched)."""
    h, w = x.shape[-2:]
    ph, pw = -h % multiple, -w % multiple
    if ph or pw:
        x = F.pad(x, (0, pw, 0, ph), mode="reflect" if min(h, w) > max(ph, pw) else "replicate")
    return generator(x)[..., :h, :w]


def translate_slices(tr: Translator, ct_slices: torch.Tensor) -> torch.Tensor:
    """Translate normalised (N, 1, size, size) CT slices to normalised target slices (for evaluation)."""
    src = sobel if tr.config.variant == "sobel" else (lambda t: t)
    with torch.no_grad():
        return tr.generator(src(ct_slices.to(tr.device))).float().cpu()
