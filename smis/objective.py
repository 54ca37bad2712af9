"""The training objective (Eq. 7 with the KL of Eq. 18) as pure functions returning loss dicts.

    fake, kl = GeneratorStep(G, E, spec)(label, image, eps)               # G(M, mu + eps sigma), KL (Eq. 18)
    pred_fake, pred_real = split_batch(D(cat([label, label]), cat([fake, image])), len(label))
    g = generator_losses(pred_fake, pred_real, fake, image, kl, LossWeights.of(preset))   # -> g["g_total"]
    d = discriminator_losses(*split_batch(D(..., cat([fake.detach(), image])), len(label)))  # -> d["d_hinge"]

As SPADE splits it: the model computes losses, the trainer (`smis.train.Trainer.train_step`) only
steps optimisers. The terms are the unweighted losses of `smis.losses`; this module weights and sums them:

    L_G,E = L_GAN^G + lambda_FM L_FM + lambda_P L_P + lambda_KL KL     (Eq. 7; KL of Eq. 18)
    L_D   = hinge_D(D(M, I), D(M, G(M, z)))                           (Eq. 7's adversarial term, D side)
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from smis.config import Preset
from smis.losses import Features, d_hinge_loss, feature_matching_loss, g_hinge_loss, kl_divergence
from smis.networks import Latents, LatentSpec


@dataclass(frozen=True)
class LossWeights:
    """The lambdas of Eq. 7."""

    fm: float                   # lambda_FM, feature matching
    perceptual: float           # lambda_P, perceptual (VGG19 / EfficientNet-Lite0)
    kl: float                   # lambda_KL, the KL of Eq. 18

    @classmethod
    def of(cls, preset: Preset, kl_weight: float | None = None) -> "LossWeights":
        """The preset's lambdas; `kl_weight` (TrainConfig.kl_weight) replaces lambda_KL unless None."""
        return cls(preset.lambda_fm, preset.lambda_perceptual, preset.lambda_kl if kl_weight is None else kl_weight)


class GeneratorStep(nn.Module):
    """G and E together (one DDP unit): label + image -> fake image and KL (Eq. 18)."""

    def __init__(self, G: nn.Module, E: nn.Module | None, spec: LatentSpec):
        super().__init__()
        self.G, self.E, self.spec = G, E, spec

    def forward(self,
                label: torch.Tensor,                 # (B, H, W) class ids
                image: torch.Tensor,                 # (B, 3, H, W) in [-1, 1]
                eps: Latents | None = None,          # N(0, I) noise shaped like E's codes; None without E
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """(fake (B, 3, H, W), KL summed over the batch, fp32). Without an encoder (gaugan, which takes no
        latents): G(label) and a KL of 0."""
        if self.E is None:
            return self.G(label), image.new_zeros(())
        mu, logvar = self.E(image, label)
        z = Latents.reparameterize(mu, logvar, eps=eps)                 # mu + eps exp(logvar / 2)
        return self.G(label, z), kl_divergence(mu.map(lambda t: t.float()), logvar.map(lambda t: t.float()),
                                               classes=self.spec.class_kl)


def split_batch(pred: Features,              # D's output on cat([fake, real]) (per scale, per stage)
                n: int,                      # B, the fakes come first
                ) -> tuple[Features, Features]:
    """(D(fake), D(real)) from one D call on the concatenated batch, as SPADE runs it."""
    return [[f[:n] for f in s] for s in pred], [[f[n:] for f in s] for s in pred]


def generator_losses(pred_fake: Features,                  # D(M, G(M, z)), D frozen
                     pred_real: Features,                  # D(M, I)
                     fake: torch.Tensor,                   # (B, 3, H, W) G's output
                     image: torch.Tensor,                  # (B, 3, H, W) the real image
                     kl: torch.Tensor,                     # Eq. 18, summed over the (global) batch; 0 for gaugan
                     weights: LossWeights,                 # the lambdas of Eq. 7
                     perceptual: nn.Module | None = None,  # smis.losses.PerceptualLoss, or None (no term)
                     ) -> dict[str, torch.Tensor]:
    """The G/E objective of Eq. 7: {"g_gan", "g_fm", "g_perceptual" (with a perceptual net), "kl", "g_total"},
    g_total = g_gan + lambda_FM g_fm + lambda_P g_perceptual + lambda_KL kl (scalar tensors)."""
    losses = {"g_gan": g_hinge_loss(pred_fake), "g_fm": feature_matching_loss(pred_real, pred_fake)}
    if perceptual is not None:
        losses["g_perceptual"] = perceptual(fake.float(), image.float())
    losses["kl"] = kl
    losses["g_total"] = (losses["g_gan"] + weights.fm * losses["g_fm"]
                         + weights.perceptual * losses.get("g_perceptual", 0) + weights.kl * kl)
    return losses


def discriminator_losses(pred_fake: Features,    # D(M, G(M, z)) on the detached fake
                         pred_real: Features,    # D(M, I)
                         ) -> dict[str, torch.Tensor]:
    """The D objective (Eq. 7's adversarial term, hinge form): {"d_hinge"}."""
    return {"d_hinge": d_hinge_loss(pred_real, pred_fake)}
