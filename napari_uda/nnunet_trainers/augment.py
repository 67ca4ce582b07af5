"""Strong intensity augmentation for a source-only segmenter: a random, generally non-monotone
remapping of intensities (the "non-linear transformations" of both FLARE papers), so that a model
trained on CT alone cannot rely on CT's organ contrast and has to use shape and context.

:func:`remap_intensities` is plain torch and tested on its own; :class:`IntensityRemapTransform`
wraps it for nnU-Net's batchgeneratorsv2 pipeline.
"""
from __future__ import annotations

import torch
from batchgeneratorsv2.transforms.base.basic_transform import ImageOnlyTransform


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
