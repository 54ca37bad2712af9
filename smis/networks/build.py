"""The variant registry and the one builder every variant and ablation goes through.

    variant         encoder   global z1   class codes                          CSE blocks
    gaugan          -         -           -                                    - (one-hot mask)
    gaugan_vae      yes       yes         -                                    - (one-hot mask)
    gaugan_vae_lowkl  as gaugan_vae, trained with lambda_KL = 0.0005 (the paper's GauGAN-VAE*, Table 2)
    clvae           yes       yes         layers 1..5, per class               yes   (the paper)
    no_classwise    yes       yes         layers 1..5, one code for all        yes
    no_layerwise    yes       yes         layer 3 only, per class, all blocks  yes
    clvae_L3..L5    yes       yes         layers 1..L-1, per class             yes   (encoder depth L)
    cimle           -         noise map   -                                    - (family "cimle": CRN, no D)
    groupdnet       group-conv  -         one spatial code map per class       - (family "groupdnet")

Each variant belongs to a family, a builder in FAMILIES: "spade" (the SPADE generator, encoder and
discriminator above), "groupdnet" (Zhu et al. 2020: group-convolution encoder and group-decreasing
generator, `smis.networks.groupdnet`, with SPADE's discriminator) or "cimle" (Li et al. 2019: cascaded
refinement network with per-pixel noise, `smis.networks.crn`; no encoder, no discriminator, trained by
`smis.imle`). Every family shares `Networks`, `LatentSpec` / `Latents`, sampling and the run machinery.

Encoder depth L (`depth=`, 3..6; `clvae` is L = 6) keeps encoder layers 1..L: layers 1..L-1 give
class codes, layer L the global code. Generator blocks wired to a missing layer (l >= L) are
conditioned on the class embedding W[L] alone.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torch import nn

from smis.config import Preset, get_preset
from smis.networks.crn import CRNGenerator, cimle_settings, noise_spec
from smis.networks.discriminator import Discriminator
from smis.networks.encoder import MAX_DEPTH, Encoder
from smis.networks.generator import Generator
from smis.networks.groupdnet import build_groupdnet
from smis.networks.latents import LatentSpec
from smis.networks.ops import init_weights


@dataclass(frozen=True)
class Variant:
    """One row of the registry: which parts of the model exist. encoder .. depth describe the spade family;
    another family's builder takes its sizes from the preset (groupdnet: `groupdnet.groupdnet_config`)."""

    family: str = "spade"           # builder in FAMILIES: "spade" | "groupdnet" | "cimle"
    encoder: bool = True            # has an encoder and a global code z1
    class_codes: bool = True        # class- and layer-wise codes + CSE conditioning
    classwise: bool = True          # False: one code per layer for all classes (ablation)
    layerwise: bool = True          # False: one latent layer (the middle one) feeds every block
    depth: int = MAX_DEPTH          # encoder conv layers L
    kl_weight: float | None = None  # lambda_KL this variant trains with; None = the preset's (Eq. 18)


VARIANTS: dict[str, Variant] = {
    "gaugan": Variant(encoder=False, class_codes=False),
    "gaugan_vae": Variant(class_codes=False),
    "gaugan_vae_lowkl": Variant(class_codes=False, kl_weight=0.0005),   # GauGAN-VAE* of Table 2
    "clvae": Variant(),
    "no_classwise": Variant(classwise=False),
    "no_layerwise": Variant(layerwise=False),
    "clvae_L3": Variant(depth=3),
    "clvae_L4": Variant(depth=4),
    "clvae_L5": Variant(depth=5),
    "cimle": Variant(family="cimle", encoder=False, class_codes=False),   # cIMLE of Table 4
    "groupdnet": Variant(family="groupdnet"),       # GroupDNet of Tables 2-3 (lambda_KL 0.05); sizes: groupdnet_config
}
MIDDLE_LAYER = 3                    # the no_layerwise ablation's single latent layer


def latent_spec(variant: Variant, preset: Preset) -> LatentSpec:
    """The LatentSpec a variant implies for a preset."""
    if variant.family == "cimle":
        return noise_spec(preset.num_classes, preset.image_size, cimle_settings(preset.name).noise_channels)
    if not variant.encoder:
        return LatentSpec(0, 0, preset.num_classes)
    if not variant.class_codes:
        return LatentSpec(preset.z_dim, 0, preset.num_classes)
    layers = (MIDDLE_LAYER,) if not variant.layerwise else tuple(range(1, variant.depth))
    return LatentSpec(preset.z_dim, preset.z_dim_local, preset.num_classes, layers,
                      classwise=variant.classwise, layerwise=variant.layerwise)


class Networks(nn.Module):
    """Container of G, E (None for gaugan), D (None if not built) and their LatentSpec."""

    def __init__(self,
                 G: nn.Module,                  # generator: Generator, GroupDNetGenerator or CRNGenerator (cimle)
                 E: nn.Module | None,           # encoder: Encoder / GroupDNetEncoder; None for gaugan and cimle
                 D: Discriminator | None,       # discriminator; None when not built
                 spec: LatentSpec,              # the latents G takes and E produces
                 variant: str,                  # key of VARIANTS
                 preset: Preset,                # sizes and training constants
                 ):
        super().__init__()
        self.G, self.E, self.D = G, E, D
        self.spec, self.variant, self.preset = spec, variant, preset

    def param_counts(self) -> dict[str, int]:
        """Number of trainable parameters of G, E and D (0 for a missing network)."""
        count = lambda m: 0 if m is None else sum(p.numel() for p in m.parameters())
        return {"G": count(self.G), "E": count(self.E), "D": count(self.D)}


def _build_spade(v: Variant, preset: Preset, discriminator: bool, init_gain: float | None):
    """(G, E, D, spec) of the SPADE family, SPADE's Xavier init with `init_gain` (None keeps PyTorch's)."""
    spec = latent_spec(v, preset)
    G = Generator(spec, preset.image_size, preset.ngf, preset.upsampling, cse=v.class_codes,
                  norm=preset.norm_G, spade_hidden=preset.spade_hidden)
    E = Encoder(spec, preset.nef, preset.enc_size, v.depth) if v.encoder else None
    D = Discriminator(preset.num_classes, preset.ndf, preset.num_D, preset.n_layers_D) if discriminator else None
    _init((G, E, D), init_gain)
    return G, E, D, spec


def _build_groupdnet(v: Variant, preset: Preset, discriminator: bool, init_gain: float | None):
    """(G, E, D, spec) of GroupDNet (smis.networks.groupdnet; sizes from the preset's name), SPADE's D and init."""
    G, E, spec = build_groupdnet(preset)
    D = Discriminator(preset.num_classes, preset.ndf, preset.num_D, preset.n_layers_D) if discriminator else None
    _init((G, E, D), init_gain)
    return G, E, D, spec


def _build_cimle(v: Variant, preset: Preset, discriminator: bool, init_gain: float | None):
    """(G, None, None, spec) of cIMLE: the CRN at the preset's image size, sizes from `cimle_settings(preset.name)`,
    its own (TF-slim) init; IMLE trains without a discriminator, so none is built."""
    G = CRNGenerator(preset.num_classes, preset.image_size, cimle_settings(preset.name))
    return G, None, None, G.spec


def _init(modules, gain: float | None) -> None:
    """SPADE's Xavier init with `gain` (None keeps PyTorch's) of every module that exists."""
    if gain is not None:
        for m in modules:
            if m is not None:
                init_weights(m, gain)


# family -> builder(variant, preset, build D?, init gain) -> (G, E or None, D or None, LatentSpec)
FAMILIES = {"spade": _build_spade, "groupdnet": _build_groupdnet, "cimle": _build_cimle}


def build_networks(variant: str = "clvae",
                   preset: Preset | str = "synthscenes",   # a Preset or a preset name
                   depth: int | None = None,                # encoder depth L (3..6); None = the variant's
                   discriminator: bool = True,              # also build D (not needed for inference; none for cimle)
                   device: torch.device | str | None = None,
                   init_gain: float | None = 0.02,          # SPADE's Xavier init gain; None keeps PyTorch's
                   ) -> Networks:
    """Build G, E and D for `variant` (see VARIANTS) at the sizes of `preset`, with its family's builder."""
    if variant not in VARIANTS:
        raise KeyError(f"unknown variant {variant!r}; valid variants: {sorted(VARIANTS)}")
    if isinstance(preset, str):
        preset = get_preset(preset)
    v = VARIANTS[variant]
    if depth is not None:
        if not 3 <= depth <= MAX_DEPTH:
            raise ValueError(f"depth={depth} must be in 3..{MAX_DEPTH}")
        if v.family != "spade" or not v.class_codes or not v.layerwise:
            raise ValueError(f"depth= applies to the layer-wise variants, not {variant!r}")
        v = replace(v, depth=depth)
    G, E, D, spec = FAMILIES[v.family](v, preset, discriminator, init_gain)
    nets = Networks(G, E, D, spec, variant, preset)
    return nets.to(device) if device is not None else nets
