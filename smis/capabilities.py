"""What each system of the registry can do, and the one error for an edit it cannot do.

    capabilities("cimle")    # {"prior samples": True, "reconstruction": False, ...}
    require_edit(nets, "reconstruction")    # UnsupportedEdit naming the system, why, and what to use instead

Used by `smis.sampling` (encoder means, reconstruction), `smis.editing` (encode, style, per-class
resampling) and the editor (`smis.widgets`), so every path gives the same message.
"""
from __future__ import annotations

from smis.networks import VARIANTS, Networks


EDITS = {   # edit -> (what it needs, the Variant flags that provide it)
    "prior samples": ("", ()),
    "reconstruction": ("no encoder (photo -> codes)", ("encoder",)),
    "style-guided synthesis": ("no encoder (photo -> codes)", ("encoder",)),
    "per-class resampling": ("no per-class codes", ("class_codes",)),
    "photo editing (the editor)": ("no encoder or no per-class codes", ("encoder", "class_codes")),
}
SYSTEM_NAMES = {"cimle": "cIMLE", "gaugan": "GauGAN", "gaugan_vae": "GauGAN-VAE", "gaugan_vae_lowkl": "GauGAN-VAE*"}


class UnsupportedEdit(ValueError):
    """An edit the model's system cannot do (e.g. reconstruction without an encoder); the message names the fix."""


def capabilities(variant: str) -> dict[str, bool]:
    """{edit: supported} for a variant of the registry (EDITS): prior samples always; reconstruction and
    style-guided synthesis need an encoder; per-class resampling needs per-class codes."""
    v = VARIANTS[variant]
    return {edit: all(getattr(v, f) for f in flags) for edit, (_, flags) in EDITS.items()}


def require_edit(nets: Networks, edit: str) -> None:
    """Raise UnsupportedEdit unless `nets` can do `edit` (a key of EDITS), naming why and what to use instead."""
    can = capabilities(nets.variant)
    if can[edit]:
        return
    name = SYSTEM_NAMES.get(nets.variant, nets.variant)
    lacks = EDITS[edit][0]
    others = [v for v in VARIANTS if capabilities(v)[edit]]
    has = ", ".join(e for e, ok in can.items() if ok)
    extra = (": its noise is one per-pixel map for the whole image, fed to the generator with the mask"
             if VARIANTS[nets.variant].family == "cimle" else "")
    raise UnsupportedEdit(f"{name} (variant {nets.variant!r}) cannot do {edit}: it has {lacks}{extra}. What it can "
                          f"do: {has} (smis.editing.sample_images, smis.sampling.sample_prior). Fix: load a clvae "
                          f"model (checkpoints/synthscenes_clvae.pt) or another variant that can: "
                          f"{', '.join(others)}.")
