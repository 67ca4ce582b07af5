"""2D networks of the translators: the reference CycleGAN ResNet generator, the 70x70
PatchGAN discriminator, a small U-Net segmenter S for organ attention, and a Sobel filter.

Shapes are (batch, channels, height, width); images are in [-1, 1].
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class ResnetBlock(nn.Module):
    """Reflection-padded conv-norm-ReLU-conv-norm with a skip connection."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.block = nn.Sequential(
            nn.ReflectionPad2d(1), nn.Conv2d(dim, dim, 3), nn.InstanceNorm2d(dim), nn.ReLU(True),
            nn.ReflectionPad2d(1), nn.Conv2d(dim, dim, 3), nn.InstanceNorm2d(dim),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.block(x)


class ResnetGenerator(nn.Module):
    """The CycleGAN generator: c7s1-ngf, two stride-2 downsamplings, ``n_blocks`` residual
    blocks, two transposed-conv upsamplings, c7s1-out with tanh. With ``seg_classes`` a
    1x1 segmentation head reads the last feature map (the FLARE 2025 variant). With ``skips``
    each upsampling's output gets the encoder's feature map of the same resolution added (no new
    weights: U-Net-like skips that hand the decoder the full-resolution detail the bottleneck at
    1/4 size loses)."""

    def __init__(self, in_ch: int = 1, out_ch: int = 1, ngf: int = 64, n_blocks: int = 9, seg_classes: int = 0,
                 skips: bool = False) -> None:
        super().__init__()
        self.skips = skips
        layers: list[nn.Module] = [nn.ReflectionPad2d(3), nn.Conv2d(in_ch, ngf, 7), nn.InstanceNorm2d(ngf), nn.ReLU(True)]
        ch = ngf
        for _ in range(2):
            layers += [nn.Conv2d(ch, ch * 2, 3, stride=2, padding=1), nn.InstanceNorm2d(ch * 2), nn.ReLU(True)]
            ch *= 2
        layers += [ResnetBlock(ch) for _ in range(n_blocks)]
        for _ in range(2):
            layers += [nn.ConvTranspose2d(ch, ch // 2, 3, stride=2, padding=1, output_padding=1),
                       nn.InstanceNorm2d(ch // 2), nn.ReLU(True)]
            ch //= 2
        self.features = nn.Sequential(*layers)
        self.to_image = nn.Sequential(nn.ReflectionPad2d(3), nn.Conv2d(ch, out_ch, 7), nn.Tanh())
        self.seg_head = nn.Conv2d(ch, seg_classes, 1) if seg_classes else None

    def _features(self, x: torch.Tensor) -> torch.Tensor:
        if not self.skips:
            return self.features(x)
        f = self.features  # stem (4 layers), two downsamplings and two upsamplings (3 each), the blocks between
        f0 = f[:4](x)  # full resolution
        f1 = f[4:7](f0)  # 1/2 resolution
        return f[-3:](f[-6:-3](f[7:-6](f1)) + f1) + f0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.to_image(self._features(x))

    def forward_with_seg(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        f = self._features(x)
        return self.to_image(f), (self.seg_head(f) if self.seg_head is not None else None)


class PatchDiscriminator(nn.Module):
    """PatchGAN: ``n_layers`` stride-2 convs (70x70 receptive field for 3), LeakyReLU 0.2."""

    def __init__(self, in_ch: int = 1, ndf: int = 64, n_layers: int = 3) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(in_ch, ndf, 4, stride=2, padding=1), nn.LeakyReLU(0.2, True)]
        mult = 1
        for n in range(1, n_layers):
            prev, mult = mult, min(2**n, 8)
            layers += [nn.Conv2d(ndf * prev, ndf * mult, 4, stride=2, padding=1), nn.InstanceNorm2d(ndf * mult),
                       nn.LeakyReLU(0.2, True)]
        prev, mult = mult, min(2**n_layers, 8)
        layers += [nn.Conv2d(ndf * prev, ndf * mult, 4, stride=1, padding=1), nn.InstanceNorm2d(ndf * mult),
                   nn.LeakyReLU(0.2, True), nn.Conv2d(ndf * mult, 1, 4, stride=1, padding=1)]
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


def _conv_block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.InstanceNorm2d(cout, affine=True), nn.LeakyReLU(0.01, True),
                         nn.Conv2d(cout, cout, 3, padding=1), nn.InstanceNorm2d(cout, affine=True), nn.LeakyReLU(0.01, True))


class UNet2D(nn.Module):
    """A small 2D U-Net (``depth`` poolings) giving class logits: the organ-attention segmenter S."""

    def __init__(self, in_ch: int = 1, n_classes: int = 14, base: int = 16, depth: int = 3) -> None:
        super().__init__()
        chans = [base * 2**i for i in range(depth + 1)]
        self.down = nn.ModuleList([_conv_block(in_ch, chans[0])] + [_conv_block(chans[i], chans[i + 1]) for i in range(depth)])
        self.up = nn.ModuleList([nn.ConvTranspose2d(chans[i + 1], chans[i], 2, stride=2) for i in reversed(range(depth))])
        self.dec = nn.ModuleList([_conv_block(2 * chans[i], chans[i]) for i in reversed(range(depth))])
        self.head = nn.Conv2d(chans[0], n_classes, 1)
        self.depth = depth

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        m = 2**self.depth
        x = F.pad(x, (0, (-w) % m, 0, (-h) % m), mode="replicate")
        skips = []
        for i, block in enumerate(self.down):
            x = block(x if i == 0 else F.max_pool2d(x, 2))
            skips.append(x)
        x = skips.pop()
        for up, dec in zip(self.up, self.dec):
            x = dec(torch.cat([up(x), skips.pop()], dim=1))
        return self.head(x)[..., :h, :w]


def attention_map(seg_logits: torch.Tensor) -> torch.Tensor:
    """Organ attention ``A = 1 - softmax(logits)[:, 0]`` as (B, 1, H, W), in [0, 1]."""
    return 1.0 - torch.softmax(seg_logits.float(), dim=1)[:, :1]


def sobel(x: torch.Tensor) -> torch.Tensor:
    """Sobel gradient magnitude of (B, 1, H, W) images in [-1, 1], mapped back to [-1, 1]."""
    kx = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]], device=x.device, dtype=x.dtype)
    k = torch.stack([kx, kx.t()])[:, None]
    g = F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), k)
    mag = torch.sqrt(g.pow(2).sum(dim=1, keepdim=True) + 1e-8)
    return torch.clamp(mag / 4.0, 0.0, 2.0) - 1.0  # |grad| <= 8 for inputs in [-1, 1]: 0..2 -> -1..1


def init_weights(net: nn.Module, gain: float = 0.02) -> None:
    """The reference CycleGAN init: normal(0, 0.02) convolution weights, zero biases."""
    for m in net.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.normal_(m.weight, 0.0, gain)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def seg_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Soft Dice (over classes present in the batch) + cross-entropy, as nnU-Net trains."""
    logits = logits.float()
    ce = F.cross_entropy(logits, target)
    probs = torch.softmax(logits, dim=1)
    onehot = F.one_hot(target, logits.shape[1]).permute(0, 3, 1, 2).float()
    dims = (0, 2, 3)
    inter = (probs * onehot).sum(dims)
    denom = probs.sum(dims) + onehot.sum(dims)
    present = onehot.sum(dims) > 0
    dice = (2 * inter + 1e-5) / (denom + 1e-5)
    return ce + (1 - dice[present].mean() if present.any() else 0.0)
