"""CT-to-target translators: CycleGAN, Organ Attention CycleGAN, Sobel-space (ASIT) CycleGAN and
target-aware (TANQ) CycleGAN.

ASIT translates between Sobel edge maps: both domains are mapped into Sobel space before the
generators see them, the translation stays there (in [-1, 1]), and the segmenter later reads
Sobel maps of the real targets (:func:`sobel_volume`). TANQ's generator normalises region by
region along the CT's organ label map (:mod:`napari_uda.translate.target_aware`): given with the CT,
or predicted by its own segmentation decoder.

One translator per target modality. Training is resumable (``train_state.pt``, loaded
with ``weights_only=True``), checkpoints every ``checkpoint_every`` iterations and on
cancel; the deliverable is ``translator.safetensors`` (generator CT->target, and S for
attention variants) with the JSON sidecar ``translator.json``. Loading never runs code
from a file.
"""
from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import nn
from torch.nn import functional as F

from napari_uda.core.choices import (
    DISENTANGLED_VARIANTS,
    FUSIONS,
    S_REGIMES,
    SOBEL_SPACE_VARIANTS,
    TARGET_AWARE_VARIANTS,
    VARIANTS,
)
from napari_uda.core.device import amp_dtype, pick_device
from napari_uda.core.errors import UdaError
from napari_uda.core.intensity import CT_WINDOW, from_unit_range, to_unit_range
from napari_uda.core.io import Volume, require_finite
from napari_uda.core.jobs import Progress, StopFlag, check_stop, emit
from napari_uda.core.modalities import get_modality
from napari_uda.core.organs import N_CLASSES
from napari_uda.core.orientation import from_canonical, to_canonical
from napari_uda.translate.disentangled import N_STYLE_CLUSTERS, STYLE_DIM, StyleTranslator
from napari_uda.translate.nets import ResnetGenerator, UNet2D, attention_map, sobel
from napari_uda.translate.slices import inplane_spacing, resize_slices, working_size
from napari_uda.translate.target_aware import TargetAwareGenerator

WEIGHTS = "translator.safetensors"
SIDECAR = "translator.json"
STATE = "train_state.pt"
FORMAT = "napari-uda-translator"
FORMAT_VERSION = 1



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
        if self.variant == "sobel":
            raise UdaError("the 'sobel' variant (Sobel input only) was replaced by 'asit' (translation, losses and "
                           "segmentation in Sobel space): retrain with --variant asit")
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
        if (self.target_aware or self.disentangled) and (self.seg_head or self.skips):
            raise UdaError(f"{self.variant} has its own generator: leave seg_head and skips off")

    @property
    def attention(self) -> bool:
        return self.variant == "organ-attention"

    @property
    def sobel_space(self) -> bool:
        """Whether translation (and the segmenter after it) works on Sobel edge maps (ASIT)."""
        return self.variant in SOBEL_SPACE_VARIANTS

    @property
    def target_aware(self) -> bool:
        """Whether the generator normalises by organ regions of the CT's label map (TANQ)."""
        return self.variant in TARGET_AWARE_VARIANTS

    @property
    def disentangled(self) -> bool:
        """Whether translation is content/style disentangled, in one style per target style cluster (DAR-UNet)."""
        return self.variant in DISENTANGLED_VARIANTS

    @property
    def s_on_translation(self) -> bool:
        """Whether S looks at the translation (and G learns through it) rather than at the CT."""
        return self.s_regime in ("joint", "invariant")

    def architecture(self) -> dict[str, Any]:
        generator = "target-aware" if self.target_aware else "disentangled" if self.disentangled else "resnet"
        styles = {"style_dim": STYLE_DIM, "style_clusters": N_STYLE_CLUSTERS} if self.disentangled else {}
        return {**styles, "generator": generator, "ngf": self.ngf, "n_blocks": self.n_blocks, "size": self.size,
                "sobel_input": self.sobel_space, "seg_head": self.seg_head, "skips": self.skips,
                "segmenter": {"type": "unet2d", "base": self.s_base, "classes": N_CLASSES} if self.attention else None}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TranslatorConfig:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


def build_generator(cfg: TranslatorConfig) -> ResnetGenerator | TargetAwareGenerator | StyleTranslator:
    """The CT -> target generator ``cfg`` describes (untrained)."""
    if cfg.target_aware:
        return TargetAwareGenerator(1, 1, cfg.ngf, cfg.n_blocks)
    if cfg.disentangled:
        return StyleTranslator(cfg.ngf, cfg.n_blocks)
    return ResnetGenerator(1, 1, cfg.ngf, cfg.n_blocks, seg_classes=N_CLASSES if cfg.seg_head else 0, skips=cfg.skips)


def fuse(image: torch.Tensor, att: torch.Tensor, mode: str) -> torch.Tensor:
    """Fuse a translated image with its organ attention for the local discriminator."""
    if mode == "additive":
        return image + att
    if mode == "multiplicative":
        return image * (1.0 + att)
    return torch.cat([image, att], dim=1)


@dataclass
class Translator:
    """A trained translator ready to apply: generator CT->target, S for attention variants, and for
    DAR the style code (N, STYLE_DIM) of each target training slice with its cluster (N,)."""

    config: TranslatorConfig
    generator: ResnetGenerator | TargetAwareGenerator | StyleTranslator
    segmenter: UNet2D | None
    output_window: tuple[float, float]
    device: torch.device
    meta: dict[str, Any] = field(default_factory=dict)
    styles: tuple[np.ndarray, np.ndarray] | None = None

    @property
    def modality(self) -> str:
        return self.config.modality


def _same_image(t: torch.Tensor) -> torch.Tensor:
    return t


def to_space(cfg: TranslatorConfig) -> Callable[[torch.Tensor], torch.Tensor]:
    """The space a translator works in, as a map of (N, 1, H, W) slices in [-1, 1] at the working
    pixel size: their Sobel edge maps for ASIT, the images themselves otherwise."""
    return sobel if cfg.sobel_space else _same_image


def attention_input(cfg: TranslatorConfig, ct: torch.Tensor, translated: torch.Tensor) -> torch.Tensor:
    """What S looks at to make the organ attention of a translation: the translation itself when S
    is trained jointly on translations (the FLARE 2025 release), the CT for a pretrained CT
    segmenter (FLARE 2024's ``A = 1 - softmax(S(x_ct))[:, 0]``)."""
    return translated if cfg.s_on_translation else ct


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
    generator = build_generator(cfg)
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
    styles = _style_bank(tensors, weights_path) if cfg.disentangled else None
    return Translator(cfg, generator, segmenter, (float(lo), float(hi)), dev, meta, styles)


def _style_bank(tensors: dict[str, torch.Tensor], weights_path: Path) -> tuple[np.ndarray, np.ndarray]:
    """A DAR translator's target style codes (N, STYLE_DIM) and their clusters (N,), checked."""
    codes, clusters = tensors.get("styles.codes"), tensors.get("styles.clusters")
    if codes is None or clusters is None or codes.ndim != 2 or codes.shape[1] != STYLE_DIM or len(clusters) != len(codes):
        raise UdaError(f"{weights_path}: no valid style bank (styles.codes, styles.clusters) for this dar translator")
    return codes.float().numpy(), clusters.long().numpy()


def _labels_in_canonical(labels: Volume, like: Volume) -> torch.Tensor:
    """A CT's label map (``labels``, on the grid of the CT ``like``) as (Z, H, W) int64 class indices
    in the canonical orientation."""
    if labels.shape != like.shape or not labels.geometry.matches(like.geometry):
        raise UdaError(f"the label map lies on grid {labels.geometry}, the CT on {like.geometry}: they must be on one grid")
    lab = to_canonical(labels).array
    return torch.from_numpy(np.clip(np.rint(lab), 0, N_CLASSES - 1).astype(np.int64))


@torch.no_grad()
def translate_volume(tr: Translator, volume: Volume, batch: int = 8,
                     should_stop: StopFlag | None = None,
                     progress: Progress | None = None,
                     labels: Volume | None = None, style: np.ndarray | None = None) -> tuple[Volume, Volume | None]:
    """Translate a CT volume slice by slice; returns (translated, attention or None), both with
    the CT's exact geometry. The translation is mapped to the target's intensity window;
    attention is computed by S at the image's own in-plane size. Slices are axial slices of the
    canonical orientation whatever the file's axes. ``labels``: the CT's organ label map, the
    regions of a target-aware (TANQ) generator (without it, its segmentation decoder's); other
    generators ignore it. ``style``: the target style code (STYLE_DIM,) a DAR translator renders
    every slice in (:func:`translate_styles` gives one per cluster). ``progress`` hears a
    ``translate`` event (slices) after each batch."""
    require_finite(volume, "the CT volume")
    if tr.config.disentangled and style is None:
        raise UdaError("a dar translator translates in a style: give one (translate_styles gives one per style cluster)")
    code = torch.as_tensor(style, dtype=torch.float32, device=tr.device) if style is not None else None
    canon = to_canonical(volume)
    a = canon.array.astype(np.float32)
    z, h, w = a.shape
    spacing = tr.config.spacing_mm or inplane_spacing(canon)
    work = working_size((h, w), canon.spacing[1:], spacing)  # (h, w) when the CT has the working pixel size
    unit = torch.from_numpy(to_unit_range(a, CT_WINDOW))[:, None]
    regions = _labels_in_canonical(labels, volume) if labels is not None and tr.config.target_aware else None
    out = np.empty_like(a)
    att = np.empty_like(a) if tr.segmenter is not None else None
    amp = amp_dtype(tr.device)
    src = to_space(tr.config)
    for z0 in range(0, z, batch):
        check_stop(should_stop, "translation")
        x = unit[z0:z0 + batch].to(tr.device)
        lab = None if regions is None else resize_slices(regions[z0:z0 + batch, None], work, labels=True)[:, 0]
        with torch.autocast(tr.device.type, dtype=amp, enabled=amp is not None):
            fake = _generate(tr.generator, src(resize_slices(x, work)), lab.to(tr.device) if lab is not None else None,
                             code)
            y = resize_slices(fake.float(), (h, w))
            if tr.segmenter is not None:  # S at the image's own size, on what it was trained to look at
                seen = attention_input(tr.config, x, y)
                att[z0:z0 + batch] = attention_map(tr.segmenter(seen))[:, 0].float().cpu().numpy()
        out[z0:z0 + batch] = y[:, 0].cpu().numpy()
        emit(progress, "translate", "", min(z0 + batch, z), z, "slices")
    mod = tr.config.modality
    translated = from_canonical(canon.with_array(from_unit_range(out, tr.output_window), mod), volume.geometry)
    return translated, (from_canonical(canon.with_array(att, mod), volume.geometry) if att is not None else None)


def _generate(generator: nn.Module, x: torch.Tensor, labels: torch.Tensor | None = None,
              style: torch.Tensor | None = None, multiple: int = 4) -> torch.Tensor:
    """The fully convolutional generator on whole (N, 1, H, W) slices of any size: reflect-padded
    to a multiple of its down-sampling, then cropped back (nothing is stretched). ``labels``
    (N, H, W), padded alike, go to a target-aware generator, ``style`` (STYLE_DIM,) to a DAR one."""
    h, w = x.shape[-2:]
    ph, pw = -h % multiple, -w % multiple
    if ph or pw:
        mode = "reflect" if min(h, w) > max(ph, pw) else "replicate"
        x = F.pad(x, (0, pw, 0, ph), mode=mode)
        if labels is not None:
            labels = F.pad(labels[:, None].float(), (0, pw, 0, ph), mode=mode)[:, 0].long()
    if isinstance(generator, TargetAwareGenerator):
        return generator(x, labels)[..., :h, :w]
    if isinstance(generator, StyleTranslator):
        return generator(x, style)[..., :h, :w]
    return generator(x)[..., :h, :w]


def translate_slices(tr: Translator, ct_slices: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
    """Translate normalised (N, 1, size, size) CT slices to normalised target slices (in Sobel space
    for ASIT; with the (N, size, size) organ map ``labels`` as TANQ's regions; DAR in the style of
    its largest cluster's first slice), for evaluation."""
    src = to_space(tr.config)
    style = torch.from_numpy(tr.styles[0][tr.styles[1] == 0][0]).to(tr.device) if tr.styles is not None else None
    with torch.no_grad():
        lab = labels.to(tr.device) if labels is not None else None
        return _generate(tr.generator, src(ct_slices.to(tr.device)), lab, style).float().cpu()


def translate_styles(tr: Translator, volume: Volume, case: str, **kwargs: Any) -> list[Volume]:
    """A DAR translator's translations of the CT ``volume`` (named ``case``), one per target style
    cluster, each in one style drawn from that cluster for this case (the same on every run and for
    every slice: :func:`~napari_uda.translate.disentangled.volume_styles`); ``kwargs`` go to
    :func:`translate_volume`."""
    from napari_uda.translate.disentangled import volume_styles

    if tr.styles is None:
        raise UdaError(f"a {tr.config.variant} translator has no style clusters; translate_volume translates with it")
    return [translate_volume(tr, volume, style=code, **kwargs)[0]
            for code in volume_styles(*tr.styles, case, tr.config.seed)]


def sobel_volume(volume: Volume, modality: str, spacing_mm: float) -> Volume:
    """An MRI/PET volume of ``modality`` in ASIT's Sobel space, as its segmenter reads it: each axial
    slice of the canonical orientation normalised by the modality's intensity rule (as the
    translator's training slices were), resampled to the
    translator's working pixel size ``spacing_mm``, Sobel edge map (in [-1, 1]), resampled back;
    the volume's own geometry (float32)."""
    from napari_uda.core.intensity import intensity_window

    require_finite(volume, "the volume")
    mod = get_modality(modality)
    canon = to_canonical(volume)
    a = canon.array.astype(np.float32)
    work = working_size(a.shape[1:], canon.spacing[1:], spacing_mm)
    x = torch.from_numpy(to_unit_range(a, intensity_window(a, mod)))[:, None]
    edges = resize_slices(sobel(resize_slices(x, work)), a.shape[1:])[:, 0].numpy()
    return from_canonical(canon.with_array(edges, mod.key), volume.geometry)
