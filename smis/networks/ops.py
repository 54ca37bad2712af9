"""Vectorised per-class tensor operations shared by the generator, the encoder and the losses.

Everything here works on a whole batch at once: no Python loop over samples, classes or pixels.
Label maps are `(B, H, W)` int64 class ids in `[0, C)`.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def check_labels(label: torch.Tensor, num_classes: int, size: tuple[int, int] | None = None) -> None:
    """Raise a clear error unless `label` is a (B, H, W) integer map with ids in [0, num_classes)."""
    if label.dim() != 3:
        raise ValueError(f"label must be a (B, H, W) map of class ids, got shape {tuple(label.shape)}; "
                         "add a batch dimension with label[None] or take argmax(1) of a one-hot mask")
    if label.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8):
        raise TypeError(f"label must hold integer class ids, got dtype {label.dtype}; use label.long()")
    if size is not None and tuple(label.shape[1:]) != tuple(size):
        raise ValueError(f"label is {tuple(label.shape[1:])} (H, W) but this network was built for {tuple(size)}; "
                         "resize the label map with smis.networks.resize_labels or build for that size")
    if label.numel() and not torch.compiler.is_compiling():            # no graph break under torch.compile
        lo, hi = int(label.min()), int(label.max())                    # one device sync
        if lo < 0 or hi >= num_classes:
            raise ValueError(f"label ids must lie in [0, {num_classes}), found [{lo}, {hi}]; map the "
                             "dontcare / ignore id (e.g. 255) to a class id first")


def resize_labels(label: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Resize a (B, H, W) label map with legacy `nearest` (the SPADE convention) -> (B, h, w) long."""
    if tuple(label.shape[-2:]) == tuple(size):
        return label.long()
    out = F.interpolate(label[:, None].float(), size=tuple(size), mode="nearest")  # (B, 1, h, w)
    return out[:, 0].long()


def one_hot(label: torch.Tensor, num_classes: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """(B, H, W) ids -> (B, C, H, W) one-hot mask."""
    return F.one_hot(label.long(), num_classes).permute(0, 3, 1, 2).to(dtype)


def label_presence(label: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(B, H, W) ids -> (B, C) bool: which classes occur in each sample."""
    B = label.shape[0]
    present = torch.zeros(B, num_classes, dtype=torch.bool, device=label.device)
    return present.scatter_(1, label.reshape(B, -1).long(), True)      # (B, C)


def classwise_max_pool(feat: torch.Tensor, label: torch.Tensor, num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Eq. 16-17: max of `feat` over the pixels of each class region of each sample.

    feat  (B, D, h, w) features of one encoder layer; label (B, h, w) ids at that layer's size.
    Returns pooled (B, C, D), zero for classes absent from a sample, and present (B, C) bool.
    One `scatter_reduce` over (sample, class) bins; gradients reach the arg-max pixels.
    """
    B, D, h, w = feat.shape
    if tuple(label.shape) != (B, h, w):
        raise ValueError(f"label {tuple(label.shape)} must match the feature map (B, h, w) = {(B, h, w)}; "
                         "resize it with resize_labels(label, feat.shape[-2:])")
    index = label.reshape(B, 1, h * w).long().expand(B, D, h * w)     # (B, D, hw), no copy
    pooled = feat.new_zeros(B, D, num_classes)                         # (B, D, C)
    pooled = pooled.scatter_reduce(2, index, feat.reshape(B, D, h * w), reduce="amax", include_self=False)
    return pooled.transpose(1, 2), label_presence(label, num_classes)  # (B, C, D), (B, C)


def cse_map(table: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
    """Eq. 12 by gather: out[b, :, y, x] = table[b, label[b, y, x], :].

    table (B, C, N) per-sample class vectors (`W + Z_l`); label (B, h, w) -> (B, N, h, w).
    Costs O(B N h w): no one-hot matrix product over all pixels and classes.
    """
    B, C, N = table.shape
    h, w = label.shape[-2:]
    index = label.reshape(B, 1, h * w).long().expand(B, N, h * w)     # (B, N, hw), no copy
    out = torch.gather(table.transpose(1, 2), 2, index)                # (B, N, hw)
    return out.view(B, N, h, w)


def spectral_norm(module: nn.Module) -> nn.Module:
    """PyTorch's standard spectral norm (state keys weight_orig, weight_u, weight_v)."""
    return nn.utils.spectral_norm(module)


def init_weights(module: nn.Module, gain: float = 0.02) -> nn.Module:
    """SPADE's initialisation: Xavier-normal (gain 0.02) conv / linear weights, zero biases.

    Spectral-normed layers are initialised through `weight_orig`. Embeddings keep N(0, 1).
    """
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            weight = m.weight_orig if hasattr(m, "weight_orig") else m.weight
            nn.init.xavier_normal_(weight.data, gain=gain)
            if m.bias is not None:
                nn.init.zeros_(m.bias.data)
    return module
