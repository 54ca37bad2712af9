"""The one sampling path: prior codes, prior samples, encoder means, reconstructions and style codes, in chunks.

Every caller that turns masks into images goes through here: evaluation (`smis.evaluate`), editing
(`smis.editing.sample_images`), the trainer's TensorBoard grid and the notebooks.

    z = prior_latents(nets, label, k=4, seeds=[0, 1])                # (B K) codes, mask-major
    images = sample_prior(nets, label, k=4, seeds=[0, 1])            # (B, K, 3, H, W)
    images = sample_prior(nets, label, k=4, seeds=torch.Generator().manual_seed(0))
    recon = reconstruct(nets, image, label)                          # G(M, mean of E(M, I))
    z = style_latents(nets.spec, label, encode_means(nets, ref, ref_label), ref_label, generator)   # Sec. 4.4.1

Randomness: with one int seed per mask, mask i's K codes depend on its seed only (so every variant
sees the same codes on the same masks, whatever the batching); with one torch.Generator, the B K codes
are one draw. The codes never depend on `chunk`; the images do, in the last float bits (on a CPU, G at
another batch size runs other oneDNN/MKL kernels): compare them with a tolerance, not bitwise.
"""
from __future__ import annotations

from typing import Sequence

import torch

from smis.capabilities import UnsupportedEdit, require_edit
from smis.networks import Latents, LatentSpec, Networks, label_presence
from smis.networks.latents import check_class_ids, check_classes_present, check_label, code_mask, require_class_codes


def chunks(n: int,                # items in all
           size: int,             # items per chunk (>= 1)
           ) -> list[slice]:
    """Slices covering range(n) in pieces of at most `size`."""
    if size < 1:
        raise ValueError(f"chunk size must be >= 1, got {size}")
    return [slice(s, min(s + size, n)) for s in range(0, n, size)]


def prior_latents(nets: Networks,                          # any variant with latents (nets.spec.takes_latents)
                  label: torch.Tensor,                     # (B, H, W) class ids
                  k: int,                                  # codes per mask
                  seeds: Sequence[int] | torch.Generator,  # one int per mask, or one generator for the batch
                  ) -> Latents:
    """K standard-normal codes per mask, (B K) mask-major. `seeds`: one int per mask (each mask's
    codes then depend on its seed only) or one torch.Generator for the whole batch."""
    B = label.shape[0]
    if isinstance(seeds, torch.Generator):
        return Latents.prior(nets.spec, label.repeat_interleave(k, 0), generator=seeds)
    seeds = list(seeds)
    if len(seeds) != B:
        raise ValueError(f"got {len(seeds)} seeds for {B} masks; pass one seed per mask or a torch.Generator")
    gens = [torch.Generator(device=label.device).manual_seed(int(s)) for s in seeds]
    # one small draw per mask (random numbers only; the generator runs batched)
    return Latents.cat([Latents.prior(nets.spec, label[i:i + 1].expand(k, *label.shape[1:]), generator=g)
                        for i, g in enumerate(gens)])


@torch.no_grad()
def generate(nets: Networks,                  # the generator's owner
             label: torch.Tensor,             # (N, H, W) class ids
             latents: Latents | None,         # batch N, or None for a variant without latents
             chunk: int = 64,                 # images per G call
             ) -> torch.Tensor:
    """G(label, latents) in chunks of `chunk` images: (N, 3, H, W) in [-1, 1]."""
    parts = chunks(label.shape[0], chunk)
    if latents is None:
        return torch.cat([nets.G(label[s]) for s in parts])
    return torch.cat([nets.G(label[s], latents[s]) for s in parts])


@torch.no_grad()
def sample_prior(nets: Networks,                           # any variant
                 label: torch.Tensor,                      # (B, H, W) class ids
                 k: int,                                   # samples per mask
                 seeds: Sequence[int] | torch.Generator,   # see prior_latents
                 chunk: int = 64,                          # images per G call
                 return_latents: bool = False,             # also return the (B K) codes (None for gaugan)
                 ) -> torch.Tensor | tuple[torch.Tensor, Latents | None]:
    """K prior samples per mask, (B, K, 3, H, W); `gaugan` (no latents) gives (B, 1, 3, H, W).

    All B K codes are drawn first (so they do not depend on `chunk`), then G runs on `chunk` images
    at a time (the images do, in the last float bits: see the module docstring).
    """
    if k < 1:
        raise ValueError(f"k={k}: ask for at least one sample per mask")
    B = label.shape[0]
    if not nets.spec.takes_latents:
        out = generate(nets, label, None, chunk)[:, None]
        return (out, None) if return_latents else out
    z = prior_latents(nets, label, k, seeds)
    out = generate(nets, label.repeat_interleave(k, 0), z, chunk)            # (B K, 3, H, W)
    out = out.view(B, k, *out.shape[1:])
    return (out, z) if return_latents else out


@torch.no_grad()
def encode_means(nets: Networks, image: torch.Tensor, label: torch.Tensor, chunk: int = 64,
                 edit: str = "reconstruction",      # what the means are for (the error of a model without E)
                 ) -> Latents:
    """Posterior means E(M, I) (no sampling): what reconstruction and style guidance use. A model without an
    encoder (gaugan, cimle) raises `smis.capabilities.UnsupportedEdit` naming `edit` and the fix."""
    if nets.E is None:
        require_edit(nets, edit)
        raise UnsupportedEdit(f"variant {nets.variant!r} has no encoder, so it cannot reconstruct or copy a style. "
                              "Fix: evaluate it with sample_prior only.")
    return Latents.cat([nets.E(image[s], label[s])[0] for s in chunks(image.shape[0], chunk)])


@torch.no_grad()
def reconstruct(nets: Networks, image: torch.Tensor, label: torch.Tensor, chunk: int = 64) -> torch.Tensor:
    """G(M, mu) with mu the encoder's means for (M, I): (B, 3, H, W)."""
    return generate(nets, label, encode_means(nets, image, label, chunk), chunk)


# ---------------------------------------------------------------------------------------------
# Style-guided synthesis (Sec. 4.4.1): the codes of smis.evaluate.style_guided and of the editor's style button


def style_latents(spec: LatentSpec, label: torch.Tensor, reference: Latents, ref_label: torch.Tensor,
                  generator: torch.Generator | None = None, classes: Sequence[int] | None = None,
                  layers: Sequence[int] | None = None, global_code: bool = True) -> Latents:
    """Latents for `label` (B, H, W) in the style of a reference photo's codes (batch 1 or B).

    A class code comes from the reference where the class is in both masks, was seen by the encoder
    at that layer (`reference.present`) and is among `classes` x `layers` (None = all); every other
    code is a prior draw from `generator` (drawn exactly as `Latents.prior` draws). global_code:
    also take the reference's z1 (else the prior's); ignored for models without one (groupdnet, whose
    single latent "layer" holds one code map per class).

    `classes` are integer ids in [0, K); a listed class must be in the mask of at least one sample
    of `label` (ValueError otherwise, naming it and the classes present); a sample whose mask lacks
    a listed class simply keeps the prior for it.
    """
    label = check_label(label, spec.num_classes, allow_2d=True)
    ref_label = check_label(ref_label, spec.num_classes, allow_2d=True).to(label.device)
    prior = Latents.prior(spec, label, generator=generator)
    z = prior.z
    if global_code and spec.z_dim > 0:                                  # (GroupDNet has no global code)
        if reference.z is None:
            raise ValueError("global_code=True but the reference latents have no global code")
        z = reference.z.to(prior.z.dtype).expand_as(prior.z).clone()
    if prior.zc is None:
        if classes or layers:
            raise ValueError("this variant has no class codes: only the global code can be taken "
                             "(classes=None, layers=None)")
        return Latents(z)
    require_class_codes(reference, "style_latents")
    if reference.zc.shape[1:] != prior.zc.shape[1:]:
        raise ValueError(f"reference codes {tuple(reference.zc.shape)} do not match this model's "
                         f"{tuple(prior.zc.shape)}")
    B, L, K, _ = prior.zc.shape
    chosen = code_mask((L, K), classes, layers, label.device)                          # (L, K)
    if classes is not None:
        check_classes_present(prior.present, check_class_ids(classes, K), what="style_latents")
    if spec.classwise:
        both = label_presence(label, spec.num_classes) & label_presence(ref_label, spec.num_classes)   # (B, C)
    else:
        both = torch.ones(B, 1, dtype=torch.bool, device=label.device)
    take = chosen[None] & both[:, None, :] & reference.present                          # (B, L, K)
    zc = torch.where(take[..., None], reference.zc.to(prior.zc.dtype), prior.zc)         # (B, L, K, N)
    return Latents(z, zc, prior.present)
