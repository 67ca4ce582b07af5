"""Strong intensity augmentation for the segmenters: a random contrast for each labelled organ
(the label-driven randomisation of SynthSeg, Billot et al. 2023) followed by a random, generally
non-monotone remapping of all intensities (the "non-linear transformations" of both FLARE papers),
so that a model trained on CT cannot rely on CT's organ contrast and has to use shape and context.

Why both: the global remap alone cannot reorder the organs. In CT the soft tissues fill a tenth of
the range that air and bone set, so a curve with knots spread over the range is nearly linear over
all organs and keeps CT's order (kidneys and aorta brightest), whereas T2-weighted MRI has the liver
dark, the vessels black and the gallbladder brightest. The organ labels are known during training,
so each organ can be given its own random brightness.

:func:`remap_intensities` and :func:`shift_organ_contrast` are plain torch and tested on their own;
:class:`IntensityRemapTransform` and :class:`OrganContrastTransform` wrap them for nnU-Net's
batchgeneratorsv2 pipeline.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from batchgeneratorsv2.transforms.base.basic_transform import BasicTransform, ImageOnlyTransform


def remap_intensities(x: torch.Tensor, knots_y: torch.Tensor) -> torch.Tensor:
    """Map ``x`` through the piecewise-linear curve through ``(i / (K-1), knots_y[i])``, i = 0..K-1,
    applied to ``x`` scaled to [0, 1] by its own range, then restore ``x``'s mean and std.

    x: any shape, float. knots_y: (K,) with K >= 2, values in [0, 1]. Returns a tensor like ``x``.
    A constant ``x`` is returned unchanged."""
    lo, hi = torch.aminmax(x)
    if float(hi - lo) <= 0:
        return x.clone()
    k = knots_y.numel()
    u = (x - lo) / (hi - lo) * (k - 1)
    i = u.floor().clamp(0, k - 2).long()
    frac = u - i
    y = knots_y[i] * (1 - frac) + knots_y[i + 1] * frac
    std = y.std()
    if float(std) <= 0:
        return torch.full_like(x, float(x.mean()))
    return (y - y.mean()) / std * x.std() + x.mean()


def gaussian_smooth(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """``x`` (any number of spatial dims) convolved with a Gaussian of ``sigma`` voxels along every
    axis, edges replicated; ``sigma`` <= 0 returns ``x`` unchanged."""
    if sigma <= 0:
        return x
    radius = max(1, int(3 * sigma + 0.5))  # scipy.ndimage's truncate=3
    t = torch.arange(-radius, radius + 1, dtype=x.dtype)
    kernel = torch.exp(-0.5 * (t / sigma) ** 2)
    kernel = (kernel / kernel.sum()).view(1, 1, -1)
    out = x
    for axis in range(x.ndim):
        moved = out.movedim(axis, -1)
        flat = moved.reshape(-1, 1, moved.shape[-1])
        flat = F.conv1d(F.pad(flat, (radius, radius), mode="replicate"), kernel)
        out = flat.reshape(moved.shape).movedim(-1, axis)
    return out


def shift_organ_contrast(x: torch.Tensor, seg: torch.Tensor, targets: dict[int, float], sigma: float = 0.0) -> torch.Tensor:
    """Move the mean intensity of each organ ``l`` in ``targets`` to ``targets[l]``, keeping its
    texture (the deviations from its mean). The per-voxel offsets are smoothed by a Gaussian of
    ``sigma`` voxels, as partial volume blurs an organ's edge in a real image.

    x: (X, Y[, Z]) float image. seg: integer labels of the same shape (values < 1 and labels not in
    ``targets`` are left alone). Returns a new tensor like ``x``."""
    offset = torch.zeros_like(x)
    for label, target in targets.items():
        inside = seg == label
        if bool(inside.any()):
            offset[inside] = target - x[inside].mean()
    return x + gaussian_smooth(offset, sigma)


class OrganContrastTransform(BasicTransform):
    """With probability ``p`` per sample, give every labelled organ in the patch a random mean
    intensity, uniform between the 1st and 99th percentile of the channel (so as dark as air or
    as bright as bone). The segmentation is not changed."""

    def __init__(self, p: float = 0.8, sigma: float = 0.7) -> None:
        super().__init__()
        self.p, self.sigma = p, sigma

    def get_parameters(self, **data_dict: torch.Tensor) -> dict:
        if float(torch.rand(())) >= self.p:
            return {"targets": None}
        seg = data_dict["segmentation"][0]
        labels = [int(v) for v in torch.unique(seg) if v >= 1]
        targets = []
        for channel in data_dict["image"]:
            lo, hi = torch.quantile(channel.reshape(-1)[:: max(1, channel.numel() // 65536)].float(),
                                    torch.tensor([0.01, 0.99]))
            targets.append({l: float(lo + (hi - lo) * torch.rand(())) for l in labels})
        return {"targets": targets, "seg": seg}

    def _apply_to_image(self, img: torch.Tensor, **params) -> torch.Tensor:
        if params["targets"] is None:
            return img
        for c, targets in enumerate(params["targets"]):
            img[c] = shift_organ_contrast(img[c], params["seg"], targets, self.sigma)
        return img

    def _apply_to_segmentation(self, segmentation: torch.Tensor, **params) -> torch.Tensor:
        return segmentation


class IntensityRemapTransform(ImageOnlyTransform):
    """With probability ``p`` per channel, remap intensities through a random curve of ``knots``
    control points (uniform in [0, 1]); with probability ``p_invert`` the curve is instead the
    identity turned upside down (an inverted image). Mean and std of each channel are kept."""

    def __init__(self, p: float = 0.8, p_invert: float = 0.15, knots: int = 6) -> None:
        super().__init__()
        self.p, self.p_invert, self.knots = p, p_invert, knots

    def get_parameters(self, **data_dict: torch.Tensor) -> dict:
        curves = []
        for _ in range(data_dict["image"].shape[0]):
            r = float(torch.rand(()))
            if r < self.p_invert:
                curves.append(torch.linspace(1.0, 0.0, self.knots))
            elif r < self.p:
                curves.append(torch.rand(self.knots))
            else:
                curves.append(None)
        return {"curves": curves}

    def _apply_to_image(self, img: torch.Tensor, **params) -> torch.Tensor:
        for c, curve in enumerate(params["curves"]):
            if curve is not None:
                img[c] = remap_intensities(img[c], curve.to(img.dtype))
        return img
