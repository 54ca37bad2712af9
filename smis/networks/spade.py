"""SPADE normalisation and the SPADE residual block (Park et al. 2019), the generator's backbone.

Module names (`param_free_norm`, `mlp_shared.0`, `mlp_gamma`, `mlp_beta`, `conv_0`, `conv_1`,
`conv_s`, `norm_0`, `norm_1`, `norm_s`) follow the published networks so their state dicts load
without a name map.

The conditioning map m is either a dense tensor (B, cond_ch, H', W') or a `PiecewiseMap` (label +
class table, what the generator passes). m is constant on label regions, so `mlp_shared`'s 3x3 conv
(+ ReLU) takes one value per distinct 3x3 label neighbourhood and `mlp_gamma` / `mlp_beta` one per
distinct 5x5 neighbourhood: SPADE computes those few hundred rows with small matrix products of the
same weights and gathers them to pixels (`SPADE.modulation`), the same function up to float summation
order at a fraction of the cost (ADE20K: 151-channel one-hot mask and 128-channel convs at 256x256).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from smis.networks.ops import (PiecewiseMap, bag_sum, gather_bags, leaky_relu_, modulate, spectral_norm,
                              tap_table)

NORMS = ("syncbatch", "batch", "instance")
GATHER_MIN_MACS = 1e9        # piecewise maps by gathers when the dense mlp convs would cost this many MACs or more,
GATHER_SPARSE_MACS = 2e8     # ... or (CPU, float32) this many when the map has few distinct 3x3 neighbourhoods:
GATHER_SPARSE_RATIO = 8      #     at most pixels / GATHER_SPARSE_RATIO of them (SynthScenes' 64x64 one-hot mask)
GATHER_SPARSE_AUTOCAST = False   # ... also in bf16 (CPU autocast): the rows in bf16 (a lever under test, issue 26)
GATHER_MODULATION = True     # gamma / beta of piecewise maps by a second gather (False: convs of the gathered ReLU)
GATHER_RATIO = 2             # ... when the distinct neighbourhoods number at most pixels / GATHER_RATIO


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

    def forward(self,
                x: torch.Tensor,                        # (B, ch, h, w) features
                cond: torch.Tensor | PiecewiseMap,      # (B, cond_ch, H', W') map, or its (label, table) form
                ) -> torch.Tensor:
        # cond is resized to (h, w) with legacy nearest (a PiecewiseMap: its label, the same pixels)
        normalized = self.param_free_norm(x)
        if isinstance(cond, PiecewiseMap) and self.gathers_pay(cond, x):
            scale, beta = self.modulation(cond.resized(x.shape[-2:]), x)              # scale = 1 + gamma
            return modulate(normalized, scale, beta, plus_one=False)
        else:                                                           # small convs: gathers would not pay
            if isinstance(cond, PiecewiseMap):
                cond = cond.dense(self.mlp_shared[0].weight.dtype)     # (B, cond_ch, H', W'), once per map
            if cond.shape[-2:] != x.shape[-2:]:
                cond = F.interpolate(cond, size=x.shape[-2:], mode="nearest")
            actv = self.mlp_shared(cond)                               # (B, hidden, h, w)
            gamma, beta = self.mlp_gamma(actv), self.mlp_beta(actv)
        return modulate(normalized, gamma, beta)

    def dense_macs(self, x: torch.Tensor) -> float:
        """Multiply-adds of mlp_shared + mlp_gamma + mlp_beta as convolutions at x's size."""
        conv = self.mlp_shared[0]
        return x.numel() // x.shape[1] * 9 * conv.out_channels * (conv.in_channels + 2 * x.shape[1])

    def gathers_pay(self, cond: PiecewiseMap, x: torch.Tensor) -> bool:
        """Whether `modulation` (gathers) beats the dense convs for this map at x's size: always from
        GATHER_MIN_MACS on (ADE20K's fine blocks at batch 1), and on a CPU in float32 from GATHER_SPARSE_MACS on
        where the map has at most pixels / GATHER_SPARSE_RATIO distinct 3x3 neighbourhoods (the plan is cached and
        reused by `modulation`). Measured on a 2-core AMD EPYC, 1 thread (benchmarks/RESULTS.md, issue 26):
        SynthScenes' 64x64 one-hot mask at batch 8 has 1 bag in 13 pixels and its three SPADEs (0.4-0.7 GMAC each)
        gather 2.4-2.8x faster than they convolve (the step 1.10x); its 32x32 CSE maps, 1 bag in 4 pixels, are
        slower gathered (the step 0.95x). Under autocast (bf16 convolutions, twice as fast) the step gained nothing,
        so bf16 keeps the dense convs there, and its numbers; on a GPU it is unmeasured."""
        macs = self.dense_macs(x)
        if macs >= GATHER_MIN_MACS:
            return True
        kind = x.device.type
        if macs < GATHER_SPARSE_MACS or kind != "cpu":
            return False
        if (x.dtype != torch.float32 or torch.is_autocast_enabled(kind)) and not GATHER_SPARSE_AUTOCAST:
            return False
        B, _, h, w = x.shape
        return cond.resized((h, w)).plan().bags.shape[0] * GATHER_SPARSE_RATIO <= B * h * w

    def modulation(self, cond: PiecewiseMap, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(1 + gamma, beta), each (B, ch, h, w), of a piecewise-constant map at x's size, by gathers (1 is added
        to the bag rows before they are gathered: the same floats as adding it per pixel).

        mlp_shared's conv + ReLU is a function of each pixel's 3x3 label neighbourhood: one row per
        distinct neighbourhood (bag), A (U, hidden). mlp_gamma / mlp_beta read A through a second 3x3
        window, so they too are one row per distinct 5x5 neighbourhood (`PiecewiseMap.plan2`): computed
        as (U, hidden) x (hidden, 2 ch) products per tap and gathered, when U is well below the pixel
        count (fine maps); otherwise A is gathered to pixels and the two convs run as convolutions.
        """
        B, ch, h, w = x.shape
        plan = cond.plan()
        conv = self.mlp_shared[0]
        A = F.relu(bag_sum(tap_table(conv.weight, conv.bias, cond.table, cond.num_classes), plan))  # (U, hidden)
        U = A.shape[0]
        if GATHER_MODULATION and U * GATHER_RATIO <= B * h * w:
            weight = torch.cat([self.mlp_gamma.weight, self.mlp_beta.weight])     # (2 ch, hidden, 3, 3)
            bias = torch.cat([self.mlp_gamma.bias, self.mlp_beta.bias])           # (2 ch,)
            plan2 = cond.plan2()
            rows = bag_sum(tap_table(weight, bias, A, U), plan2)       # (V, 2 ch)
            return gather_bags(1 + rows[:, :ch], plan2, B, h, w), gather_bags(rows[:, ch:], plan2, B, h, w)
        actv = gather_bags(A, plan, B, h, w)                            # (B, hidden, h, w), channels_last strides
        if not x.is_contiguous(memory_format=torch.channels_last):
            actv = actv.contiguous()                                    # NCHW like x
        return 1 + self.mlp_gamma(actv), self.mlp_beta(actv)


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
        dx = self.conv_0(leaky_relu_(self.norm_0(x, cond)))
        dx = self.conv_1(leaky_relu_(self.norm_1(dx, cond)))
        return x_s + dx
