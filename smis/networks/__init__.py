"""Networks of the class- and layer-wise VAE: generator, encoder, discriminator, latents; cIMLE's CRN (crn.py).

    from smis.networks import build_networks, Latents
    nets = build_networks("clvae", "synthscenes")
    z = Latents.prior(nets.spec, label, generator=g)
    fake = nets.G(label, z)
"""
from smis.networks.build import FAMILIES, MIDDLE_LAYER, VARIANTS, Networks, Variant, build_networks, latent_spec
from smis.networks.crn import CIMLE_SETTINGS, CIMLESettings, CRNGenerator
from smis.networks.discriminator import Discriminator, PatchDiscriminator
from smis.networks.encoder import Encoder, encoder_widths
from smis.networks.generator import BLOCK_LAYER, UPSAMPLING, Generator
from smis.networks.groupdnet import GroupDNetConfig, GroupDNetEncoder, GroupDNetGenerator, groupdnet_config
from smis.networks.latents import Latents, LatentSpec
from smis.networks.ops import (check_labels, classwise_max_pool, cse_map, init_weights, label_presence, one_hot,
                               resize_labels)
from smis.networks.spade import SPADE, SPADEResBlock

__all__ = [
    "BLOCK_LAYER", "CIMLE_SETTINGS", "FAMILIES", "MIDDLE_LAYER", "SPADE", "SPADEResBlock", "UPSAMPLING", "VARIANTS",
    "CIMLESettings", "CRNGenerator", "Discriminator", "Encoder", "Generator", "GroupDNetConfig", "GroupDNetEncoder",
    "GroupDNetGenerator", "LatentSpec", "Latents", "Networks", "PatchDiscriminator", "Variant", "build_networks",
    "check_labels", "classwise_max_pool", "cse_map", "encoder_widths", "groupdnet_config", "init_weights",
    "label_presence", "latent_spec", "one_hot", "resize_labels",
]
