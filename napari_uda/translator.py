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
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from . import __version__
from .device import amp_dtype, pick_device
from .errors import UdaError
from .intensity import CT_WINDOW, TARGET_PERCENTILES, from_unit_range, to_unit_range
from .io import Volume, require_finite
from .modalities import SOURCE, get_modality
from .nets import PatchDiscriminator, ResnetGenerator, UNet2D, attention_map, init_weights, seg_loss, sobel
from .orientation import from_canonical, to_canonical
from .organs import N_CLASSES
from .slices import load_slices, resize_slices

VARIANTS = ("cyclegan", "organ-attention", "sobel")
FUSIONS = ("additive", "multiplicative", "concat")
S_REGIMES = ("joint", "pretrained")
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

    def architecture(self) -> dict[str, Any]:
        return {"generator": "resnet", "ngf": self.ngf, "n_blocks": self.n_blocks, "size": self.size,
                "sobel_input": self.variant == "sobel", "seg_head": self.seg_head,
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
        self.G_AB = ResnetGenerator(1, 1, cfg.ngf, cfg.n_blocks, seg_classes=seg)
        self.G_BA = ResnetGenerator(1, 1, cfg.ngf, cfg.n_blocks)
        self.D_A = PatchDiscriminator(1, cfg.ndf, cfg.d_layers)
        self.D_B = PatchDiscriminator(1, cfg.ndf, cfg.d_layers)
        for net in (self.G_AB, self.G_BA, self.D_A, self.D_B):
            init_weights(net)
        if cfg.attention:
            self.D_L = PatchDiscriminator(2 if cfg.fusion == "concat" else 1, cfg.ndf, cfg.d_layers)
            init_weights(self.D_L)
            self.S = UNet2D(1, N_CLASSES, cfg.s_base)


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
    xa, la, _ = load_slices(ct_images, SOURCE, cfg.size, ct_labels)
    xb, _, windows = load_slices(target_images, target_mod, cfg.size)
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
        _write_translator(out, cfg, nets, output_window, iteration, {"device": str(dev), "amp": str(amp)})

    def batch(x: torch.Tensor, labels: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        idx = torch.randint(0, len(x), (cfg.batch_size,), generator=gen)
        return x[idx].to(dev), (labels[idx].to(dev) if labels is not None else None)

    def autocast() -> Any:
        return torch.autocast(dev.type, dtype=amp, enabled=amp is not None)

    if cfg.attention and cfg.s_regime == "pretrained" and not s_pretrained:
        for it in range(cfg.s_pretrain_iterations):
            ra, lab = batch(xa, la)
            with autocast():
                loss = seg_loss(nets.S(ra), lab)
            _step(opt_S, loss)
            if progress and it % 10 == 0:
                progress({"stage": "pretrain_S", "iteration": it, "total": cfg.s_pretrain_iterations, "losses": {"S": loss.item()}})
        s_pretrained = True
    if cfg.attention and cfg.s_regime == "pretrained":
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
        real_a, lab_a = batch(xa, la)
        real_b, _ = batch(xb)
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
                with torch.no_grad():
                    att_a = attention_map(nets.S(real_a))
                fused_fake = fuse(fake_b, att_a, cfg.fusion)
                pred_l = nets.D_L(fused_fake)
                loss_local = cfg.lambda_local * mse(pred_l, torch.ones_like(pred_l))
                loss_g = loss_g + loss_local
                losses["local"] = loss_local.item()
                if cfg.s_regime == "joint":
                    loss_gs = cfg.lambda_seg * seg_loss(nets.S(fake_b), lab_a)
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
                with torch.no_grad():
                    att_b = attention_map(nets.S(real_b))
                loss_dl = cfg.lambda_local * d_loss(nets.D_L, fuse(real_b, att_b, cfg.fusion), pools["L"].query(fused_fake))
                loss_d = loss_d + loss_dl
                losses["D_local"] = loss_dl.item()
        _step(opt_D, loss_d)
        losses.update(D_A=loss_da.item(), D_B=loss_db.item())

        # S, trained jointly on CT and on translated CT (detached) with the CT labels
        if cfg.attention and cfg.s_regime == "joint":
            with autocast():
                loss_s = seg_loss(nets.S(torch.cat([real_a, fake_b.detach()])), torch.cat([lab_a, lab_a]))
            _step(opt_S, loss_s)
            losses["S"] = loss_s.item()

        done = iteration + 1
        if progress:
            event: dict[str, Any] = {"iteration": done, "total": cfg.iterations, "losses": losses,
                                     "seconds": time.perf_counter() - t0}
            if cfg.preview_every and (done % cfg.preview_every == 0 or done == cfg.iterations):
                att = attention_map(nets.S(real_a[:1])) if cfg.attention else torch.zeros_like(real_a[:1])
                event["preview"] = tuple(t[0, 0].detach().float().cpu().numpy() for t in (real_a[:1], fake_b[:1], att))
            progress(event)
        if done % cfg.checkpoint_every == 0 and done < cfg.iterations:
            checkpoint(done)
    checkpoint(cfg.iterations if cfg.iterations > start else start)
    return out


def load_translator(folder: str | Path, device: str | None = None) -> Translator:
    """Load ``translator.safetensors`` + ``translator.json`` from ``folder`` (no code is executed).

    A missing, corrupt or mismatched file gives a :class:`UdaError` naming it.
    """
    folder = Path(folder)
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
    if cfg.architecture() != meta["architecture"]:
        raise UdaError(f"{sidecar_path}: architecture and training settings disagree")
    dev = pick_device(device)
    try:
        tensors = load_file(str(weights_path))
    except FileNotFoundError:
        raise UdaError(f"{weights_path}: missing") from None
    except (SafetensorError, OSError, ValueError) as exc:
        raise UdaError(f"{weights_path}: corrupt or not a safetensors file ({exc})") from None
    generator = ResnetGenerator(1, 1, cfg.ngf, cfg.n_blocks, seg_classes=N_CLASSES if cfg.seg_head else 0)
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
    unit = torch.from_numpy(to_unit_range(a, CT_WINDOW))[:, None]
    out = np.empty_like(a)
    att = np.empty_like(a) if tr.segmenter is not None else None
    amp = amp_dtype(tr.device)
    src = sobel if tr.config.variant == "sobel" else (lambda t: t)
    size = (tr.config.size, tr.config.size)
    for z0 in range(0, z, batch):
        if should_stop is not None and should_stop():
            raise UdaError("translation cancelled")
        x = unit[z0:z0 + batch].to(tr.device)
        with torch.autocast(tr.device.type, dtype=amp, enabled=amp is not None):
            y = tr.generator(src(resize_slices(x, size)))
            if tr.segmenter is not None:
                att[z0:z0 + batch] = attention_map(tr.segmenter(x))[:, 0].float().cpu().numpy()
        out[z0:z0 + batch] = resize_slices(y.float(), (h, w))[:, 0].cpu().numpy()
        if progress is not None:
            progress(min(z0 + batch, z), z)
    mod = tr.config.modality
    translated = from_canonical(canon.with_array(from_unit_range(out, tr.output_window), mod), volume.geometry)
    return translated, (from_canonical(canon.with_array(att, mod), volume.geometry) if att is not None else None)


def translate_slices(tr: Translator, ct_slices: torch.Tensor) -> torch.Tensor:
    """Translate normalised (N, 1, size, size) CT slices to normalised target slices (for evaluation)."""
    src = sobel if tr.config.variant == "sobel" else (lambda t: t)
    with torch.no_grad():
        return tr.generator(src(ct_slices.to(tr.device))).float().cpu()
