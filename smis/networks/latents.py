"""The latent codes of the class- and layer-wise VAE (Eq. 10-18) as one small structure.

A `Latents` holds, for a batch of B samples:
- `z`       (B, N1)        the global code z1 that starts the generator (None for `gaugan`);
- `zc`      (B, L, K, N)   class codes of all L latent layers in ONE tensor (None when the variant
                           has no class codes: `gaugan`, `gaugan_vae`); K = C classes, or K = 1 for
                           the `no_classwise` ablation where one code per layer serves every class;
- `present` (B, L, K) bool which classes occur at each layer's scale (None with `zc`).

Absent classes carry the prior: the encoder gives them mean 0 and log-variance 0, so they add no KL
term and `reparameterize` draws them from N(0, I) like `prior` does.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from smis.networks.ops import label_presence, resize_labels


@dataclass(frozen=True)
class LatentSpec:
    """What latents a network pair uses; enough to sample from the prior without an image."""

    z_dim: int                      # N1, size of the global code z1; 0 = none (gaugan)
    z_dim_local: int                # N, size of each class code; 0 = none
    num_classes: int                # C, semantic classes including any dontcare class
    layers: tuple[int, ...] = ()    # encoder layers (1-based, shallow first) that give class codes
    classwise: bool = True          # False: one code per layer shared by all classes (K = 1)
    layerwise: bool = True          # False: the single latent layer feeds every CSE block

    @property
    def has_class_codes(self) -> bool:
        return len(self.layers) > 0 and self.z_dim_local > 0

    @property
    def code_classes(self) -> int:
        """K, the size of the class axis of `zc`."""
        return self.num_classes if self.classwise else 1

    def presence(self, label: torch.Tensor, size: tuple[int, int] | None = None) -> torch.Tensor:
        """(B, L, K) bool: classes present in `label` at each latent layer's scale.

        Layer l sees the label map resized (legacy nearest) to 1/2^l of `size` (default: the
        label's own size), the grid of encoder layer l. For `no_classwise` the one code is present.
        """
        H, W = size if size is not None else label.shape[-2:]
        B = label.shape[0]
        if not self.classwise:
            return torch.ones(B, len(self.layers), 1, dtype=torch.bool, device=label.device)
        maps = [resize_labels(label, (H >> l, W >> l)) for l in self.layers]   # L <= 5 tiny maps
        return torch.stack([label_presence(m, self.num_classes) for m in maps], dim=1)  # (B, L, C)


def _index(x: torch.Tensor | None, fn) -> torch.Tensor | None:
    return None if x is None else fn(x)


@dataclass
class Latents:
    """Global code, per-layer class codes and their presence for a batch (see module docstring)."""

    z: torch.Tensor | None = None          # (B, N1)
    zc: torch.Tensor | None = None         # (B, L, K, N)
    present: torch.Tensor | None = None    # (B, L, K) bool

    def __post_init__(self):
        if (self.zc is None) != (self.present is None):
            raise ValueError("zc and present go together: give both or neither")
        if self.zc is not None:
            if self.zc.dim() != 4 or tuple(self.present.shape) != tuple(self.zc.shape[:3]):
                raise ValueError(f"zc must be (B, L, K, N) and present (B, L, K); got {tuple(self.zc.shape)} "
                                 f"and {tuple(self.present.shape)}")
        if self.z is not None and self.zc is not None and self.z.shape[0] != self.zc.shape[0]:
            raise ValueError(f"z and zc disagree on the batch size: {self.z.shape[0]} vs {self.zc.shape[0]}")

    # -- construction -------------------------------------------------------------------------
    @classmethod
    def prior(cls, spec: LatentSpec, label: torch.Tensor, generator: torch.Generator | None = None,
              dtype: torch.dtype = torch.float32) -> "Latents":
        """Standard-normal codes for the classes of `label` (B, H, W); no image needed.

        Draws z (B, N1) first, then zc (B, L, K, N) for every class (present or not), so one seed
        gives the same code to a class whatever else the mask holds. `generator` must live on
        `label.device`.
        """
        B, device = label.shape[0], label.device
        z = zc = present = None
        if spec.z_dim > 0:
            z = torch.randn(B, spec.z_dim, generator=generator, device=device, dtype=dtype)
        if spec.has_class_codes:
            shape = (B, len(spec.layers), spec.code_classes, spec.z_dim_local)
            zc = torch.randn(shape, generator=generator, device=device, dtype=dtype)
            present = spec.presence(label)
        return cls(z, zc, present)

    @staticmethod
    def reparameterize(mu: "Latents", logvar: "Latents", generator: torch.Generator | None = None) -> "Latents":
        """z = mu + eps * exp(logvar / 2), eps ~ N(0, I) drawn from `generator` (z first, then zc)."""
        def draw(m, lv):
            if m is None:
                return None
            eps = torch.randn(m.shape, generator=generator, device=m.device, dtype=m.dtype)
            return m + eps * torch.exp(0.5 * lv)
        return Latents(draw(mu.z, logvar.z), draw(mu.zc, logvar.zc), mu.present)

    @classmethod
    def cat(cls, items: Sequence["Latents"]) -> "Latents":
        """Concatenate along the batch axis."""
        if not items:
            raise ValueError("Latents.cat needs at least one Latents")
        def join(name):
            parts = [getattr(x, name) for x in items]
            if all(p is None for p in parts):
                return None
            if any(p is None for p in parts):
                raise ValueError(f"cannot concatenate Latents where only some have {name!r}")
            return torch.cat(parts, dim=0)
        return cls(join("z"), join("zc"), join("present"))

    # -- batch manipulation -------------------------------------------------------------------
    @property
    def batch_size(self) -> int:
        for t in (self.z, self.zc):
            if t is not None:
                return t.shape[0]
        return 0

    def map(self, fn) -> "Latents":
        """Apply `fn` to every tensor held (z, zc, present)."""
        return Latents(_index(self.z, fn), _index(self.zc, fn), _index(self.present, fn))

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> "Latents":
        """Move to `device` and/or cast the codes to `dtype` (the bool `present` keeps its dtype)."""
        return self.map(lambda t: t.to(device=device, dtype=None if t.dtype == torch.bool else dtype))

    def detach(self) -> "Latents":
        return self.map(lambda t: t.detach())

    def __getitem__(self, index) -> "Latents":
        """Batch indexing: an int keeps the batch axis (z[i:i+1]); slices, lists, masks as usual."""
        if isinstance(index, int):
            index = slice(index, index + 1 if index != -1 else None)
        return self.map(lambda t: t[index])

    def repeat_interleave(self, n: int) -> "Latents":
        """Each sample n times in a row: (B, ...) -> (B n, ...)."""
        return self.map(lambda t: t.repeat_interleave(n, dim=0))

    def expand(self, n: int) -> "Latents":
        """A batch of one broadcast to n samples (a view; no copy)."""
        if self.batch_size != 1:
            raise ValueError(f"expand needs a batch of 1, got {self.batch_size}; use repeat_interleave instead")
        return self.map(lambda t: t.expand(n, *t.shape[1:]))

    # -- editing ------------------------------------------------------------------------------
    def replace(self, other: "Latents", classes: Sequence[int] | None = None,
                layers: Sequence[int] | None = None, global_code: bool = False) -> "Latents":
        """A copy whose class codes for `classes` x `layers` come from `other`.

        classes: class ids (None = all, [] = none); layers: positions on the L axis of `zc` (0 = the
        shallowest latent layer, see `LatentSpec.layers`; None = all); global_code: also take z.
        `other` may have batch 1 (broadcast to this batch). `present` stays this sample's.
        """
        zc = self.zc
        if self.zc is None and other.zc is None:
            if classes or layers:
                raise ValueError("this variant has no class codes to replace; use global_code=True "
                                 "to swap the global code")
        else:
            if self.zc is None or other.zc is None:
                raise ValueError("replace needs class codes on both sides (one Latents has zc=None)")
            B, L, K, _ = self.zc.shape
            if other.zc.shape[1:] != self.zc.shape[1:]:
                raise ValueError(f"class codes differ in shape: {tuple(other.zc.shape)} vs {tuple(self.zc.shape)}")
            pick = torch.zeros(L, K, dtype=torch.bool, device=self.zc.device)   # (L, K)
            rows = torch.arange(L, device=pick.device) if layers is None else torch.as_tensor(list(layers), dtype=torch.long, device=pick.device)
            cols = torch.arange(K, device=pick.device) if classes is None else torch.as_tensor(list(classes), dtype=torch.long, device=pick.device)
            if rows.numel() and (rows.min() < -L or rows.max() >= L):
                raise ValueError(f"layers {list(layers)} out of range: zc has L = {L} latent layers (0..{L - 1})")
            if cols.numel() and (cols.min() < -K or cols.max() >= K):
                raise ValueError(f"classes {list(classes)} out of range: zc has K = {K} classes (0..{K - 1})"
                                 + ("; the no_classwise variant has one shared code: use classes=[0]" if K == 1 else ""))
            pick[rows[:, None], cols[None, :]] = True
            zc = torch.where(pick[None, :, :, None], other.zc.to(self.zc.dtype), self.zc)   # (B, L, K, N)
        z = self.z
        if global_code:
            if self.z is None or other.z is None:
                raise ValueError("global_code=True but a global code is missing")
            z = other.z.expand_as(self.z).clone()
        return Latents(z, zc, self.present)
