"""The latent codes of the class- and layer-wise VAE (Eq. 10-18) as one small structure.

A `Latents` holds, for a batch of B samples:
- `z`       (B, N1)        the global code z1 that starts the generator (None for `gaugan`);
- `zc`      (B, L, K, N)   class codes of all L latent layers in ONE tensor (None when the variant
                           has no class codes: `gaugan`, `gaugan_vae`); K = C classes, or K = 1 for
                           the `no_classwise` ablation where one code per layer serves every class;
- `present` (B, L, K) bool which classes occur at each layer's scale (None with `zc`).

Absent classes carry the prior: the encoder gives them mean 0 and log-variance 0, so they add no KL
term and `reparameterize` draws them from N(0, I) like `prior` does.

The one validation rule for ids, used by the generator, `smis.editing` and the editor:
- `check_label`: label maps are integer tensors (bool / float refused, never truncated) with ids
  in [0, C) (the rule of `ops.check_labels`, which the generator and encoder apply);
- `check_class_ids` / `check_layer_ids`: class ids and layer positions are integers (Python or
  numpy ints, integer tensors; bool and float refused, even 1.0) in [0, K) / [0, L); negative ids
  are errors, never counted from the end;
- `code_mask`: the one class x layer selection ((L, K) bool) under that rule, for
  `Latents.replace` and every edit of `smis.editing`;
- `check_classes_present`: editing a class that the mask does not contain is an error, not a
  silent no-op; `require_class_codes`: a per-class edit of codes without class codes is one too;
- `LatentSpec.check_latents`: a `Latents` fits a network's spec and the label batch.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from smis.networks.ops import check_labels, label_presence, resize_labels


# -- validation --------------------------------------------------------------------------------------
def check_label(label: torch.Tensor,                 # (B, H, W) (or (H, W) with allow_2d) class ids
                num_classes: int | None,             # C; None: only ids >= 0 are checked (C unknown)
                size: tuple[int, int] | None = None,  # required (H, W); None: any
                allow_2d: bool = False,              # accept one (H, W) map and add the batch axis
                values: bool = True,                 # read the ids for the range check (one device sync)
                ) -> torch.Tensor:
    """The label-map rule of the generator (`ops.check_labels`) for every caller: a (B, H, W) integer
    tensor (int64 / int32 / int16 / uint8; bool and float are refused, never truncated) with ids in
    [0, num_classes). Returns the map as (B, H, W) int64 (no copy when it already is)."""
    if not isinstance(label, torch.Tensor):
        raise TypeError(f"label must be a torch tensor of class ids, got {type(label).__name__}; "
                        "convert it with torch.as_tensor(label, dtype=torch.long)")
    if allow_2d and label.dim() == 2:
        label = label[None]                                             # (1, H, W)
    if values and num_classes is not None:
        check_labels(label, num_classes, size)                         # dims, dtype, size, ids in [0, C)
        return label.long()
    # dims, dtype and size only: the same rule on an empty batch reads no value
    check_labels(label if label.dim() != 3 else label[:0], 1, size)
    if values and label.numel():
        lo = int(label.min())                                           # one device sync
        if lo < 0:
            raise ValueError(f"label ids must be >= 0, found {lo}; map the dontcare / ignore id to a class id first")
    return label.long()


def _is_int(v) -> bool:
    """A Python / numpy integer or a 0-d integer tensor; bool and float are not integers here."""
    if isinstance(v, (bool, np.bool_)):
        return False
    if isinstance(v, (int, np.integer)):
        return True
    return (isinstance(v, torch.Tensor) and v.dim() == 0 and v.dtype != torch.bool
            and not v.is_floating_point() and not v.is_complex())


def _int_ids(values, what: str, single: bool) -> torch.Tensor:
    """`values` -> (n,) int64 tensor (on the input's device for tensors, else the CPU); TypeError unless integer."""
    fix = (f"pass Python ints or an integer tensor (e.g. {what}=[1, 3] or torch.tensor([1, 3])); float ids, "
           "even whole ones like 1.0, are refused rather than truncated: cast deliberately with int(c) or .long()")
    if single:
        if not _is_int(values):
            raise TypeError(f"{what} must be one integer id, got {values!r} ({type(values).__name__}); {fix}")
        return torch.as_tensor(values).reshape(1).long()
    if isinstance(values, torch.Tensor):
        if values.dtype == torch.bool or values.is_floating_point() or values.is_complex():
            raise TypeError(f"{what} must be integer ids, got a {values.dtype} tensor; {fix}")
        return values.reshape(-1).long()                                # (n,)
    if isinstance(values, np.ndarray):
        if values.dtype.kind not in "iu":
            raise TypeError(f"{what} must be integer ids, got a numpy {values.dtype} array; {fix}")
        return torch.from_numpy(values.reshape(-1).astype(np.int64))
    if _is_int(values):
        return torch.tensor([int(values)], dtype=torch.long)
    if isinstance(values, (str, bytes)) or not hasattr(values, "__iter__"):
        raise TypeError(f"{what} must be integer ids (a list or an integer tensor), got {values!r}; {fix}")
    items = list(values)
    bad = [v for v in items if not _is_int(v)]                          # argument check, a handful of ids
    if bad:
        raise TypeError(f"{what} must be integer ids, got {bad[0]!r} ({type(bad[0]).__name__}) in {items!r}; {fix}")
    return torch.tensor([int(v) for v in items], dtype=torch.long)


def _show(ids: torch.Tensor) -> str:
    ids = ids.tolist()
    return str(ids) if len(ids) <= 16 else f"{ids[:16]}... ({len(ids)} ids)"


def _check_range(ids: torch.Tensor, bound: int | None, what: str, hint: str) -> None:
    if ids.numel():
        lo, hi = torch.stack([ids.min(), ids.max()]).tolist()          # one device sync
        if lo < 0 or (bound is not None and hi >= bound):
            raise ValueError(f"{what} {_show(ids)} out of range: {hint} (negative ids are errors, not counted "
                             "from the end)")


def check_class_ids(classes,                          # int, sequence of ints or integer tensor (any shape)
                    num_classes: int | None,          # K; None: only ids >= 0 are checked
                    device: torch.device | str | None = None,   # where the returned ids live (None: as given)
                    what: str = "classes",            # the argument's name, for the message
                    single: bool = False,             # exactly one id (a scalar), e.g. `move(cls=...)`
                    ) -> torch.Tensor:
    """The one rule for class ids: integers (bool / float refused, even 1.0) in [0, num_classes).
    Returns them as a flat (n,) int64 tensor; TypeError for non-integers, ValueError out of range."""
    ids = _int_ids(classes, what, single)
    if num_classes is None:
        hint = "class ids are >= 0"
    else:
        hint = f"the codes have K = {num_classes} classes; use 0..{num_classes - 1}"
        if num_classes == 1:
            hint += "; the no_classwise variant has one shared code: use classes=[0]"
    _check_range(ids, num_classes, what, hint)
    return ids if device is None else ids.to(device)


def check_layer_ids(layers,                           # int, sequence of ints or integer tensor
                    num_layers: int,                  # L, latent layers of the codes
                    device: torch.device | str | None = None,
                    what: str = "layers",
                    single: bool = False,
                    ) -> torch.Tensor:
    """Layer positions on the L axis of `zc` under the class-id rule: integers in [0, L). (n,) int64."""
    ids = _int_ids(layers, what, single)
    _check_range(ids, num_layers, what, f"the codes have L = {num_layers} latent layers; use 0..{num_layers - 1} "
                                        "(0 = shallowest / texture, L-1 = deepest / colour)")
    return ids if device is None else ids.to(device)


def code_mask(shape: tuple[int, int],                  # (L, K) of a zc (B, L, K, N)
              classes=None,                            # class ids (check_class_ids); None = all, [] = none
              layers=None,                             # positions on the L axis (check_layer_ids); None = all
              device: torch.device | str | None = None,
              ) -> torch.Tensor:
    """The one class x layer selection: (L, K) bool, True at `classes` x `layers`.

    Used by `Latents.replace` and every edit of `smis.editing` (resample, `smis.sampling.style_latents`, the
    measurements of `smis.edit_measures`). Ids follow `check_class_ids` / `check_layer_ids`: integers in
    [0, K) / [0, L); a negative id is a ValueError (never counted from the end), like an id >= K. Presence in a mask
    is not checked here (no mask is given): see `check_classes_present`.

        code_mask((5, 10), classes=[1, 3], layers=[4])    # class 1 and 3 at the deepest of 5 layers
    """
    L, K = shape
    rows = torch.ones(L, dtype=torch.bool, device=device)                 # (L,)
    cols = torch.ones(K, dtype=torch.bool, device=device)                 # (K,)
    if layers is not None:
        rows = torch.zeros_like(rows).index_fill_(0, check_layer_ids(layers, L, rows.device), True)
    if classes is not None:
        cols = torch.zeros_like(cols).index_fill_(0, check_class_ids(classes, K, cols.device), True)
    return rows[:, None] & cols[None, :]                                  # (L, K)


def check_classes_present(present: torch.Tensor,     # (B, L, K) bool, `Latents.present`
                          classes: torch.Tensor,     # (n,) ids in [0, K) (see check_class_ids), or (B,) if per_sample
                          per_sample: bool = False,  # classes[b] must be in sample b (else: in some sample)
                          what: str = "edit",        # the operation, for the message
                          ) -> None:
    """Raise ValueError for a class the mask does not contain, i.e. no latent layer marks it present:
    editing it would change nothing. A class in the mask but too small for a coarse layer's grid
    passes (its code there is simply unused). One device sync."""
    classes = classes.to(present.device)
    if per_sample:
        if classes.numel() != present.shape[0]:
            raise ValueError(f"{what}: one class per sample needed ({present.shape[0]}), got {_show(classes)}")
        ok = present[torch.arange(present.shape[0], device=present.device), :, classes].any(-1)   # (B,)
        if not bool(ok.all()):
            b = int((~ok).nonzero()[0])
            have = present[b].any(0).nonzero().flatten().tolist()
            raise ValueError(f"{what}: class {int(classes[b])} is absent from the mask of sample {b} (it has classes "
                             f"{have}); editing it would change nothing. Fix: pick a class of that sample's mask")
        return
    if not classes.numel():
        return
    seen = present.any(1).any(0)                                        # (K,) present in some sample, some layer
    ok = seen[classes]
    if not bool(ok.all()):
        missing = sorted(set(classes[~ok].tolist()))
        raise ValueError(f"{what}: classes {missing} are absent from the mask (the classes present are "
                         f"{seen.nonzero().flatten().tolist()}); editing them would change nothing. Fix: pick "
                         "classes of the mask, e.g. torch.unique(label)")


def require_class_codes(latents: Latents,          # the codes an edit is given
                        what: str,                 # the operation, for the message
                        ) -> None:
    """Raise ValueError when `latents` has no class codes (zc): the variant has no class- and layer-wise codes,
    so a per-class edit has nothing to change; the message names the fix."""
    if latents.zc is None:
        raise ValueError(f"{what} needs class codes (zc), but these latents have none: the variant has no "
                         "class- and layer-wise codes (gaugan, gaugan_vae, cimle). Fix: use a clvae or groupdnet "
                         "model, or edit the global code with global_code=True (cimle: resample the whole noise map)")


@dataclass(frozen=True)
class LatentSpec:
    """What latents a network pair uses; enough to sample from the prior without an image."""

    z_dim: int                      # N1, size of the global code z1; 0 = none (gaugan)
    z_dim_local: int                # N, size of each class code; 0 = none
    num_classes: int                # C, semantic classes including any dontcare class
    layers: tuple[int, ...] = ()    # encoder layers (1-based, shallow first) that give class codes;
                                    # (0,): one code per class for the whole generator (GroupDNet)
    classwise: bool = True          # False: one code per layer shared by all classes (K = 1)
    layerwise: bool = True          # False: the single latent layer feeds every CSE block
    class_kl: str = "present_mean"  # KL of the class codes: "present_mean" (Eq. 18: per layer, the mean over the
                                    # classes present) or "sum" (every class's code, present or not: GroupDNet)

    def __post_init__(self):
        if self.class_kl not in ("present_mean", "sum"):
            raise ValueError(f"class_kl={self.class_kl!r}; choose 'present_mean' (Eq. 18) or 'sum' (GroupDNet)")

    @property
    def has_class_codes(self) -> bool:
        return len(self.layers) > 0 and self.z_dim_local > 0

    @property
    def takes_latents(self) -> bool:
        """False for `gaugan`: G takes no codes (one image per mask); True when there is z1 or zc."""
        return self.z_dim > 0 or self.has_class_codes

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

    def check_latents(self,
                      z: "Latents | None",          # the latents a network is given
                      batch: int,                   # B of the label map they go with
                      who: str = "this generator",  # for the message
                      ) -> None:
        """Raise a clear error unless `z` is what a network of this spec takes for a batch of B:
        z (B, N1) iff z_dim > 0, zc (B, L, K, N) iff it has class codes. Shapes only (no device sync)."""
        fix = "build codes with Latents.prior(G.spec, label) or this model's encoder"
        needs = self.takes_latents
        if z is None:
            if needs:
                raise ValueError(f"{who} needs latents: pass Latents.prior(nets.spec, label, generator=g) "
                                 "or the encoder's output")
            return
        if not isinstance(z, Latents):
            raise TypeError(f"{who} takes its codes as a Latents, got {type(z).__name__}; {fix}")
        given = {n: tuple(t.shape) for n, t in (("z", z.z), ("zc", z.zc)) if t is not None}
        if any(shape[0] != batch for shape in given.values()):
            raise ValueError(f"the Latents ({', '.join(f'{n} {v}' for n, v in given.items())}) do not hold a batch "
                             f"of B = {batch}, the label map's; index or repeat them to match (z[i], z.expand(B), "
                             f"z.repeat_interleave(n)) or {fix}")
        if self.z_dim > 0:
            want = (batch, self.z_dim)
            if z.z is None:
                raise ValueError(f"{who} needs a global code z of shape (B, N1) = {want}, got none; {fix}")
            if tuple(z.z.shape) != want or not z.z.is_floating_point():
                raise ValueError(f"global code z is {tuple(z.z.shape)} {z.z.dtype}, {who} expects (B, N1) = {want} "
                                 f"floating point (spec z_dim = {self.z_dim}); {fix}")
        elif z.z is not None:
            raise ValueError(f"{who} takes no global code (spec z_dim = 0, gaugan) but z is {tuple(z.z.shape)}; "
                             f"pass None or {fix}")
        if self.has_class_codes:
            want = (batch, len(self.layers), self.code_classes, self.z_dim_local)
            if z.zc is None:
                raise ValueError(f"{who} needs class codes zc of shape (B, L, K, N) = {want}; sample them with "
                                 "Latents.prior(nets.spec, ...) or take the encoder's output")
            if tuple(z.zc.shape) != want or not z.zc.is_floating_point():
                raise ValueError(f"class codes zc are {tuple(z.zc.shape)} {z.zc.dtype}, {who} expects (B, L, K, N) = "
                                 f"{want} floating point (L = {len(self.layers)} latent layers {self.layers}, "
                                 f"K = {self.code_classes} classes, N = {self.z_dim_local}); codes of another "
                                 f"variant or dataset do not fit: {fix}")
        elif z.zc is not None:
            raise ValueError(f"{who} has no class codes (spec layers {self.layers}, z_dim_local {self.z_dim_local}) "
                             f"but zc is {tuple(z.zc.shape)}; drop them (Latents(z.z)) or {fix}")


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
        `label.device`. `label` must be an integer map (`check_label`; its ids are not read here, so
        this stays free of device syncs: the generator checks them).
        """
        label = check_label(label, spec.num_classes, values=False)
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
    def reparameterize(mu: "Latents",                            # posterior means, z (B, N1), zc (B, L, K, N)
                       logvar: "Latents",                        # posterior log-variances, same shapes
                       generator: torch.Generator | None = None,  # draws eps when `eps` is None (z first, then zc)
                       eps: "Latents | None" = None,             # given noise N(0, I) shaped like mu (training)
                       ) -> "Latents":
        """z = mu + eps * exp(logvar / 2) (the reparameterisation trick, Eq. 18's sampling), eps ~ N(0, I)
        drawn from `generator` or given as `eps` (its `present` is not read). `present` stays mu's."""
        def draw(m, lv, e):
            if m is None:
                return None
            if e is None:
                e = torch.randn(m.shape, generator=generator, device=m.device, dtype=m.dtype)
            return m + e * torch.exp(0.5 * lv)
        eps_z, eps_zc = (None, None) if eps is None else (eps.z, eps.zc)
        return Latents(draw(mu.z, logvar.z, eps_z), draw(mu.zc, logvar.zc, eps_zc), mu.present)

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
        The selection is `code_mask` (integer ids in [0, K) / [0, L): TypeError for bool / float,
        ValueError out of range; -1 is an error, not the last class). A listed class
        that no sample of `self` has in its mask (`present` false at every layer) is a ValueError
        naming it and the classes present: replacing its code would change nothing.
        """
        zc = self.zc
        if self.zc is None and other.zc is None:
            if classes or layers:
                raise ValueError("this variant has no class codes to replace; use global_code=True "
                                 "to swap the global code")
        else:
            if self.zc is None or other.zc is None:
                raise ValueError("replace needs class codes on both sides (one Latents has zc=None)")
            _, L, K, _ = self.zc.shape
            if other.zc.shape[1:] != self.zc.shape[1:]:
                raise ValueError(f"class codes differ in shape: {tuple(other.zc.shape)} vs {tuple(self.zc.shape)}")
            pick = code_mask((L, K), classes, layers, self.zc.device)     # (L, K)
            if classes is not None:
                check_classes_present(self.present, check_class_ids(classes, K), what="replace")
            zc = torch.where(pick[None, :, :, None], other.zc.to(self.zc.dtype), self.zc)   # (B, L, K, N)
        z = self.z
        if global_code:
            if self.z is None or other.z is None:
                raise ValueError("global_code=True but a global code is missing")
            z = other.z.expand_as(self.z).clone()
        return Latents(z, zc, self.present)
