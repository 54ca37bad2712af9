"""The class- and layer-wise encoder (Eq. 13-17).

Six 3x3 stride-2 convs (`layer1` .. `layer6`, spectral norm + instance norm, LeakyReLU 0.2 between
them) on the image resized to `input_size`. The deepest layer gives the global code through `fc_mu`
/ `fc_var` (Eq. 13); each latent layer l gives one code per class: its output is max-pooled over the
pixels of each class of the label map resized to that layer's grid (Eq. 16-17, one `scatter_reduce`),
passed through LeakyReLU and the linear heads `fc_mu{l}` / `fc_var{l}` shared by all classes.
Heads predict means and log-variances. Classes absent at a layer's scale get mean 0, log-variance 0
(the prior) and `present = False`.

Ablations: `depth` L < 6 keeps layers 1..L (the global head then reads layer L, average-pooled to
the grid layer 6 would have had, so its width stays 8 ngf x that grid); `spec.layers` chooses which
layers give class codes; `spec.classwise = False` pools each layer over the whole image (K = 1).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from smis.networks.latents import Latents, LatentSpec
from smis.networks.ops import check_labels, classwise_max_pool, resize_labels, spectral_norm

MAX_DEPTH = 6


def encoder_widths(nef: int, depth: int = MAX_DEPTH) -> list[int]:
    """Output channels of layer1..layer{depth}: nef, 2, 4, 8, 8, 8 x nef."""
    return [nef * m for m in (1, 2, 4, 8, 8, 8)][:depth]


class Encoder(nn.Module):
    """Eq. 13-17: global code from the deepest layer, class codes by class-wise max-pooling."""

    def __init__(self,
                 spec: LatentSpec,                  # which codes to produce (z_dim, N, C, layers, ...)
                 nef: int = 64,                     # width of layer1 (layers: 1, 2, 4, 8, 8, 8 x nef)
                 input_size: tuple[int, int] = (256, 256),   # (H, W) the image is resized to first
                 depth: int = MAX_DEPTH,            # number of conv layers L, 3..6
                 ):
        super().__init__()
        if not 3 <= depth <= MAX_DEPTH:
            raise ValueError(f"depth={depth} must be in 3..{MAX_DEPTH}")
        bad = [l for l in spec.layers if not 1 <= l < depth]
        if bad:
            raise ValueError(f"latent layers {bad} need 1 <= l < depth={depth} "
                             "(the deepest layer gives the global code)")
        H, W = input_size
        if H % (1 << MAX_DEPTH) or W % (1 << MAX_DEPTH) or min(H, W) < 128:
            raise ValueError(f"encoder input_size {input_size} must be divisible by 64 and at least 128: six "
                             "stride-2 layers, and instance norm needs more than one pixel at the last")
        if spec.z_dim <= 0:
            raise ValueError("the encoder needs spec.z_dim > 0 (gaugan has no encoder)")
        self.spec, self.input_size, self.depth = spec, (H, W), depth
        self.head_grid = (H >> MAX_DEPTH, W >> MAX_DEPTH)              # layer-6 grid: 4x4 at 256x256
        widths = encoder_widths(nef, depth)
        cin = 3
        for l, cout in enumerate(widths, start=1):
            conv = spectral_norm(nn.Conv2d(cin, cout, 3, stride=2, padding=1, bias=False))
            self.add_module(f"layer{l}", nn.Sequential(conv, nn.InstanceNorm2d(cout, affine=False)))
            cin = cout
        flat = widths[-1] * self.head_grid[0] * self.head_grid[1]
        self.fc_mu = nn.Linear(flat, spec.z_dim)
        self.fc_var = nn.Linear(flat, spec.z_dim)
        if spec.has_class_codes:
            for l in spec.layers:
                self.add_module(f"fc_mu{l}", nn.Linear(widths[l - 1], spec.z_dim_local))
                self.add_module(f"fc_var{l}", nn.Linear(widths[l - 1], spec.z_dim_local))

    def forward(self, image: torch.Tensor, label: torch.Tensor) -> tuple[Latents, Latents]:
        """image (B, 3, H, W) in [-1, 1], label (B, H, W) ids -> (mu, logvar) as Latents."""
        spec = self.spec
        if image.dim() != 4 or image.shape[1] != 3:
            raise ValueError(f"image must be (B, 3, H, W) in [-1, 1], got {tuple(image.shape)}")
        check_labels(label, spec.num_classes)
        if label.shape[0] != image.shape[0] or label.shape[-2:] != image.shape[-2:]:
            raise ValueError(f"image {tuple(image.shape)} and label {tuple(label.shape)} must share (B, H, W)")
        x = image
        if tuple(x.shape[-2:]) != self.input_size:
            x = F.interpolate(x, size=self.input_size, mode="bilinear", align_corners=False)
        label = resize_labels(label, self.input_size)                  # (B, He, We)
        K = spec.code_classes
        pooled = {}
        for l in range(1, self.depth + 1):                              # the conv stack itself
            h = getattr(self, f"layer{l}")(x if l == 1 else F.leaky_relu(x, 0.2))   # (B, D_l, He/2^l, We/2^l)
            if spec.has_class_codes and l in spec.layers:
                lab = (resize_labels(label, h.shape[-2:]) if spec.classwise
                       else label.new_zeros(h.shape[0], *h.shape[-2:]))
                pooled[l] = classwise_max_pool(h, lab, K)               # (B, K, D_l), (B, K)
            x = h
        x = F.leaky_relu(x, 0.2)
        if tuple(x.shape[-2:]) != self.head_grid:
            x = F.adaptive_avg_pool2d(x, self.head_grid)
        x = x.flatten(1)                                                # (B, 8 nef * hg * wg)
        z_mu, z_logvar = self.fc_mu(x), self.fc_var(x)                 # (B, N1) each
        if not pooled:
            return Latents(z_mu), Latents(z_logvar)
        present = torch.stack([pooled[l][1] for l in spec.layers], dim=1)                # (B, L, K)
        feats = [F.leaky_relu(pooled[l][0], 0.2) for l in spec.layers]                  # L x (B, K, D_l)
        keep = present[..., None]
        zc_mu = torch.stack([getattr(self, f"fc_mu{l}")(f) for l, f in zip(spec.layers, feats)], 1)
        zc_logvar = torch.stack([getattr(self, f"fc_var{l}")(f) for l, f in zip(spec.layers, feats)], 1)
        zc_mu, zc_logvar = torch.where(keep, zc_mu, 0.0), torch.where(keep, zc_logvar, 0.0)   # (B, L, K, N)
        return Latents(z_mu, zc_mu, present), Latents(z_logvar, zc_logvar, present)
