"""Multi-scale PatchGAN discriminator (pix2pixHD / SPADE) returning features for feature matching."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from smis.networks.ops import check_labels, one_hot, spectral_norm


class PatchDiscriminator(nn.Module):
    """PatchGAN on concat(one-hot mask, image): n_layers 4x4 convs, then a 1-channel logit map."""

    def __init__(self,
                 in_channels: int,          # C + 3
                 ndf: int = 64,             # width of the first conv; doubled per layer, capped at 512
                 n_layers: int = 4,         # conv layers before the logit conv
                 ):
        super().__init__()
        nf, stages = ndf, [nn.Sequential(nn.Conv2d(in_channels, ndf, 4, stride=2, padding=2), nn.LeakyReLU(0.2))]
        for n in range(1, n_layers):
            prev, nf = nf, min(nf * 2, 512)
            conv = spectral_norm(nn.Conv2d(prev, nf, 4, stride=1 if n == n_layers - 1 else 2, padding=2, bias=False))
            stages.append(nn.Sequential(conv, nn.InstanceNorm2d(nf, affine=False), nn.LeakyReLU(0.2)))
        stages.append(nn.Sequential(nn.Conv2d(nf, 1, 4, stride=1, padding=2)))
        self.stages = nn.ModuleList(stages)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats = []
        for stage in self.stages:                                       # n_layers + 1 stages
            x = stage(x)
            feats.append(x)
        return feats                                                    # last: (B, 1, h, w) logits


class Discriminator(nn.Module):
    """Two-scale PatchGAN (the second sees the input average-pooled by 2)."""

    def __init__(self,
                 num_classes: int,          # C, one-hot channels of the mask input
                 ndf: int = 64,             # base width (narrow for the CPU preset)
                 num_scales: int = 2,       # number of PatchGANs / image scales
                 n_layers: int = 4,         # conv layers per PatchGAN
                 ):
        super().__init__()
        self.num_classes = num_classes
        self.scales = nn.ModuleList(PatchDiscriminator(num_classes + 3, ndf, n_layers) for _ in range(num_scales))

    def forward(self, label: torch.Tensor, image: torch.Tensor) -> list[list[torch.Tensor]]:
        """label (B, H, W) ids, image (B, 3, H, W) -> per scale, the features of each stage (last = logits)."""
        check_labels(label, self.num_classes)
        x = torch.cat([one_hot(label, self.num_classes, image.dtype), image], dim=1)   # (B, C + 3, H, W)
        out = []
        for i, d in enumerate(self.scales):                             # 2 scales
            if i:
                x = F.avg_pool2d(x, 3, stride=2, padding=1, count_include_pad=False)
            out.append(d(x))
        return out
