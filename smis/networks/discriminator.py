"""Multi-scale PatchGAN discriminator (pix2pixHD / SPADE) returning features for feature matching."""
from __future__ import annotations

import weakref

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
        self._maps: tuple | None = None          # label_maps' cache: (weakref to the label, version, dtype,
                                                 # device, maps)

    def label_maps(self,
                   label: torch.Tensor,         # (B, H, W) ids
                   dtype: torch.dtype,          # the images' dtype
                   ) -> list[torch.Tensor]:
        """Per scale, the mask part of D's input: the one-hot mask (B, C, H, W), then its average pools. Kept for
        the last label seen (the same tensor object, unmodified), so that the training step's three D calls on one
        label (the G step's fake and real passes, the D step's) build them once: a pool of the concatenated input
        is the concatenation of the pools (channels are pooled apart), so the floats are those of pooling it whole."""
        key = (label._version, dtype, label.device)
        cached = self._maps
        if cached is not None and cached[0]() is label and cached[1:4] == key:
            return cached[4]
        maps = [one_hot(label, self.num_classes, dtype)]
        for _ in range(1, len(self.scales)):
            maps.append(F.avg_pool2d(maps[-1], 3, stride=2, padding=1, count_include_pad=False))
        if not torch.compiler.is_compiling():
            self._maps = (weakref.ref(label, self._forget), *key, maps)     # dropped with the label (memory)
        return maps

    def _forget(self, ref: weakref.ref) -> None:
        """The cached label was freed: drop its maps (a training step's next batch does not hold the last one's)."""
        if self._maps is not None and self._maps[0] is ref:
            self._maps = None

    def forward(self,
                label: torch.Tensor,            # (B, H, W) ids
                image: torch.Tensor,            # (k B, 3, H, W): k batches of images of that label (k >= 1)
                ) -> list[list[torch.Tensor]]:
        """D(cat([one-hot mask, image])) at each scale -> per scale, the features of each stage (last = logits).
        With k > 1 every batch of B images is paired with the label batch (the D step's cat([fake, real]))."""
        check_labels(label, self.num_classes)
        B, n = label.shape[0], image.shape[0]
        if n % B or image.shape[-2:] != label.shape[-2:]:
            raise ValueError(f"D takes images (k B, 3, H, W) for labels (B, H, W); got images {tuple(image.shape)} "
                             f"and labels {tuple(label.shape)}: pass one label per image, or the label batch once "
                             "for k batches of its images")
        maps = self.label_maps(label, image.dtype)
        C, out, x = self.num_classes, [], image
        for i, d in enumerate(self.scales):                             # 2 scales
            mask = maps[i] if n == B else torch.cat([maps[i]] * (n // B))   # cat keeps the memory format
            if i:   # the image channels of the last scale's input, pooled: `image` feeds one op, so its gradient is
                    # one sum (the floats of pooling the concatenated input whole, as D did before the masks were kept)
                x = F.avg_pool2d(x[:, C:], 3, stride=2, padding=1, count_include_pad=False)
            x = torch.cat([mask, x], dim=1)                            # (k B, C + 3, H / 2^i, W / 2^i)
            out.append(d(x))
        return out
