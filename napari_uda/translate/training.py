"""Training a CT-to-target translator (CycleGAN, Organ Attention CycleGAN, Sobel-space ASIT, target-aware
TANQ) into a folder,
in nnU-Net's trainer style: :class:`TranslatorTrainer` sets a run up (or resumes it from its
tensor-only state), and each step of an iteration is one method: learning rates, the generators,
the discriminators, the jointly trained S, the progress event, the checkpoint.

Losses follow the reference CycleGAN (LSGAN, cycle, identity) and FLARE 2024/2025's Organ
Attention (a local discriminator on translations fused with S's organ attention, eq. 7). ASIT
samples both domains as Sobel edge maps, so every loss (adversarial, cycle, identity) is in Sobel space.
TANQ's generator translates CT by the regions of its label map and learns its segmentation decoder
with cross-entropy on the same CT.
"""
from __future__ import annotations

import json
import platform
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import save_file
from torch import nn
from torch.nn import functional as F

from napari_uda import __version__
from napari_uda.core.device import amp_dtype, pick_device
from napari_uda.core.errors import UdaError
from napari_uda.core.files import atomic_path, atomic_write_text
from napari_uda.core.intensity import CT_WINDOW, TARGET_PERCENTILES
from napari_uda.core.jobs import Cancelled, Event, Progress, StopFlag, emit
from napari_uda.core.modalities import SOURCE, get_modality
from napari_uda.core.organs import N_CLASSES
from napari_uda.translate.nets import PatchDiscriminator, ResnetGenerator, UNet2D, attention_map, init_weights, seg_loss
from napari_uda.translate.slices import SliceBank, load_slice_bank
from napari_uda.translate.translator import (
    FORMAT,
    FORMAT_VERSION,
    SIDECAR,
    STATE,
    WEIGHTS,
    TranslatorConfig,
    attention_input,
    build_generator,
    fuse,
    to_space,
)


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


def lr_factor(iteration: int, cfg: TranslatorConfig) -> float:
    """Constant for the first ``constant_fraction`` of training, then linear decay towards 0."""
    start = int(cfg.iterations * cfg.constant_fraction)
    if iteration < start:
        return 1.0
    return max(0.0, 1.0 - (iteration - start) / max(1, cfg.iterations - start))


class _Nets(nn.Module):
    """All networks of a training run, in one module so they checkpoint together."""

    def __init__(self, cfg: TranslatorConfig) -> None:
        super().__init__()
        self.G_AB = build_generator(cfg)
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


def _mean_dice(pred: torch.Tensor, labels: torch.Tensor) -> float:
    """Mean Dice over the organs present in ``labels`` (N, H, W) of the class map ``pred`` (N, H, W)."""
    from napari_uda.evaluate.metrics import dice

    gt = labels.numpy()
    present = [int(c) for c in np.unique(gt) if c > 0]
    return round(float(np.mean(list(dice(pred.cpu().numpy(), gt, present).values()))) if present else 0.0, 4)


def s_dice(nets: _Nets, cfg: TranslatorConfig, ct: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    """How well S finds the organs its attention stands for: mean Dice over the organs present of
    S's argmax on CT slices (``ct``: (N, 1, H, W) in [-1, 1], ``labels``: (N, H, W)) and on their
    translations. Attention from an S near 0 here is noise, not organs."""
    dev = next(nets.S.parameters()).device
    with torch.no_grad():
        x = ct.to(dev)
        fake = nets.G_AB(to_space(cfg)(x))
        return {name: _mean_dice(nets.S(images).argmax(1), labels) for name, images in (("ct", x), ("translated_ct", fake))}


def decoder_dice(nets: _Nets, ct: torch.Tensor, labels: torch.Tensor) -> float:
    """How well TANQ's segmentation decoder finds the organs of CT slices ``ct`` (N, 1, H, W) whose
    labels are ``labels`` (N, H, W): the regions it gives a translation when no labels come with it."""
    with torch.no_grad():
        return _mean_dice(nets.G_AB.segment(ct.to(next(nets.G_AB.parameters()).device)).argmax(1), labels)


SEGMENTER_LR = 1e-3  # Adam's rate for S and for TANQ's segmentation decoder
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


def _write_translator(out: Path, cfg: TranslatorConfig, nets: nn.Module, output_window: tuple[float, float],
                      iteration: int, extra: dict[str, Any], more: dict[str, torch.Tensor]) -> None:
    """``translator.safetensors`` (the generator as ``G.*``, S as ``S.*``, and ``more``) and its sidecar
    (``extra`` joins the training settings)."""
    tensors = {f"G.{k}": v.detach().float().cpu().contiguous() for k, v in nets.G_AB.state_dict().items()}
    tensors.update({k: v.contiguous() for k, v in more.items()})
    if cfg.attention:
        tensors.update({f"S.{k}": v.detach().float().cpu().contiguous() for k, v in nets.S.state_dict().items()})
    with atomic_path(out / WEIGHTS) as tmp:
        save_file(tensors, str(tmp), metadata={"format": FORMAT})
    sidecar = {
        "format": FORMAT, "format_version": FORMAT_VERSION, "modality": cfg.modality, "variant": cfg.variant,
        "architecture": cfg.architecture(),
        "intensity": {"source": {"modality": SOURCE.key, "window": list(CT_WINDOW)},
                      "target": {"percentiles": list(TARGET_PERCENTILES)}, "output_window": list(output_window)},
        "training": {**asdict(cfg), "iterations_done": iteration, **extra},
        "versions": {"napari_uda": __version__, "torch": torch.__version__, "python": platform.python_version()},
    }
    atomic_write_text(out / SIDECAR, json.dumps(sidecar, indent=2))


class TranslatorTrainer:
    """One training run of a translator into ``out`` (created if needed; resumed from
    ``out/train_state.pt``, tensors only, when it is there). ``run`` trains to ``cfg.iterations``."""

    def __init__(self, cfg: TranslatorConfig, ct_images: list[Path], ct_labels: list[Path] | None,
                 target_images: list[Path], out: str | Path, device: str | None = None) -> None:
        self.out = Path(out)
        self.out.mkdir(parents=True, exist_ok=True)
        if cfg.attention and ct_labels is None:
            raise UdaError("the organ-attention variant needs CT labels (--ct-labels) to train S")
        if cfg.seg_head and ct_labels is None:
            raise UdaError("the segmentation head needs CT labels (--ct-labels)")
        if cfg.target_aware and ct_labels is None:
            raise UdaError("the tanq variant needs CT labels (--ct-labels): its regions are the CT's organs")
        self.dev = pick_device(device)
        self.amp = amp_dtype(self.dev)
        torch.manual_seed(cfg.seed)
        self.gen = torch.Generator().manual_seed(cfg.seed)
        self.bank_a = load_slice_bank(ct_images, SOURCE, cfg.spacing_mm, ct_labels)
        self.cfg = cfg = replace(cfg, spacing_mm=self.bank_a.spacing_mm)  # both domains share one pixel size: the CT's
        self.bank_b = load_slice_bank(target_images, get_modality(cfg.modality), cfg.spacing_mm)
        windows = self.bank_b.windows  # a Sobel-space translation stays in Sobel space's [-1, 1]
        self.output_window = (-1.0, 1.0) if cfg.sobel_space else (float(np.mean([w[0] for w in windows])),
                                                                   float(np.mean([w[1] for w in windows])))
        self._build_networks()
        self.start, self.s_pretrained = 0, False
        self.state_path = self.out / STATE
        if self.state_path.exists():
            self._resume()
        self.eval_a, self.eval_lab = self.bank_a.sample(16, cfg.size, torch.Generator().manual_seed(cfg.seed + 1))
        self.mse, self.l1 = nn.MSELoss(), nn.L1Loss()
        self.space = to_space(cfg)

    def _build_networks(self) -> None:
        cfg, nets = self.cfg, _Nets(self.cfg).to(self.dev)
        self.nets = nets
        seg = {id(q) for q in nets.G_AB.seg_decoder.parameters()} if cfg.target_aware else set()
        g_params: list[dict[str, Any]] = [{"params": [q for q in list(nets.G_AB.parameters()) + list(nets.G_BA.parameters())
                                                      if id(q) not in seg]}]
        if seg:  # TANQ's segmentation decoder learns at S's rate: at the generators' it barely moves in a CPU budget
            g_params.append({"params": list(nets.G_AB.seg_decoder.parameters()), "lr": SEGMENTER_LR})
        d_params = (list(nets.D_A.parameters()) + list(nets.D_B.parameters())
                    + (list(nets.D_L.parameters()) if cfg.attention else []))
        self.opt_G = torch.optim.Adam(g_params, lr=cfg.lr, betas=(cfg.beta1, 0.999))
        self.opt_D = torch.optim.Adam(d_params, lr=cfg.lr, betas=(cfg.beta1, 0.999))
        self.opt_S = torch.optim.Adam(nets.S.parameters(), lr=SEGMENTER_LR) if cfg.attention else None
        # each optimizer's parameter groups and their learning rates before decay (a resumed state keeps the groups)
        self.base_lrs = [(self.opt_G, [cfg.lr, SEGMENTER_LR][:len(g_params)]), (self.opt_D, [cfg.lr])]
        self.base_lrs += [(self.opt_S, [SEGMENTER_LR])] if self.opt_S else []
        self.pools = {k: ImagePool(cfg.pool_size, self.gen) for k in (("A", "B", "L") if cfg.attention else ("A", "B"))}

    def _resume(self) -> None:
        try:
            state = torch.load(self.state_path, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - any unreadable state is reported, never executed
            raise UdaError(f"{self.state_path}: cannot resume from this checkpoint ({exc}); remove it to start over") from None
        saved, cfg = TranslatorConfig.from_dict(json.loads(state["config"])), self.cfg
        if saved.architecture() != cfg.architecture() or saved.variant != cfg.variant or saved.modality != cfg.modality:
            raise UdaError(f"{self.state_path}: belongs to a different translator ({saved.modality}, {saved.variant}); "
                           "use another --out or remove it")
        self.nets.load_state_dict(state["nets"])
        self.opt_G.load_state_dict(state["opt_G"])
        self.opt_D.load_state_dict(state["opt_D"])
        if self.opt_S is not None:
            self.opt_S.load_state_dict(state["opt_S"])
        for k, pool in self.pools.items():
            pool.load(state["pools"][k])
        self.gen.set_state(state["gen"])
        torch.set_rng_state(state["torch_rng"])
        self.start, self.s_pretrained = int(state["iteration"]), bool(state["s_pretrained"])

    def checkpoint(self, iteration: int) -> None:
        """The resumable state (tensors only) and the translator itself (safetensors + JSON)."""
        with atomic_path(self.state_path) as tmp:
            torch.save({
            "iteration": iteration, "config": json.dumps(asdict(self.cfg)), "nets": self.nets.state_dict(),
            "opt_G": self.opt_G.state_dict(), "opt_D": self.opt_D.state_dict(),
            "opt_S": self.opt_S.state_dict() if self.opt_S else {},
            "pools": {k: p.state() for k, p in self.pools.items()}, "gen": self.gen.get_state(),
            "torch_rng": torch.get_rng_state(), "s_pretrained": self.s_pretrained,
            }, tmp)
        extra, tensors = self.deliverable()
        extra.update(device=str(self.dev), amp=str(self.amp))
        _write_translator(self.out, self.cfg, self.nets, self.output_window, iteration, extra, tensors)

    def deliverable(self) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
        """What the translator file gets beside the generator: sidecar entries (how well S or TANQ's
        decoder finds organs) and tensors (none here)."""
        if self.cfg.attention:
            return {"s_dice": s_dice(self.nets, self.cfg, self.eval_a, self.eval_lab)}, {}
        if self.cfg.target_aware:
            return {"seg_decoder_dice": decoder_dice(self.nets, self.eval_a, self.eval_lab)}, {}
        return {}, {}

    def _batch(self, bank: SliceBank) -> tuple[torch.Tensor, torch.Tensor | None]:
        x, y = bank.sample(self.cfg.batch_size, self.cfg.size, self.gen)  # random crops, as the reference CycleGAN trains
        return self.space(x.to(self.dev)), (y.to(self.dev) if y is not None else None)

    def _autocast(self) -> Any:
        return torch.autocast(self.dev.type, dtype=self.amp, enabled=self.amp is not None)

    def pretrain_s(self, progress: Progress | None) -> None:
        """S before the translator, for the ``pretrained`` (CT as it is) and ``invariant`` (CT under
        random organ contrasts) regimes; then S is frozen."""
        cfg = self.cfg
        if not cfg.attention or cfg.s_regime == "joint":
            return
        if not self.s_pretrained:
            invariant = cfg.s_regime == "invariant"
            for it in range(cfg.s_pretrain_iterations):
                x, lab = self.bank_a.sample(S_PRETRAIN_BATCH if invariant else cfg.batch_size, cfg.size, self.gen)
                x = randomise_contrast(x, lab) if invariant else x
                with self._autocast():
                    loss = seg_loss(self.nets.S(x.to(self.dev)), lab.to(self.dev))
                _step(self.opt_S, loss)
                if it % 10 == 0:
                    emit(progress, "pretraining S", f"S={loss.item():.3f}", it, cfg.s_pretrain_iterations, "iterations")
            self.s_pretrained = True
        self.nets.S.requires_grad_(False)

    def set_learning_rates(self, iteration: int) -> None:
        for opt, base in self.base_lrs:
            for group, lr in zip(opt.param_groups, base):
                group["lr"] = lr * lr_factor(iteration, self.cfg)

    def generator_step(self, real_a: torch.Tensor, lab_a: torch.Tensor | None, real_b: torch.Tensor,
                       losses: dict[str, float]) -> dict[str, torch.Tensor]:
        """Both generators: LSGAN, cycle and identity losses, the local discriminator's on the
        attention-fused translation, S's and the segmentation head's where configured. Returns the
        translations (``fake_b``, ``fake_a``, and ``fused_fake`` for attention variants)."""
        cfg, nets, mse, l1 = self.cfg, self.nets, self.mse, self.l1
        for d in (nets.D_A, nets.D_B) + ((nets.D_L,) if cfg.attention else ()):
            d.requires_grad_(False)
        with self._autocast():
            fake_b, seg_logits = (nets.G_AB.forward_with_seg(real_a, lab_a) if cfg.target_aware
                                  else nets.G_AB.forward_with_seg(real_a))
            rec_a = nets.G_BA(fake_b)
            fake_a = nets.G_BA(real_b)
            rec_b = nets.G_AB(fake_a)
            pred_fb, pred_fa = nets.D_B(fake_b), nets.D_A(fake_a)
            loss_adv = mse(pred_fb, torch.ones_like(pred_fb)) + mse(pred_fa, torch.ones_like(pred_fa))
            loss_cyc = cfg.lambda_cycle * (l1(rec_a, real_a) + l1(rec_b, real_b))
            terms = {}
            if cfg.lambda_identity > 0:
                terms["identity"] = cfg.lambda_cycle * cfg.lambda_identity * (
                    l1(nets.G_AB(real_b), real_b) + l1(nets.G_BA(real_a), real_a))
            out = {"fake_b": fake_b, "fake_a": fake_a}
            if cfg.attention:
                out["fused_fake"], s_logits = _fused_for_local_d(nets, cfg, real_a, fake_b, grad=True)
                pred_l = nets.D_L(out["fused_fake"])
                terms["local"] = cfg.lambda_local * mse(pred_l, torch.ones_like(pred_l))
                if cfg.s_on_translation:  # G also learns through S: its translation must stay segmentable
                    terms["G_seg"] = cfg.lambda_seg * seg_loss(s_logits, lab_a)
            if cfg.target_aware:  # TANQ's segmentation decoder: cross-entropy
                terms["seg_decoder"] = cfg.lambda_seg * F.cross_entropy(seg_logits.float(), lab_a)
            elif seg_logits is not None:
                terms["seg_head"] = cfg.lambda_seg * seg_loss(seg_logits, lab_a)
            loss_g = loss_adv + loss_cyc
            for term in terms.values():  # in this order, as the losses were always summed
                loss_g = loss_g + term
        _step(self.opt_G, loss_g)
        losses.update({k: v.item() for k, v in terms.items()})
        losses.update(G_adv=loss_adv.item(), cycle=loss_cyc.item())
        return out

    def _d_loss(self, d: nn.Module, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
        pr, pf = d(real), d(fake.detach())
        return 0.5 * (self.mse(pr, torch.ones_like(pr)) + self.mse(pf, torch.zeros_like(pf)))

    def discriminator_step(self, real_a: torch.Tensor, real_b: torch.Tensor, fakes: dict[str, torch.Tensor],
                           losses: dict[str, float]) -> None:
        """D_A and D_B on pooled fakes; D_L (eq. 7) on the real target and a pooled translation, each
        fused with S's attention."""
        cfg, nets, pools = self.cfg, self.nets, self.pools
        nets.D_A.requires_grad_(True)
        nets.D_B.requires_grad_(True)
        with self._autocast():
            loss_da = self._d_loss(nets.D_A, real_a, pools["A"].query(fakes["fake_a"]))
            loss_db = self._d_loss(nets.D_B, real_b, pools["B"].query(fakes["fake_b"]))
            loss_d = loss_da + loss_db
            if cfg.attention:
                nets.D_L.requires_grad_(True)
                with torch.no_grad():  # eq. 7: real target and a pooled translation, each fused with S's attention on itself
                    real_l = fuse(real_b, attention_map(nets.S(real_b)), cfg.fusion)
                    if cfg.s_on_translation:  # S looks at the pooled translation itself
                        fake_l, _ = _fused_for_local_d(nets, cfg, real_a, pools["L"].query(fakes["fake_b"].detach()),
                                                       grad=False)
                    else:  # the attention belongs to the CT each translation came from: pool them fused
                        fake_l = pools["L"].query(fakes["fused_fake"].detach())
                loss_dl = cfg.lambda_local * self._d_loss(nets.D_L, real_l, fake_l)
                loss_d = loss_d + loss_dl
                losses["D_local"] = loss_dl.item()
        _step(self.opt_D, loss_d)
        losses.update(D_A=loss_da.item(), D_B=loss_db.item())

    def s_step(self, fake_b: torch.Tensor, lab_a: torch.Tensor | None, losses: dict[str, float]) -> None:
        """S, trained jointly on the translated CT (detached) with the CT labels, as the authors' code does."""
        if not (self.cfg.attention and self.cfg.s_regime == "joint"):
            return
        with self._autocast():
            loss_s = seg_loss(self.nets.S(fake_b.detach()), lab_a)
        _step(self.opt_S, loss_s)
        losses["S"] = loss_s.item()

    def progress_event(self, done: int, real_a: torch.Tensor, fake_b: torch.Tensor, losses: dict[str, float],
                       seconds: float) -> Event:
        """The iteration's event (data: ``losses``, ``seconds``); every ``preview_every`` iterations
        and at the end also S's (or TANQ's segmentation decoder's) Dice and ``preview``, an ``.npz`` of
        one slice's ``ct``, ``translated`` and ``attention`` (TANQ: one minus its decoder's background
        probability; zeros without S) in ``out/previews/``."""
        cfg = self.cfg
        data: dict[str, Any] = {"losses": losses, "seconds": round(seconds, 3)}
        if cfg.preview_every and (done % cfg.preview_every == 0 or done == cfg.iterations):
            if cfg.attention:  # S's attention where the local discriminator gets it from
                with torch.no_grad(), self._autocast():  # fake_b is in the autocast dtype
                    att = attention_map(self.nets.S(attention_input(cfg, real_a[:1], fake_b[:1])))
                data["s_dice"] = s_dice(self.nets, cfg, self.eval_a, self.eval_lab)
            elif cfg.target_aware:  # the organs its segmentation decoder finds in the CT
                with torch.no_grad(), self._autocast():
                    att = attention_map(self.nets.G_AB.segment(real_a[:1]))
                data["seg_decoder_dice"] = decoder_dice(self.nets, self.eval_a, self.eval_lab)
            else:
                att = torch.zeros_like(real_a[:1])
            ct, translated, attention = (t[0, 0].detach().float().cpu().numpy() for t in (real_a[:1], fake_b[:1], att))
            path = self.out / "previews" / f"preview_{done:07d}.npz"
            path.parent.mkdir(exist_ok=True)
            np.savez_compressed(path, ct=ct, translated=translated, attention=attention)
            data["preview"] = str(path)
        message = " ".join(f"{k}={v:.3f}" for k, v in losses.items())
        return Event(f"translator {cfg.variant}", message, done, cfg.iterations, "iterations", data)

    def run(self, progress: Progress | None = None, should_stop: StopFlag | None = None) -> Path:
        """Train from where the run stands to ``cfg.iterations``; returns ``out``. ``should_stop`` is
        polled each iteration: a stop saves a checkpoint and raises :class:`Cancelled`."""
        cfg = self.cfg
        self.pretrain_s(progress)
        t0 = time.perf_counter()
        for iteration in range(self.start, cfg.iterations):
            if should_stop is not None and should_stop():
                self.checkpoint(iteration)
                emit(progress, f"translator {cfg.variant}", "cancelled", iteration, cfg.iterations, "iterations")
                raise Cancelled(f"translator training cancelled at iteration {iteration}; its checkpoint is in "
                                f"{self.out}: run the same command again to resume")
            self.set_learning_rates(iteration)
            real_a, lab_a = self._batch(self.bank_a)
            real_b, _ = self._batch(self.bank_b)
            losses: dict[str, float] = {}
            fakes = self.generator_step(real_a, lab_a, real_b, losses)
            self.discriminator_step(real_a, real_b, fakes, losses)
            self.s_step(fakes["fake_b"], lab_a, losses)
            done = iteration + 1
            if progress is not None:
                progress(self.progress_event(done, real_a, fakes["fake_b"], losses, time.perf_counter() - t0))
            if done % cfg.checkpoint_every == 0 and done < cfg.iterations:
                self.checkpoint(done)
        self.checkpoint(cfg.iterations if cfg.iterations > self.start else self.start)
        return self.out


def train_translator(cfg: TranslatorConfig, ct_images: list[Path], ct_labels: list[Path] | None, target_images: list[Path],
                     out: str | Path, device: str | None = None, progress: Progress | None = None,
                     should_stop: StopFlag | None = None) -> Path:
    """Train (or resume) a translator into ``out``; returns ``out``.

    ``progress`` hears each iteration's event (:meth:`TranslatorTrainer.progress_event`).
    ``should_stop`` is polled each iteration: a stop saves a checkpoint and raises :class:`Cancelled`.
    """
    if cfg.disentangled:
        from napari_uda.translate.disentangled_training import DisentangledTrainer

        return DisentangledTrainer(cfg, ct_images, ct_labels, target_images, out, device).run(progress, should_stop)
    return TranslatorTrainer(cfg, ct_images, ct_labels, target_images, out, device).run(progress, should_stop)
