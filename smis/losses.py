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

from smis.backbones import FoldedCache, ImageFeatureCache, crn_distance_extractor, perceptual_extractor
from smis.networks.latents import Latents

log = logging.getLogger(__name__)

VGG_WEIGHTS = (1.0 / 32, 1.0 / 16, 1.0 / 8, 1.0 / 4, 1.0)   # pix2pixHD / SPADE perceptual weights
# cIMLE's distance (the authors' train.py): network input, relu1_2, relu2_2, relu3_2, relu4_2, relu5_2
CIMLE_WEIGHTS = (1.0, 1.0 / 1.4, 1.0 / 1.8, 1.0 / 1.3, 1.0 / 2.2, 10.0 / 0.62)

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


def _code_kl(m: torch.Tensor, lv: torch.Tensor) -> torch.Tensor:
    """KL(N(m, exp(lv)) || N(0, I)) summed over the last (code) axis."""
    return -0.5 * torch.sum(1 + lv - m.pow(2) - lv.exp(), dim=-1)


def kl_terms(mu: Latents, logvar: Latents,
             classes: str = "present_mean",   # "present_mean" (Eq. 18) or "sum" (GroupDNet): LatentSpec.class_kl
             ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """Eq. 18's terms per sample: (KL_g (B,) of the global code or None, KL_l (B, L) per latent layer or None).

    KL_l is the mean over the classes present at layer l of each class code's KL (classes="sum": the sum over
    every class code, present or not, as GroupDNet's KLDLoss). They add up to `kl_divergence` (which computes
    its sum in its own, unchanged order); the options against collapse (`smis.objective.KLOptions`) weight them.
    """
    if classes not in ("present_mean", "sum"):
        raise ValueError(f"classes={classes!r}; choose 'present_mean' (Eq. 18) or 'sum' (GroupDNet)")
    kl_g = _code_kl(mu.z, logvar.z) if mu.z is not None else None      # (B,)
    per_layer = None
    if mu.zc is not None:
        per_class = _code_kl(mu.zc, logvar.zc)                          # (B, L, K)
        if classes == "sum":
            per_layer = per_class.sum(-1)                               # (B, L) every class of each layer
        else:
            present = mu.present.to(mu.zc.dtype)                        # (B, L, K)
            per_layer = (per_class * present).sum(-1) / present.sum(-1).clamp(min=1)   # (B, L) mean over present
    return kl_g, per_layer


def kl_divergence(mu: Latents, logvar: Latents, reduction: str = "sum",
                  classes: str = "present_mean",   # "present_mean" (Eq. 18) or "sum" (GroupDNet): LatentSpec.class_kl
                  ) -> torch.Tensor:
    """Eq. 18: KL(q || N(0, I)) of the global code plus, for each latent layer, the mean over the
    classes present of each class code's KL (per layer: `kl_terms`).

    Per sample: KL_g + sum_l mean_{c present at l} KL_{l,c}. reduction "sum" adds the samples (as
    the published code does per GPU, the scale lambda_KL = 0.05 was tuned for), "mean" averages
    them, "none" returns (B,). classes="sum": every class code's KL is added, present or not (the
    GroupDNet authors' KLDLoss, a plain sum over their code tensor).
    """
    if classes not in ("present_mean", "sum"):
        raise ValueError(f"classes={classes!r}; choose 'present_mean' (Eq. 18) or 'sum' (GroupDNet)")
    kl = _code_kl
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
    """Weighted L1 between a frozen extractor's feature maps of fake and real images (real detached).

    With `fold_bn` (default) both images go through a copy of the extractor whose eval-mode batch norms are
    folded into the preceding convs (EfficientNet-Lite0: 49 of them): the same loss up to float rounding
    (~1e-6 relative), checked against the original when the copy is built, without the BN passes.

    On the CPU the extractor runs in float32 even inside a bf16 autocast region (`autocast_cpu=False`): oneDNN's
    bf16 depthwise stride-2 convolutions (EfficientNet-Lite0's) are 10-20x slower than float32 ones there, so the
    SynthScenes bf16 step is 1.03x faster with the perceptual net in float32 (benchmarks/RESULTS.md, issue 26).

    With `real_cache_mb` > 0 (or a `real_cache` set afterwards: `smis.build.build` sets one from
    `TrainConfig.perceptual_cache_mb` on the CPU) the real images' maps come from an `ImageFeatureCache` there: a run
    that sees each image many times skips the extractor's pass on the ones it has seen (the same maps bit for bit,
    or the cache is off: tests/test_losses.py)."""

    def __init__(self,
                 extractor: nn.Module,              # maps (B, 3, H, W) in [-1, 1] to a list of feature maps
                 weights: Sequence[float] | None = None,   # one per feature map; None: extractor.layer_weights
                                                    # if it has them, else VGG_WEIGHTS for 5 maps, else all 1
                 fold_bn: bool = True,              # run a copy with its batch norms folded into the convs
                                                    # (smis.backbones.fold_batchnorm; same function, fewer ops)
                 autocast_cpu: bool = False,        # let a CPU autocast region reach the extractor (bf16 convs)
                 real_cache_mb: float = 0,          # MiB of the real images' maps kept on the CPU; 0: none
                 ):
        super().__init__()
        self.extractor = extractor.eval().requires_grad_(False)
        self.fold_bn, self.autocast_cpu = fold_bn, autocast_cpu
        self._folded = FoldedCache()                # rebuilt whenever the extractor's tensors change
        self.real_cache = ImageFeatureCache(int(real_cache_mb * 2**20)) if real_cache_mb > 0 else None
        if weights is None:
            weights = getattr(extractor, "layer_weights", None)
        self.weights = None if weights is None else tuple(float(w) for w in weights)

    def train(self, mode: bool = True) -> "PerceptualLoss":
        super().train(mode)
        self.extractor.eval()                                           # frozen, whatever the caller does
        return self

    def forward(self, fake: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
        if fake.device.type == "cpu" and not self.autocast_cpu and torch.is_autocast_enabled("cpu"):
            with torch.autocast("cpu", enabled=False):                  # float32 extractor (see the class)
                return self.forward(fake.float(), real.float())
        net = self._folded.get(self.extractor, real) if self.fold_bn else self.extractor
        ff = net(fake)
        with torch.no_grad():
            fr = self.real_cache(net, real) if self.real_cache is not None and real.device.type == "cpu" else net(real)
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


class IMLEDistance(nn.Module):
    """cIMLE's perceptual distance, one value per sample (the IMLE objective picks and minimises it):

        d(x, y) = sum_l w_l mean_{c, h, w} |phi_l(x) - phi_l(y)| * m_l,    l = 0 .. 5

    phi_0 the network's normalised input, phi_1..5 VGG19's relu1_2 .. relu5_2 (average pooling) or, offline,
    EfficientNet-Lite0's 5 stages (the stand-in, named by `.backbone`); w = CIMLE_WEIGHTS; m_l optional
    per-pixel weights (the authors' rarity mask) area-resized to each map (None: all 1).
    """

    def __init__(self,
                 extractor: nn.Module,                  # [-1, 1] images -> 5 maps; has .normalize(x)
                 weights: Sequence[float] = CIMLE_WEIGHTS,   # input term first, then one per map
                 ):
        super().__init__()
        self.extractor = extractor.eval().requires_grad_(False)
        self.weights = tuple(float(w) for w in weights)

    def train(self, mode: bool = True) -> "IMLEDistance":
        super().train(mode)
        self.extractor.eval()
        return self

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """[phi_0(x), ..., phi_5(x)] for images (B, 3, H, W) in [-1, 1]."""
        maps = [self.extractor.normalize(x), *self.extractor(x)]
        if len(maps) != len(self.weights):
            raise ValueError(f"{len(self.weights)} distance weights for {len(maps)} maps (input + features); give one "
                             "weight per map")
        return maps

    def between(self,
                ff: Sequence[torch.Tensor],             # features(fake), batch B
                fr: Sequence[torch.Tensor],             # features(real), batch B (detached by the caller)
                pixel_weights: torch.Tensor | None = None,   # (B, 1, H, W) or None
                ) -> torch.Tensor:
        """(B,) distances between two feature lists."""
        total = 0
        for w, a, b in zip(self.weights, ff, fr):
            diff = (a - b).abs()                                            # (B, c, h, w)
            if pixel_weights is not None:
                diff = diff * F.adaptive_avg_pool2d(pixel_weights.to(diff.dtype), diff.shape[-2:])
            total = total + w * diff.flatten(1).mean(1)                     # (B,)
        return total

    def forward(self, fake: torch.Tensor, real: torch.Tensor,
                pixel_weights: torch.Tensor | None = None) -> torch.Tensor:
        """(B,) distances d(fake_i, real_i); gradients reach `fake` only."""
        with torch.no_grad():
            fr = self.features(real)
        return self.between(self.features(fake), fr, pixel_weights)


def make_imle_distance(device: torch.device | str | None = None, prefer: str = "vgg19") -> IMLEDistance:
    """cIMLE's distance on VGG19 when its ImageNet weights are cached, else on the EfficientNet-Lite0 stand-in;
    the backbone's name is stored as `.backbone`."""
    extractor, name = crn_distance_extractor(device, prefer)
    dist = IMLEDistance(extractor)
    dist.backbone = name
    return dist
