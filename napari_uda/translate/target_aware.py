"""TANQ's target-aware generator: CT -> target translation normalised region by region, the regions
being the organs of the source label map.

- Encoder: region-wise instance normalisation (each organ's features, and the background's, are
  normalised by their own mean and variance, then one learned affine), so one organ's contrast does
  not set another's.
- Decoder: region-aware adaptive instance normalisation (region-wise normalisation, then a scale and
  shift learned per organ class): the decoder learns how each organ looks in the target.
- A segmentation decoder on the bottleneck of a mask-free pass (plain instance normalisation) gives
  organ logits, trained with cross-entropy on the CT labels; where no labels are given (a preview,
  the cycle's fake CT) its argmax is the region map.

Shapes are (batch, channels, height, width); images in [-1, 1]; label maps (batch, height, width)
of organ class indices (:data:`napari_uda.core.organs.N_CLASSES` classes).
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from napari_uda.core.organs import N_CLASSES
from napari_uda.translate.nets import ResnetBlock

EPS = 1e-5


def region_weights(labels: torch.Tensor, size: tuple[int, int], n_regions: int = N_CLASSES) -> torch.Tensor:
    """Soft region memberships (B, R, h, w) of a label map (B, H, W) at a feature map's size: the
    one-hot map area-averaged, so each pixel's memberships sum to 1."""
    onehot = F.one_hot(labels.long().clamp(0, n_regions - 1), n_regions).permute(0, 3, 1, 2).float()
    return F.interpolate(onehot, size=size, mode="area") if tuple(onehot.shape[-2:]) != tuple(size) else onehot


def region_normalise(x: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Instance normalisation within each region: every pixel minus its regions' mean, over their
    standard deviation (memberships ``weights`` (B, R, H, W) mix the statistics at region borders).
    With one region covering the image this is ``InstanceNorm2d`` (no affine)."""
    x32, w = x.float(), weights.float()
    n = w.sum((2, 3)).clamp(min=EPS)  # (B, R)
    mean = torch.einsum("bchw,brhw->bcr", x32, w) / n[:, None]
    var = (torch.einsum("bchw,brhw->bcr", x32 * x32, w) / n[:, None] - mean * mean).clamp(min=0.0)
    pixel_mean = torch.einsum("bcr,brhw->bchw", mean, w)
    pixel_var = torch.einsum("bcr,brhw->bchw", var, w)
    return ((x32 - pixel_mean) / torch.sqrt(pixel_var + EPS)).to(x.dtype)


class RegionNorm(nn.Module):
    """Encoder normalisation: region-wise instance normalisation and one affine per channel; without
    a region map, plain instance normalisation with the same affine."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        y = F.instance_norm(x) if labels is None else region_normalise(x, region_weights(labels, x.shape[-2:]))
        return y * self.weight[:, None, None] + self.bias[:, None, None]


class RegionAdaIN(nn.Module):
    """Decoder normalisation: region-wise instance normalisation, then the scale and shift of each
    pixel's organ class (learned per class: the target appearance of that organ)."""

    def __init__(self, channels: int, n_regions: int = N_CLASSES) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.ones(n_regions, channels))
        self.beta = nn.Parameter(torch.zeros(n_regions, channels))

    def forward(self, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        w = region_weights(labels, x.shape[-2:], self.gamma.shape[0])
        gamma = torch.einsum("rc,brhw->bchw", self.gamma, w)
        beta = torch.einsum("rc,brhw->bchw", self.beta, w)
        return (region_normalise(x, w) * gamma + beta).to(x.dtype)


class TargetAwareGenerator(nn.Module):
    """The CycleGAN ResNet generator (c7s1-ngf, two stride-2 downsamplings, ``n_blocks`` residual
    blocks, two upsamplings, c7s1-1 with tanh) with :class:`RegionNorm` in the encoder,
    :class:`RegionAdaIN` in the decoder, and a segmentation decoder (two upsamplings and a 1x1
    head, :data:`N_CLASSES` logits) on the bottleneck of the mask-free pass."""

    def __init__(self, in_ch: int = 1, out_ch: int = 1, ngf: int = 64, n_blocks: int = 9) -> None:
        super().__init__()
        chans = [ngf, ngf * 2, ngf * 4]
        self.stem = nn.Sequential(nn.ReflectionPad2d(3), nn.Conv2d(in_ch, ngf, 7))
        self.downs = nn.ModuleList([nn.Conv2d(chans[i], chans[i + 1], 3, stride=2, padding=1) for i in range(2)])
        self.enc_norms = nn.ModuleList([RegionNorm(c) for c in chans])
        self.blocks = nn.Sequential(*[ResnetBlock(chans[2]) for _ in range(n_blocks)])
        self.ups = nn.ModuleList([nn.ConvTranspose2d(chans[2 - i], chans[1 - i], 3, stride=2, padding=1,
                                                     output_padding=1) for i in range(2)])
        self.dec_norms = nn.ModuleList([RegionAdaIN(chans[1 - i]) for i in range(2)])
        self.to_image = nn.Sequential(nn.ReflectionPad2d(3), nn.Conv2d(ngf, out_ch, 7), nn.Tanh())
        seg: list[nn.Module] = []
        for i in range(2):
            seg += [nn.ConvTranspose2d(chans[2 - i], chans[1 - i], 3, stride=2, padding=1, output_padding=1),
                    nn.InstanceNorm2d(chans[1 - i]), nn.ReLU(True)]
        self.seg_decoder = nn.Sequential(*seg, nn.Conv2d(ngf, N_CLASSES, 1))

    def encode(self, x: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        """Bottleneck features (B, 4 ngf, H/4, W/4), region-normalised by ``labels`` (B, H, W) if given."""
        h = F.relu(self.enc_norms[0](self.stem(x), labels))
        for down, norm in zip(self.downs, self.enc_norms[1:]):
            h = F.relu(norm(down(h), labels))
        return self.blocks(h)

    def segment(self, x: torch.Tensor) -> torch.Tensor:
        """Organ logits (B, N_CLASSES, H, W) of the segmentation decoder (mask-free pass)."""
        return self.seg_decoder(self.encode(x, None))

    def translate(self, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The translation (B, out_ch, H, W) of ``x`` with region map ``labels`` (B, H, W)."""
        h = self.encode(x, labels)
        for up, norm in zip(self.ups, self.dec_norms):
            h = F.relu(norm(up(h), labels))
        return self.to_image(h)

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Translate ``x``; without ``labels`` the segmentation decoder's argmax is the region map."""
        return self.translate(x, self.segment(x).argmax(1) if labels is None else labels)

    def forward_with_seg(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(translation, organ logits of the segmentation decoder) for training."""
        logits = self.segment(x)
        return self.translate(x, logits.argmax(1) if labels is None else labels), logits
