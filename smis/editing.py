"""Editing with class- and layer-wise latents (Sec. 4.4): pure, batched edits of the codes.

Every function is pure: latents in, new latents (or images) out, nothing edited in place;
randomness comes from a passed `torch.Generator` (on the latents' device). Layer positions index
the L axis of `zc`: 0 = the shallowest latent layer (fine, texture-like, feeds `up_2`), L - 1 = the
deepest (coarse, colour-like, feeds `head_0`); see `smis.networks.generator`.

Arguments follow one rule (`smis.networks.latents`, shared with the generator and the editor):
label maps are integer tensors with ids in [0, C) (`check_label`; float maps are refused, not
truncated); class ids and layer positions are integers in [0, K) / [0, L) (`check_class_ids`,
`check_layer_ids`; bool and float refused, even 1.0); -1 is an error, not the last class); and
editing a class the mask does not contain is a ValueError naming it and the classes present
(`check_classes_present`), since it would silently change nothing.

    sample_images          N images for one mask in one batched generator call        (Fig. 12)
    encode / encode_dataset  encoder means of photos' codes
    smis.sampling.style_latents  a reference's codes for shared classes, the prior elsewhere (4.4.1, Fig. 13)
    resample, Latents.replace  new codes for chosen classes x layers (`code_mask`), all others kept  (4.4.2, Fig. 14)
    paste_classes          copy chosen classes' pixels from the source photo (identity)
    principal_directions   PCA of each class's codes at each layer over a dataset      (4.4.3, Fig. 15)
    move / interpolate     walk one class's code along directions / between two codes
    case_mask / resample_cases / resample_where  one class (and layer) per sample, in one draw

How well the edits work (locality, which factor each layer moves, the layer table and the findings of
notebook 06) is measured in `smis.edit_measures`; whether each latent layer is used, in `smis.diagnostics`.

    nets = load_or_untrained("checkpoints/synthscenes_clvae.pt")   # smis.models.load_or_untrained
    images, labels, mu = encode_dataset(nets, make_dataset("synthscenes", None, "test", size=64, length=20))
    new = resample(mu[:1], classes=[3], layers=[0], generator=torch.Generator().manual_seed(0))
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from smis.capabilities import UnsupportedEdit, require_edit
from smis.networks import Latents, Networks, label_presence
from smis.networks.latents import (check_class_ids, check_classes_present, check_label, check_layer_ids, code_mask,
                                   require_class_codes)
from smis.sampling import generate, prior_latents

# --------------------------------------------------------------------------------------------
# Generation and encoding


def _labels(label: torch.Tensor, num_classes: int | None, values: bool = True) -> torch.Tensor:
    """(H, W) or (B, H, W) integer ids in [0, num_classes) -> (B, H, W) long (`check_label`).

    values=False skips reading the ids where the network called next checks them itself."""
    return check_label(label, num_classes, allow_2d=True, values=values)


@torch.no_grad()
def synthesize(nets: Networks, label: torch.Tensor, latents: Latents | None) -> torch.Tensor:
    """label (B, H, W) + latents (batch B) -> images (B, 3, H, W) in [-1, 1]; one generator call."""
    return nets.G(_labels(label, nets.spec.num_classes, values=False), latents)   # G checks the ids


@torch.no_grad()
def sample_images(nets: Networks, label: torch.Tensor, n: int,
                  generator: torch.Generator | None = None) -> tuple[torch.Tensor, Latents]:
    """n prior samples for one mask (H, W) or (1, H, W): images (n, 3, H, W) and their latents.

    The codes are `smis.sampling.prior_latents` with `generator` (torch's global one when None):
    the same draws as `Latents.prior` of the mask expanded n times; the images one generator call."""
    label = _labels(label, nets.spec.num_classes)
    if label.shape[0] != 1:
        raise ValueError(f"sample_images takes one mask, got a batch of {label.shape[0]}; loop over masks "
                         "or pass label[i]")
    if n < 1:
        raise ValueError(f"n={n} must be >= 1")
    generator = _global_generator(label.device) if generator is None else generator
    latents = prior_latents(nets, label, n, generator)                     # the n codes: one draw from generator
    return generate(nets, label.expand(n, -1, -1), latents, chunk=n), latents   # one generator call


def _global_generator(device: torch.device) -> torch.Generator:
    """torch's global generator of `device` (what generator=None draws from)."""
    if device.type == "cuda":
        return torch.cuda.default_generators[device.index if device.index is not None else torch.cuda.current_device()]
    return torch.default_generator


@torch.no_grad()
def encode(nets: Networks, image: torch.Tensor, label: torch.Tensor) -> Latents:
    """Encoder means of a photo's codes: image (B, 3, H, W) in [-1, 1], label (B, H, W) -> Latents.

    `present` says which classes the encoder saw at each layer (absent ones have mean 0, the prior's).
    """
    if nets.E is None:
        require_edit(nets, "style-guided synthesis")                    # names the system and the fix
        raise UnsupportedEdit(f"the {nets.variant!r} variant has no encoder; style-guided synthesis and photo "
                              "editing need one (use clvae, groupdnet or gaugan_vae)")
    label = _labels(label, nets.spec.num_classes, values=False)           # E checks the ids
    if image.dim() == 3:
        image = image[None]
    return nets.E(image, label)[0]


@torch.no_grad()
def encode_dataset(nets: Networks, dataset, n: int | None = None, batch_size: int = 32,
                   device: torch.device | str | None = None) -> tuple[torch.Tensor, torch.Tensor, Latents]:
    """The first n samples of `dataset`: images (M, 3, H, W), labels (M, H, W), encoder means (M, ...)."""
    device = torch.device(device) if device is not None else next(nets.G.parameters()).device
    n = len(dataset) if n is None else min(n, len(dataset))
    if n < 1:
        raise ValueError(f"encode_dataset needs at least one sample; the dataset has {len(dataset)}, n={n}")
    images, labels, codes = [], [], []
    for start in range(0, n, batch_size):                                  # batches, not samples
        items = [dataset[i] for i in range(start, min(n, start + batch_size))]
        img = torch.stack([it["image"] for it in items]).to(device)
        lab = torch.stack([it["label"] for it in items]).to(device)
        images.append(img), labels.append(lab), codes.append(encode(nets, img, lab))
    return torch.cat(images), torch.cat(labels), Latents.cat(codes)


# --------------------------------------------------------------------------------------------
# Which codes an edit touches (the (L, K) selection of one edit is `code_mask`, from smis.networks.latents)


def shared_classes(label: torch.Tensor, ref_label: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(B, C) bool: classes present in both masks (ref_label may have batch 1)."""
    label, ref_label = _labels(label, num_classes), _labels(ref_label, num_classes)
    return label_presence(label, num_classes) & label_presence(ref_label.to(label.device), num_classes)


# --------------------------------------------------------------------------------------------
# Object editing (4.4.2)


def resample(latents: Latents, classes: Sequence[int] | None, layers: Sequence[int] | None = None,
             generator: torch.Generator | None = None, global_code: bool = False) -> Latents:
    """New prior draws for `classes` x `layers` (None = all; [] = none); every other code kept exactly.

    A full (B, L, K, N) normal tensor is drawn, then picked from, so a seed gives a class the same
    new code whatever is edited alongside it. global_code: also draw a new z1 (drawn first).
    To replace codes by another sample's instead, use `latents.replace(other, classes, layers)`.

    classes / layers: integer ids in [0, K) / [0, L) (TypeError for float or bool, ValueError out of
    range). A listed class that no sample's mask contains (`latents.present` false at every layer)
    is a ValueError naming it and the classes present: resampling it would change nothing.
    """
    if latents.zc is None:
        if classes or layers:
            require_class_codes(latents, "resampling class codes")
        return resample_where(latents, None, generator, global_code)
    take = code_mask(latents.zc.shape[1:3], classes, layers, latents.zc.device)   # (L, K)
    if classes is not None:
        check_classes_present(latents.present, check_class_ids(classes, latents.zc.shape[2]), what="resample")
    return resample_where(latents, take[None], generator, global_code)


def paste_classes(image: torch.Tensor, source: torch.Tensor, label: torch.Tensor,
                  classes: Sequence[int]) -> torch.Tensor:
    """`image` with the pixels of `classes` copied from `source` (e.g. face and skin, to keep identity).

    image, source (B, 3, H, W) (source may have batch 1); label (B, H, W) or (H, W) integer ids.
    classes: integer ids >= 0; a class no sample's mask contains is a ValueError naming it and the
    classes present (pasting it would copy nothing).
    """
    label = _labels(label, None)
    if image.shape[-2:] != label.shape[-2:] or source.shape[-2:] != label.shape[-2:]:
        raise ValueError(f"image {tuple(image.shape)}, source {tuple(source.shape)} and label {tuple(label.shape)} "
                         "must share (H, W)")
    ids = check_class_ids(classes, None, label.device)                     # (n,)
    if ids.numel() and label.numel():
        C = int(torch.maximum(label.max(), ids.max())) + 1                  # one device sync
        check_classes_present(label_presence(label, C)[:, None], ids, what="paste_classes")   # (B, 1, C)
    keep = torch.isin(label, ids)                                           # (B, H, W)
    return torch.where(keep[:, None], source.to(image.dtype), image)


# --------------------------------------------------------------------------------------------
# Material editing (4.4.3)


@dataclass(frozen=True)
class Directions:
    """Principal directions of the encoded codes, per latent layer and class."""

    mean: torch.Tensor          # (L, K, N) mean code
    components: torch.Tensor    # (L, K, D, N) unit directions, largest variance first
    std: torch.Tensor           # (L, K, D) standard deviation of the codes along each direction
    count: torch.Tensor         # (L, K) number of codes the PCA saw (< 2: directions meaningless)


def principal_directions(codes: Latents, k: int = 3) -> Directions:
    """PCA of the present codes of every class at every layer, all (L, K) pairs in one batch.

    codes: encoder means over a dataset (M samples; see `encode_dataset`). Absent codes are left out.
    The covariance matrices (L, K, N, N) are decomposed with one batched `torch.linalg.eigh`, which
    equals the SVD of the centred present codes (cheaper than the SVD when M >> N). Signs are fixed so
    each direction's largest-magnitude entry is positive.
    """
    require_class_codes(codes, "principal_directions")
    x, present = codes.zc.double(), codes.present                          # (M, L, K, N), (M, L, K)
    N = x.shape[-1]
    if not 1 <= k <= N:
        raise ValueError(f"k={k} directions requested; the codes have N = {N} dimensions, so use 1..{N}")
    w = present.to(x.dtype)[..., None]                                     # (M, L, K, 1)
    count = w.sum(0)[..., 0]                                                # (L, K)
    mean = (x * w).sum(0) / count.clamp(min=1)[..., None]                   # (L, K, N)
    xc = (x - mean) * w                                                     # absent rows -> 0
    cov = torch.einsum("mlkn,mlko->lkno", xc, xc) / (count - 1).clamp(min=1)[..., None, None]   # (L, K, N, N)
    evals, evecs = torch.linalg.eigh(cov)                                   # ascending
    evals, evecs = evals.flip(-1)[..., :k], evecs.flip(-1)[..., :k]          # (L, K, k), (L, K, N, k)
    comps = evecs.transpose(-1, -2)                                         # (L, K, k, N)
    sign = torch.sign(comps.gather(-1, comps.abs().argmax(-1, keepdim=True)))   # (L, K, k, 1)
    comps = comps * torch.where(sign == 0, 1.0, sign)
    dt = codes.zc.dtype
    return Directions(mean.to(dt), comps.to(dt), evals.clamp(min=0).sqrt().to(dt), count.long())


def random_direction(dim: int, generator: torch.Generator | None = None, device: torch.device | str | None = None,
                     dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """A random unit vector (dim,)."""
    v = torch.randn(dim, generator=generator, device=device, dtype=dtype)
    return v / v.norm()


def move(latents: Latents, cls: int, layer: int, direction: torch.Tensor, alpha) -> Latents:
    """zc[:, layer, cls] += alpha . direction; every other code kept exactly.

    direction (N,) with alpha a scalar or (B,) (one step per sample), or directions (D, N) with
    alpha (D,) or (B, D) (a weighted sum). Broadcasting a batch-1 `latents` to a sweep of alphas:
    `move(latents.expand(len(alphas)), ...)`. cls / layer: one integer id each, in [0, K) / [0, L);
    a class that no sample's mask contains is a ValueError (moving its code would change nothing).
    """
    require_class_codes(latents, "move")
    B, L, K, N = latents.zc.shape
    cls_id = check_class_ids(cls, K, what="cls", single=True)
    layer = int(check_layer_ids(layer, L, what="layer", single=True)[0])
    check_classes_present(latents.present, cls_id, what="move")
    cls = int(cls_id[0])
    if direction.dim() not in (1, 2) or direction.shape[-1] != N:
        raise ValueError(f"direction must be (N,) or (D, N) with N = {N}, got {tuple(direction.shape)}")
    d = direction.to(latents.zc).reshape(-1, N)                              # (D, N)
    a = torch.as_tensor(alpha, dtype=latents.zc.dtype, device=latents.zc.device)
    if direction.dim() == 1:
        a = a.reshape(-1, 1)                                                # (1 or B, 1)
    elif a.dim() == 1:
        a = a[None]                                                         # (1, D)
    if a.dim() != 2 or a.shape[1] != d.shape[0] or a.shape[0] not in (1, B):
        raise ValueError(f"alpha of shape {tuple(torch.as_tensor(alpha).shape)} does not fit {d.shape[0]} direction(s) "
                         f"and a batch of {B}: give a scalar or (B,) for one direction, (D,) or (B, D) for D")
    step = torch.zeros_like(latents.zc)
    step[:, layer, cls] = a @ d                                             # (1 or B, N) broadcast to (B, N)
    return Latents(latents.z, latents.zc + step, latents.present)


def interpolate(start: Latents, end: Latents, t, classes: Sequence[int] | None = None,
                layers: Sequence[int] | None = None, global_code: bool = False) -> Latents:
    """A batch of len(t) latents: `classes` x `layers` codes (and z1 if global_code) lerp from start
    (t = 0) to end (t = 1); all other codes stay start's. start and end have batch 1."""
    if start.batch_size != 1 or end.batch_size != 1:
        raise ValueError(f"interpolate takes batch-1 latents, got {start.batch_size} and {end.batch_size}; "
                         "index with [i]")
    ref = start.zc if start.zc is not None else start.z
    t = torch.as_tensor(t, dtype=ref.dtype, device=ref.device).reshape(-1)   # (T,)
    lerp = lambda a, b, w: None if a is None else torch.lerp(a, b.to(a), w)   # exact at t = 0 and t = 1
    mid = Latents(lerp(start.z, end.z, t[:, None]) if start.z is not None else None,
                  lerp(start.zc, end.zc, t[:, None, None, None]),
                  None if start.zc is None else start.present.expand(len(t), -1, -1))
    return start.expand(len(t)).replace(mid, classes=classes if start.zc is not None else [],
                                        layers=layers if start.zc is not None else [], global_code=global_code)


# --------------------------------------------------------------------------------------------
# Per-sample edits: one class (and layer) per sample, what `smis.edit_measures` resamples


def case_mask(latents: Latents, classes: torch.Tensor, layers: torch.Tensor | None = None) -> torch.Tensor:
    """(B, L, K) bool: sample b edits class classes[b] at layer layers[b] (None = every layer).

    classes (B,) / layers (B,) or one: integer ids in [0, K) / [0, L). classes[b] must be in sample
    b's mask (`latents.present` at some layer), else ValueError naming the sample, the class and the
    classes that sample has."""
    require_class_codes(latents, "case_mask")
    B, L, K, _ = latents.zc.shape
    device = latents.zc.device
    classes = check_class_ids(classes, K, device)                          # (n,)
    if classes.numel() != B:
        raise ValueError(f"classes must hold one id in 0..{K - 1} per sample ({B}), got {classes.tolist()}")
    check_classes_present(latents.present, classes, per_sample=True, what="case_mask")
    take = torch.zeros(B, L, K, dtype=torch.bool, device=device)
    rows = torch.arange(B, device=device)
    if layers is None:
        take[rows, :, classes] = True
    else:
        layers = check_layer_ids(layers, L, device)
        if layers.numel() not in (1, B):
            raise ValueError(f"layers must hold one position per sample ({B}) or one for all, got {layers.tolist()}")
        take[rows, layers.expand(B), classes] = True
    return take


def resample_where(latents: Latents, take: torch.Tensor | None, generator: torch.Generator | None = None,
                   global_code: bool = False) -> Latents:
    """New prior draws where take (B, L, K) is True (None: no class code); z1 too if global_code.

    Draws z1 first (when asked), then a full (B, L, K, N) tensor to pick from, like `Latents.prior`."""
    z = latents.z
    if global_code:
        if z is None:
            raise ValueError("global_code=True but these latents have no global code")
        z = torch.randn(z.shape, generator=generator, device=z.device, dtype=z.dtype)
    if take is None or latents.zc is None:
        return Latents(z, latents.zc, latents.present)
    fresh = torch.randn(latents.zc.shape, generator=generator, device=latents.zc.device, dtype=latents.zc.dtype)
    return Latents(z, torch.where(take[..., None], fresh, latents.zc), latents.present)


def resample_cases(latents: Latents, classes: torch.Tensor, layers: torch.Tensor | None = None,
                   generator: torch.Generator | None = None) -> Latents:
    """Per-sample edit: new codes for class classes[b] at layer layers[b] (None = every layer) of sample b."""
    return resample_where(latents, case_mask(latents, classes, layers), generator)
