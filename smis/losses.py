"""Losses of the CLVAE objective, as small pure functions (unweighted: multiply by the preset's lambdas).

    L_D = hinge_d(D(real), D(fake))
    L_G = hinge_g(D(fake)) + lambda_fm * FM + lambda_perceptual * P + lambda_kl * KL (Eq. 18)

Discriminator outputs are what `smis.networks.Discriminator` returns: a list over scales of the
list of stage features, the last of which is the logit map.
"""
from __future__ import annotations

import logging
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from smis.backbones import perceptual_extractor
from smis.networks.latents import Latents

log = logging.getLogger(__name__)

VGG_WEIGHTS = (1.0 / 32, 1.0 / 16, 1.0 / 8, 1.0 / 4, 1.0)   # pix2pixHD / SPADE perceptual weights

Features = Sequence[Sequence[torch.Tensor]]                  # per scale, per stage (last = logits)


def d_hinge_loss(real: Features, fake: Features) -> torch.Tensor:
    """Hinge loss of D, averaged over scales: mean relu(1 - D(real)) + mean relu(1 + D(fake))."""
    terms = [F.relu(1 - r[-1]).mean() + F.relu(1 + f[-1]).mean() for r, f in zip(real, fake)]
    return torch.stack(terms).mean()


def g_hinge_loss(fake: Features) -> torch.Tensor:
    """Hinge loss of G, averaged over scales: -mean D(fake)."""
    return torch.stack([-f[-1].mean() for f in fake]).mean()


def feature_matching_loss(real: Features, fake: Features) -> torch.Tensor:
    """pix2pixHD feature matching: L1 between D's intermediate features (logits excluded), real
    detached, summed over stages and averaged over scales."""
    terms = [sum(F.l1_loss(f, r.detach()) for f, r in zip(fs[:-1], rs[:-1])) for rs, fs in zip(real, fake)]
    return torch.stack([torch.as_tensor(t) for t in terms]).mean()


def kl_divergence(mu: Latents, logvar: Latents, reduction: str = "sum",
                  classes: str = "present_mean",   # "present_mean" (Eq. 18) or "sum" (GroupDNet): LatentSpec.class_kl
                  ) -> torch.Tensor:
    """Eq. 18: KL(q || N(0, I)) of the global code plus, for each latent layer, the mean over the
    classes present of each class code's KL.

    Per sample: KL_g + sum_l mean_{c present at l} KL_{l,c}. reduction "sum" adds the samples (as
    the published code does per GPU, the scale lambda_KL = 0.05 was tuned for), "mean" averages
    them, "none" returns (B,). classes="sum": every class code's KL is added, present or not (the
    GroupDNet authors' KLDLoss, a plain sum over their code tensor).
    """
    if classes not in ("present_mean", "sum"):
        raise ValueError(f"classes={classes!r}; choose 'present_mean' (Eq. 18) or 'sum' (GroupDNet)")
    def kl(m, lv):                                                      # summed over the code axis
        return -0.5 * torch.sum(1 + lv - m.pow(2) - lv.exp(), dim=-1)
    parts = []
    if mu.z is not None:
        parts.append(kl(mu.z, logvar.z))                                # (B,)
    if mu.zc is not None:
        if classes == "sum":
            parts.append(kl(mu.zc, logvar.zc).sum((1, 2)))             # (B,) every class of every layer
        else:
            present = mu.present.to(mu.zc.dtype)                        # (B, L, K)
            per_class = kl(mu.zc, logvar.zc) * present                  # (B, L, K)
            per_layer = per_class.sum(-1) / present.sum(-1).clamp(min=1)   # (B, L) mean over present classes
            parts.append(per_layer.sum(-1))                             # (B,)
    if not parts:
        raise ValueError("kl_divergence needs latents with a global code or class codes (gaugan has none)")
    per_sample = torch.stack(parts).sum(0)                              # (B,)
    if reduction == "sum":
        return per_sample.sum()
    if reduction == "mean":
        return per_sample.mean()
    if reduction == "none":
        return per_sample
    raise ValueError(f"reduction={reduction!r}; choose 'sum', 'mean' or 'none'")


class PerceptualLoss(nn.Module):
    """Weighted L1 between a frozen extractor's feature maps of fake and real images (real detached)."""

    def __init__(self,
                 extractor: nn.Module,              # maps (B, 3, H, W) in [-1, 1] to a list of feature maps
                 weights: Sequence[float] | None = None,   # one per feature map; None: extractor.layer_weights
                                                    # if it has them, else VGG_WEIGHTS for 5 maps, else all 1
                 ):
        super().__init__()
        self.extractor = extractor.eval().requires_grad_(False)
        if weights is None:
            weights = getattr(extractor, "layer_weights", None)
        self.weights = None if weights is None else tuple(float(w) for w in weights)

    def train(self, mode: bool = True) -> "PerceptualLoss":
        super().train(mode)
        self.extractor.eval()                                           # frozen, whatever the caller does
        return self

    def forward(self, fake: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
        ff = self.extractor(fake)
        with torch.no_grad():
            fr = self.extractor(real)
        weights = self.weights
        if weights is None:
            weights = VGG_WEIGHTS if len(ff) == len(VGG_WEIGHTS) else (1.0,) * len(ff)
        if len(weights) != len(ff):
            raise ValueError(f"{len(weights)} perceptual weights for {len(ff)} feature maps; give one weight per map")
        return sum(w * F.l1_loss(a, b) for w, a, b in zip(weights, ff, fr))


def make_perceptual_loss(device: torch.device | str | None = None, prefer: str = "vgg19") -> PerceptualLoss:
    """The paper's perceptual loss on VGG19 when its ImageNet weights are cached, else EfficientNet-Lite0.

    The backbone's name is logged and stored as `.backbone` on the returned module.
    """
    extractor, name = perceptual_extractor(device=device, prefer=prefer)
    loss = PerceptualLoss(extractor)
    loss.backbone = name
    log.info("perceptual loss backbone: %s, weights %s", name, loss.weights)
    return loss
