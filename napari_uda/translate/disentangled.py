"""DAR-UNet's content/style disentangled translation (after MUNIT): one content encoder shared by
CT and target, a style encoder and an AdaIN decoder per domain, a content discriminator; the target
styles are clustered with K-means, and each CT is translated once per cluster with one style of it.

Shapes are (batch, channels, height, width); images in [-1, 1]; a style code is (batch, STYLE_DIM).
"""
from __future__ import annotations

import zlib

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from napari_uda.translate.nets import ResnetBlock

STYLE_DIM = 8  # MUNIT's style code length
N_STYLE_CLUSTERS = 5  # DAR-UNet's n_k


class ContentEncoder(nn.Module):
    """c7s1-ngf, two stride-2 downsamplings, ``n_blocks`` residual blocks, all instance-normalised
    (instance normalisation removes the style): (B, 1, H, W) -> (B, 4 ngf, H/4, W/4)."""

    def __init__(self, ngf: int, n_blocks: int) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.ReflectionPad2d(3), nn.Conv2d(1, ngf, 7), nn.InstanceNorm2d(ngf), nn.ReLU(True)]
        ch = ngf
        for _ in range(2):
            layers += [nn.Conv2d(ch, ch * 2, 3, stride=2, padding=1), nn.InstanceNorm2d(ch * 2), nn.ReLU(True)]
            ch *= 2
        self.model = nn.Sequential(*layers, *[ResnetBlock(ch) for _ in range(n_blocks)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


class StyleEncoder(nn.Module):
    """c7s1-ngf, four stride-2 downsamplings (no normalisation: it would remove the style), global
    average pooling and a 1x1 convolution: (B, 1, H, W) -> (B, STYLE_DIM)."""

    def __init__(self, ngf: int) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.ReflectionPad2d(3), nn.Conv2d(1, ngf, 7), nn.ReLU(True)]
        ch = ngf
        for i in range(4):
            nxt = min(ch * 2, ngf * 4)
            layers += [nn.Conv2d(ch, nxt, 4, stride=2, padding=1), nn.ReLU(True)]
            ch = nxt
        self.model = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Conv2d(ch, STYLE_DIM, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)[:, :, 0, 0]


class AdaINBlock(nn.Module):
    """A residual block whose two normalisations are adaptive instance normalisation: the scale
    and shift of each channel come from the style (``params``: (B, 4 C): scale, shift, scale, shift)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.conv1 = nn.Sequential(nn.ReflectionPad2d(1), nn.Conv2d(dim, dim, 3))
        self.conv2 = nn.Sequential(nn.ReflectionPad2d(1), nn.Conv2d(dim, dim, 3))

    @staticmethod
    def adain(x: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
        return F.instance_norm(x) * (1 + scale[:, :, None, None]) + shift[:, :, None, None]

    def forward(self, x: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        g1, b1, g2, b2 = params.chunk(4, dim=1)
        h = F.relu(self.adain(self.conv1(x), g1, b1))
        return x + self.adain(self.conv2(h), g2, b2)


class StyleDecoder(nn.Module):
    """Content (B, 4 ngf, H/4, W/4) and style (B, STYLE_DIM) -> image (B, 1, H, W): an MLP maps the
    style to the AdaIN parameters of ``n_blocks`` residual blocks, then two upsamplings (nearest,
    5x5 conv, layer norm) and c7s1-1 with tanh, as MUNIT's decoder."""

    def __init__(self, ngf: int, n_blocks: int) -> None:
        super().__init__()
        ch = ngf * 4
        self.blocks = nn.ModuleList([AdaINBlock(ch) for _ in range(n_blocks)])
        self.mlp = nn.Sequential(nn.Linear(STYLE_DIM, 256), nn.ReLU(True), nn.Linear(256, 256), nn.ReLU(True),
                                 nn.Linear(256, 4 * ch * n_blocks))
        ups: list[nn.Module] = []
        for _ in range(2):
            ups += [nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(ch, ch // 2, 5, padding=2),
                    nn.GroupNorm(1, ch // 2), nn.ReLU(True)]
            ch //= 2
        self.ups = nn.Sequential(*ups, nn.ReflectionPad2d(3), nn.Conv2d(ch, 1, 7), nn.Tanh())

    def forward(self, content: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        params = self.mlp(style).chunk(len(self.blocks), dim=1)
        h = content
        for block, p in zip(self.blocks, params):
            h = block(h, p)
        return self.ups(h)


class ContentDiscriminator(nn.Module):
    """Tells CT content codes from target content codes (B, 4 ngf, H/4, W/4) -> patch scores: the
    shared encoder learns to make them alike."""

    def __init__(self, ngf: int) -> None:
        super().__init__()
        ch = ngf * 4
        self.model = nn.Sequential(nn.Conv2d(ch, ch, 3, stride=2, padding=1), nn.LeakyReLU(0.2, True),
                                   nn.Conv2d(ch, ch, 3, stride=1, padding=1), nn.LeakyReLU(0.2, True),
                                   nn.Conv2d(ch, 1, 1))

    def forward(self, content: torch.Tensor) -> torch.Tensor:
        return self.model(content)


class StyleTranslator(nn.Module):
    """The deliverable CT -> target generator: the content encoder and the target decoder, applied
    with a target style code (B, STYLE_DIM) or one code for the whole batch (STYLE_DIM,)."""

    def __init__(self, ngf: int, n_blocks: int) -> None:
        super().__init__()
        self.content = ContentEncoder(ngf, n_blocks)
        self.decoder = StyleDecoder(ngf, n_blocks)

    def forward(self, x: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        style = style.to(x.dtype).expand(x.shape[0], -1) if style.ndim == 1 else style
        return self.decoder(self.content(x), style)


def kaiming_init(net: nn.Module) -> None:
    """MUNIT's generator init: Kaiming-normal (fan in, ReLU) convolution and linear weights, zero
    biases. PyTorch's default init shrinks the activations layer by layer, so at the start a style
    barely changes the decoded image and the style encoder sees no signal to recover it from
    (measured: the style reconstruction stays at chance; benchmarks/RESULTS.md, DAR-UNet)."""
    for m in net.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def cluster_styles(codes: np.ndarray, n_clusters: int = N_STYLE_CLUSTERS, seed: int = 0) -> np.ndarray:
    """K-means (scikit-learn, 10 initialisations) of target style codes (N, STYLE_DIM); returns
    each code's cluster (N,) in 0..k-1, clusters numbered by size (0 the largest); fewer codes
    than clusters: one cluster per code."""
    from sklearn.cluster import KMeans

    k = min(n_clusters, len(codes))
    raw = KMeans(n_clusters=k, n_init=10, random_state=seed).fit_predict(codes.astype(np.float64))
    order = np.argsort(-np.bincount(raw, minlength=k), kind="stable")
    return np.argsort(order)[raw].astype(np.int64)


def volume_styles(codes: np.ndarray, clusters: np.ndarray, case: str, seed: int = 0) -> list[np.ndarray]:
    """One style code per cluster for the CT ``case``: a code drawn from the cluster's members by a
    generator seeded by ``seed`` and the case name, so a volume gets the same styles on every run
    and every slice of it the same style of each cluster. Returns a (STYLE_DIM,) code per cluster."""
    rng = np.random.default_rng([seed, zlib.crc32(case.encode())])
    return [codes[rng.choice(np.flatnonzero(clusters == k))] for k in range(int(clusters.max()) + 1)]
