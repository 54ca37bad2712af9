"""SPADE normalisation and the SPADE residual block (Park et al. 2019), the generator's backbone.

Module names (`param_free_norm`, `mlp_shared.0`, `mlp_gamma`, `mlp_beta`, `conv_0`, `conv_1`,
`conv_s`, `norm_0`, `norm_1`, `norm_s`) follow the published networks so their state dicts load
without a name map.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from smis.networks.ops import spectral_norm

NORMS = ("syncbatch", "batch", "instance")


def param_free_norm(kind: str, channels: int) -> nn.Module:
    """Normalisation without affine parameters: synchronised batch, batch or instance norm."""
    if kind == "syncbatch":
        return nn.SyncBatchNorm(channels, affine=False)    # plain batch norm outside torch.distributed
    if kind == "batch":
        return nn.BatchNorm2d(channels, affine=False)
    if kind == "instance":
        return nn.InstanceNorm2d(channels, affine=False)
    raise ValueError(f"norm={kind!r} is not a SPADE normalisation; choose one of {NORMS}")


class SPADE(nn.Module):
    """SPADE (Park et al. 2019, Eq. 1): norm(x) * (1 + gamma(m)) + beta(m), m the conditioning map."""

    def __init__(self,
                 channels: int,             # channels of the normalised features x
                 cond_channels: int,        # channels of the conditioning map (C one-hot or N CSE)
                 norm: str = "syncbatch",   # parameter-free normalisation, one of NORMS
                 hidden: int = 128,         # width of the shared conv
                 ):
        super().__init__()
        self.param_free_norm = param_free_norm(norm, channels)
        self.mlp_shared = nn.Sequential(nn.Conv2d(cond_channels, hidden, 3, padding=1), nn.ReLU())
        self.mlp_gamma = nn.Conv2d(hidden, channels, 3, padding=1)
        self.mlp_beta = nn.Conv2d(hidden, channels, 3, padding=1)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        # x (B, ch, h, w); cond (B, cond_ch, H', W') resized to (h, w) with legacy nearest
        normalized = self.param_free_norm(x)
        if cond.shape[-2:] != x.shape[-2:]:
            cond = F.interpolate(cond, size=x.shape[-2:], mode="nearest")
        actv = self.mlp_shared(cond)                                   # (B, hidden, h, w)
        return normalized * (1 + self.mlp_gamma(actv)) + self.mlp_beta(actv)


class SPADEResBlock(nn.Module):
    """SPADE residual block: two SPADE-LeakyReLU-conv stages plus a (learned) shortcut."""

    def __init__(self,
                 fin: int,                  # input channels
                 fout: int,                 # output channels; fin != fout adds the 1x1 shortcut conv_s
                 cond_channels: int,        # channels of the conditioning map
                 norm: str = "syncbatch",   # SPADE's parameter-free normalisation
                 hidden: int = 128,         # SPADE shared-conv width
                 ):
        super().__init__()
        self.learned_shortcut = fin != fout
        fmid = min(fin, fout)
        self.conv_0 = spectral_norm(nn.Conv2d(fin, fmid, 3, padding=1))
        self.conv_1 = spectral_norm(nn.Conv2d(fmid, fout, 3, padding=1))
        self.norm_0 = SPADE(fin, cond_channels, norm, hidden)
        self.norm_1 = SPADE(fmid, cond_channels, norm, hidden)
        if self.learned_shortcut:
            self.conv_s = spectral_norm(nn.Conv2d(fin, fout, 1, bias=False))
            self.norm_s = SPADE(fin, cond_channels, norm, hidden)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        # x (B, fin, h, w) -> (B, fout, h, w)
        x_s = self.conv_s(self.norm_s(x, cond)) if self.learned_shortcut else x
        dx = self.conv_0(F.leaky_relu(self.norm_0(x, cond), 0.2))
        dx = self.conv_1(F.leaky_relu(self.norm_1(dx, cond), 0.2))
        return x_s + dx
