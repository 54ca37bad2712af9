"""The training objective (Eq. 7 with the KL of Eq. 18) as pure functions returning loss dicts.

    fake, kl, layer_kl = GeneratorStep(G, E, spec)(label, image, eps)     # G(M, mu + eps sigma), KL (Eq. 18)
    pred_fake = D(label, fake)                                             # the G step: D frozen
    with torch.no_grad(), frozen_spectral_norm(D):                         # real: FM targets, D's weights as for
        pred_real = D(label, image)                                        # the fakes (smis.networks.ops)
    g = generator_losses(pred_fake, pred_real, fake, image, kl, LossWeights.of(preset))   # -> g["g_total"]
    reg, logged = KLOptions(free_bits=0.5).regularizer(kl, layer_kl, len(label), step)   # against collapse
    g = generator_losses(..., kl_reg=reg)                                  # g_total with lambda_KL R
    d = discriminator_losses(*split_batch(D(..., cat([fake.detach(), image])), len(label)))  # -> d["d_hinge"]

As SPADE splits it: the model computes losses, the trainer (`smis.train.TrainStep`) only
steps optimisers. The terms are the unweighted losses of `smis.losses`; this module weights and sums them:

    L_G,E = L_GAN^G + lambda_FM L_FM + lambda_P L_P + lambda_KL KL     (Eq. 7; KL of Eq. 18)
    L_D   = hinge_D(D(M, I), D(M, G(M, z)))                           (Eq. 7's adversarial term, D side)

Options against posterior collapse (`KLOptions`, TrainConfig's kl_free_bits / kl_warmup_steps / kl_balance; all
off by default, which is the paper's objective, bit for bit) replace lambda_KL KL in g_total by lambda_KL R with

    R = w(t) [KL_g + sum_l gamma_l max(B f, KL_l)]     KL_l: layer l's Eq. 18 term summed over the batch of B
    w(t) = min(1, t / N)                                KL warm-up (Bowman et al. 2016; Sonderby et al. 2016)
    max(B f, KL_l)                                      free bits per latent layer, f nats/image (Kingma et al. 2016)
    gamma_l = L (m_l + 0.01) / sum_j (m_j + 0.01)       KL balancing (NVAE, Vahdat & Kautz 2020, App. A), m_l the
                                                        layer's mean KL per image, detached; 1 when off
The logged "kl" stays Eq. 18's KL, so curves stay comparable; the step also logs kl_l0.. (KL_l per image).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from smis.config import Preset
from smis.losses import Features, d_hinge_loss, feature_matching_loss, g_hinge_loss, kl_divergence, kl_terms
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


KL_BALANCE = ("none", "warmup", "always")      # when KL balancing applies (KLOptions.balance)
BALANCE_EPS = 0.01                             # NVAE's floor added to each group's mean KL before normalising


@dataclass(frozen=True)
class KLOptions:
    """Options against posterior collapse of the latent layers (see the module docstring); the defaults are Eq. 7's
    lambda_KL KL unchanged.

    Free bits act on each latent layer's Eq. 18 term averaged over the batch (the mean over the classes present
    of the class codes' KL), not on each class code: Kingma et al. floor groups of latents averaged over the
    minibatch, and the layer is the group whose collapse is measured here (issue 22). A per-class-code floor
    would have nothing to floor for a class absent from the batch (its mean is undefined there), and would push
    every class's code to carry the floor even where a class has nothing to encode.
    Under DDP the floor applies to each rank's batch mean. KL balancing is NVAE's kl_balancer: coefficients from
    the detached batch-mean KL of each layer, applied, as NVAE does, only while the KL weight warms up
    ("warmup"), or at every step ("always")."""

    free_bits: float = 0.0      # f: KL floor per latent layer, nats per image (batch mean of the layer's Eq. 18 term)
    warmup_steps: int = 0       # N: lambda_KL ramps linearly from 0 at step 0 to full at step N (0: no warm-up)
    balance: str = "none"       # KL balancing across latent layers: "none", "warmup" (NVAE: while w(t) < 1), "always"

    def __post_init__(self):
        if not (self.free_bits >= 0):
            raise ValueError(f"free_bits={self.free_bits!r}: give a KL floor >= 0 nats per image (0: off)")
        if self.warmup_steps < 0:
            raise ValueError(f"warmup_steps={self.warmup_steps!r}: give a number of steps >= 0 (0: off)")
        if self.balance not in KL_BALANCE:
            raise ValueError(f"balance={self.balance!r}: choose one of {KL_BALANCE}")

    @classmethod
    def of(cls, cfg) -> "KLOptions":
        """From a TrainConfig (its kl_free_bits, kl_warmup_steps, kl_balance)."""
        return cls(cfg.kl_free_bits, cfg.kl_warmup_steps, cfg.kl_balance)

    @property
    def paper(self) -> bool:
        """True when every option is off: the objective is Eq. 7's, and `regularizer` returns the KL itself."""
        return self.free_bits == 0 and self.warmup_steps == 0 and self.balance == "none"

    def warmup(self, step: int) -> float:
        """w(t): min(1, t / N), 1 without warm-up."""
        return 1.0 if self.warmup_steps == 0 else min(1.0, step / self.warmup_steps)

    def balancing(self, step: int) -> bool:
        """Whether KL balancing applies at `step` ("warmup": only while w(t) < 1, as NVAE's kl_balancer)."""
        return self.balance == "always" or (self.balance == "warmup" and self.warmup(step) < 1.0)

    @staticmethod
    def balance_coefficients(layer_kl: torch.Tensor,      # (L,) mean KL per image of each latent layer
                             ) -> torch.Tensor:
        """gamma (L,), detached: proportional to each layer's mean KL + 0.01, normalised to mean 1 (NVAE, App. A:
        gamma_l proportional to group size x mean KL; every latent layer here has the same size, K class codes of
        z_dim_local dims, so the size factor cancels). A layer with little KL is pushed less towards the prior."""
        m = layer_kl.detach() + BALANCE_EPS                                 # (L,)
        return m * (len(m) / m.sum())                                       # (L,) mean 1

    def regularizer(self,
                    kl: torch.Tensor,          # Eq. 18 summed over the batch (KL_g + sum_l KL_l)
                    layer_kl: torch.Tensor,    # (L,) KL_l summed over the batch; (0,) without class codes
                    batch: int,                # B, the images summed over
                    step: int,                 # t, the step being trained (0-based)
                    ) -> tuple[torch.Tensor, dict[str, float]]:
        """(R, what to log): the KL term g_total weights by lambda_KL, and {"kl_reg": R, "kl_warmup": w(t),
        "kl_coef_l<i>": gamma_i (with balance on)}. With every option off: (kl itself, {})."""
        if self.paper:
            return kl, {}
        if len(layer_kl) == 0 and (self.free_bits > 0 or self.balance != "none"):
            raise ValueError("free bits and KL balancing act on the latent layers' class codes; this model has none. "
                             "Fix: use them with a variant that has class codes (clvae, groupdnet), or only warm-up")
        kl_global = kl - layer_kl.sum()                                     # KL_g summed over the batch
        floored = layer_kl.clamp(min=batch * self.free_bits) if self.free_bits > 0 else layer_kl   # (L,) Eq. free bits
        log = {}
        if self.balance != "none":       # logged at every step (1 once "warmup" balancing ends): stable CSV columns
            gamma = self.balance_coefficients(layer_kl / batch) if self.balancing(step) else torch.ones_like(layer_kl)
            floored = floored * gamma                                       # (L,)
            log.update({f"kl_coef_l{i}": float(g) for i, g in enumerate(gamma)})
        w = self.warmup(step)
        reg = w * (kl_global + floored.sum())
        return reg, {"kl_reg": float(reg.detach()), "kl_warmup": w, **log}


class GeneratorStep(nn.Module):
    """G and E together (one DDP unit): label + image -> fake image, KL (Eq. 18) and its latent layers' terms."""

    def __init__(self,
                 G: nn.Module,                       # the generator
                 E: nn.Module | None,                # the encoder (None: gaugan)
                 spec: LatentSpec,                   # the latents E produces
                 e_float32: bool = False,            # E in float32 inside an autocast region (--precision bf16-g)
                 ):
        super().__init__()
        self.G, self.E, self.spec, self.e_float32 = G, E, spec, e_float32

    def forward(self,
                label: torch.Tensor,                 # (B, H, W) class ids
                image: torch.Tensor,                 # (B, 3, H, W) in [-1, 1]
                eps: Latents | None = None,          # N(0, I) noise shaped like E's codes; None without E
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(fake (B, 3, H, W), KL summed over the batch, its latent layers' terms KL_l summed over the batch (L,));
        fp32. Without class codes the layer terms are (0,); without an encoder (gaugan, which takes no latents):
        G(label), a KL of 0 and (0,)."""
        if self.E is None:
            return self.G(label), image.new_zeros(()), image.new_zeros((0,))
        if self.e_float32:
            with torch.autocast(image.device.type, enabled=False):
                mu, logvar = self.E(image.float(), label)
        else:
            mu, logvar = self.E(image, label)
        z = Latents.reparameterize(mu, logvar, eps=eps)                 # mu + eps exp(logvar / 2)
        mu, logvar = mu.map(lambda t: t.float()), logvar.map(lambda t: t.float())
        per_layer = kl_terms(mu, logvar, classes=self.spec.class_kl)[1]  # (B, L) or None
        layer_kl = per_layer.sum(0) if per_layer is not None else image.new_zeros((0,), dtype=torch.float32)
        return self.G(label, z), kl_divergence(mu, logvar, classes=self.spec.class_kl), layer_kl


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
                     kl_reg: torch.Tensor | None = None,   # KL term weighted instead (KLOptions.regularizer); None: kl
                     ) -> dict[str, torch.Tensor]:
    """The G/E objective of Eq. 7: {"g_gan", "g_fm", "g_perceptual" (with a perceptual net), "kl", "g_total"},
    g_total = g_gan + lambda_FM g_fm + lambda_P g_perceptual + lambda_KL kl (scalar tensors); with `kl_reg` (an
    option against collapse) lambda_KL kl_reg replaces the last term, and "kl" stays Eq. 18's KL."""
    losses = {"g_gan": g_hinge_loss(pred_fake), "g_fm": feature_matching_loss(pred_real, pred_fake)}
    if perceptual is not None:
        losses["g_perceptual"] = perceptual(fake.float(), image.float())
    losses["kl"] = kl
    losses["g_total"] = (losses["g_gan"] + weights.fm * losses["g_fm"]
                         + weights.perceptual * losses.get("g_perceptual", 0)
                         + weights.kl * (kl if kl_reg is None else kl_reg))
    return losses


def discriminator_losses(pred_fake: Features,    # D(M, G(M, z)) on the detached fake
                         pred_real: Features,    # D(M, I)
                         ) -> dict[str, torch.Tensor]:
    """The D objective (Eq. 7's adversarial term, hinge form): {"d_hinge"}."""
    return {"d_hinge": d_hinge_loss(pred_real, pred_fake)}
