"""Training DAR-UNet's disentangled translator (variant ``dar``) on the machinery of
:class:`~napari_uda.translate.training.TranslatorTrainer` (batches, learning-rate schedule,
checkpoints, resume, previews, cancel): only the networks and the two steps of an iteration differ.

Losses (MUNIT's, LSGAN as the reference CycleGAN): image reconstruction ``lambda_cycle * |G_d(E_c(x), E_s^d(x)) - x|``
in each domain; cross-domain translations ``x_ab = G_B(E_c(x_a), s)`` (and ``x_ba``) in styles ``s ~ N(0, I)``
judged by the two image discriminators; content reconstruction ``|E_c(x_ab) - E_c(x_a)|`` and style
reconstruction ``|E_s^B(x_ab) - s|`` (weight 1 each); the content discriminator tells CT content codes from target
ones and the shared encoder learns to fool it. The deliverable holds the content encoder and the target
decoder, and the style codes of every target training slice with their K-means cluster.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from napari_uda.translate.disentangled import (
    ContentDiscriminator,
    StyleDecoder,
    StyleEncoder,
    StyleTranslator,
    cluster_styles,
    kaiming_init,
)
from napari_uda.translate.nets import PatchDiscriminator, init_weights
from napari_uda.translate.training import ImagePool, TranslatorTrainer, _step
from napari_uda.translate.translator import TranslatorConfig

LAMBDA_CONTENT = 1.0
LAMBDA_STYLE = 1.0


class _DisentangledNets(nn.Module):
    """``G_AB``: content encoder E_c (shared) + target decoder G_B; ``dec_A``: the CT decoder G_A;
    style encoders ``E_sA``, ``E_sB``; image discriminators ``D_A``, ``D_B``; content discriminator ``D_C``."""

    def __init__(self, cfg: TranslatorConfig) -> None:
        super().__init__()
        self.G_AB = StyleTranslator(cfg.ngf, cfg.n_blocks)
        self.dec_A = StyleDecoder(cfg.ngf, cfg.n_blocks)
        self.E_sA, self.E_sB = StyleEncoder(cfg.ngf), StyleEncoder(cfg.ngf)
        self.D_A = PatchDiscriminator(1, cfg.ndf, cfg.d_layers)
        self.D_B = PatchDiscriminator(1, cfg.ndf, cfg.d_layers)
        self.D_C = ContentDiscriminator(cfg.ndf)
        for net in (self.G_AB, self.dec_A, self.E_sA, self.E_sB):
            kaiming_init(net)
        for net in (self.D_A, self.D_B, self.D_C):
            init_weights(net)


class DisentangledTrainer(TranslatorTrainer):
    """One training run of a ``dar`` translator (see the module docstring for its losses)."""

    def _build_networks(self) -> None:
        cfg, nets = self.cfg, _DisentangledNets(self.cfg).to(self.dev)
        self.nets = nets
        gens = [p for m in (nets.G_AB, nets.dec_A, nets.E_sA, nets.E_sB) for p in m.parameters()]
        discs = [p for m in (nets.D_A, nets.D_B, nets.D_C) for p in m.parameters()]
        self.opt_G = torch.optim.Adam(gens, lr=cfg.lr, betas=(cfg.beta1, 0.999))
        self.opt_D = torch.optim.Adam(discs, lr=cfg.lr, betas=(cfg.beta1, 0.999))
        self.opt_S = None
        self.base_lrs = [(self.opt_G, [cfg.lr]), (self.opt_D, [cfg.lr])]
        self.pools = {k: ImagePool(cfg.pool_size, self.gen) for k in ("A", "B")}

    def generator_step(self, real_a: torch.Tensor, lab_a: torch.Tensor | None, real_b: torch.Tensor,
                       losses: dict[str, float]) -> dict[str, torch.Tensor]:
        """Encoders and decoders: reconstruction, cross-domain adversarial, content and style
        reconstruction, fooling the content discriminator. Returns the translations and contents."""
        nets, mse, l1 = self.nets, self.mse, self.l1
        for d in (nets.D_A, nets.D_B, nets.D_C):
            d.requires_grad_(False)
        encode = nets.G_AB.content
        with self._autocast():
            c_a, c_b = encode(real_a), encode(real_b)
            s_a, s_b = nets.E_sA(real_a), nets.E_sB(real_b)
            loss_rec = self.cfg.lambda_cycle * (l1(nets.dec_A(c_a, s_a), real_a) + l1(nets.G_AB.decoder(c_b, s_b), real_b))
            # cross-domain translations in styles drawn from the prior N(0, I), as MUNIT: the decoders must use
            # the style and the style encoders map real images into that space (where K-means later clusters them)
            r_b = torch.randn(s_b.shape, generator=self.gen).to(self.dev, s_b.dtype)
            r_a = torch.randn(s_a.shape, generator=self.gen).to(self.dev, s_a.dtype)
            fake_b, fake_a = nets.G_AB.decoder(c_a, r_b), nets.dec_A(c_b, r_a)
            pred_fb, pred_fa = nets.D_B(fake_b), nets.D_A(fake_a)
            loss_adv = mse(pred_fb, torch.ones_like(pred_fb)) + mse(pred_fa, torch.ones_like(pred_fa))
            loss_content = LAMBDA_CONTENT * (l1(encode(fake_b), c_a) + l1(encode(fake_a), c_b))
            loss_style = LAMBDA_STYLE * (l1(nets.E_sB(fake_b), r_b) + l1(nets.E_sA(fake_a), r_a))
            pc_a, pc_b = nets.D_C(c_a), nets.D_C(c_b)  # flipped labels: each domain's content passes for the other's
            loss_cadv = mse(pc_a, torch.zeros_like(pc_a)) + mse(pc_b, torch.ones_like(pc_b))
            loss_g = loss_rec + loss_adv + loss_content + loss_style + loss_cadv
        _step(self.opt_G, loss_g)
        losses.update(reconstruction=loss_rec.item(), content=loss_content.item(), style=loss_style.item(),
                      content_adv=loss_cadv.item(), G_adv=loss_adv.item())
        return {"fake_b": fake_b, "fake_a": fake_a, "content_a": c_a, "content_b": c_b}

    def discriminator_step(self, real_a: torch.Tensor, real_b: torch.Tensor, fakes: dict[str, torch.Tensor],
                           losses: dict[str, float]) -> None:
        """D_A and D_B on pooled translations; D_C: CT content is "1", target content "0"."""
        nets = self.nets
        for d in (nets.D_A, nets.D_B, nets.D_C):
            d.requires_grad_(True)
        with self._autocast():
            loss_da = self._d_loss(nets.D_A, real_a, self.pools["A"].query(fakes["fake_a"]))
            loss_db = self._d_loss(nets.D_B, real_b, self.pools["B"].query(fakes["fake_b"]))
            loss_dc = self._d_loss(nets.D_C, fakes["content_a"].detach(), fakes["content_b"].detach())
        _step(self.opt_D, loss_da + loss_db + loss_dc)
        losses.update(D_A=loss_da.item(), D_B=loss_db.item(), D_content=loss_dc.item())

    @torch.no_grad()
    def target_styles(self) -> np.ndarray:
        """The style code (N, STYLE_DIM) of every target training slice, volume by volume."""
        self.nets.E_sB.eval()
        codes = [self.nets.E_sB(stack[i:i + 32].to(self.dev)).float().cpu()
                 for stack in self.bank_b.images for i in range(0, len(stack), 32)]
        self.nets.E_sB.train()
        return torch.cat(codes).numpy()

    def deliverable(self) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
        """The target slices' style codes and their K-means clusters (sizes in the sidecar)."""
        codes = self.target_styles()
        clusters = cluster_styles(codes, seed=self.cfg.seed)
        extra = {"style_clusters": np.bincount(clusters).tolist()}
        return extra, {"styles.codes": torch.from_numpy(codes), "styles.clusters": torch.from_numpy(clusters)}
