"""Load the authors' published CLVAE checkpoints (ADE20K, DeepFashion, GTA-5) into our networks, and
GroupDNet's (Zhu et al. 2020, Seanseattle/SMIS: DeepFashion, Cityscapes, ADE20K).

    G, E = smis.load_official("ade20k/latest_net_G.pth", "ade20k/latest_net_E.pth", dataset="ade20k")
    G, E = load_groupdnet("deepfashion/latest_net_G.pth", "deepfashion/latest_net_E.pth", "deepfashion")

Our module names equal the published ones (`fc`, `embedding`, `head_0`, `G_middle_0/1`, `up_0..3`,
`conv_img`, SPADE `norm_0/1/s.{param_free_norm, mlp_shared.0, mlp_gamma, mlp_beta}`, `conv_0/1/s`
with spectral-norm `weight_orig/_u/_v`; encoder `layer1.0 .. layer6.0`, `fc_mu`, `fc_var`,
`fc_mu1..5`, `fc_var1..5`), so `NAME_MAP` only strips DataParallel prefixes. Every key must map and
match in shape (strict); otherwise the error lists missing, unexpected and mismatched keys.
GroupDNet's modules are named as theirs too (`smis.networks.groupdnet`): the same NAME_MAP applies.
A GroupDNet file of another dataset is named as such (`groupdnet_dataset_of`).
"""
from __future__ import annotations

import os
from typing import Mapping

import torch
from torch import nn

from smis.config import get_preset
from smis.networks import Encoder, Generator, build_networks
from smis.networks.groupdnet import PUBLISHED, GroupDNetEncoder, GroupDNetGenerator, block_table
from smis.utils import safe_load

OFFICIAL_DATASETS = ("ade20k", "deepfashion", "gta5")
GROUPDNET_DATASETS = ("deepfashion", "cityscapes", "ade20k")    # published GroupDNet checkpoints
NAME_MAP: dict[str, str] = {"module.": ""}          # published prefix -> ours (applied to key starts)


class CheckpointMismatch(ValueError):
    """A published state dict does not fit our network; the message lists every offending key."""


def map_names(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename published keys to ours with NAME_MAP (prefix replacements)."""
    out = {}
    for key, value in state.items():
        for old, new in NAME_MAP.items():
            if key.startswith(old):
                key = new + key[len(old):]
        out[key] = value
    return out


def check_state_dict(module: nn.Module,                      # the network the weights are for
                     state: Mapping[str, torch.Tensor],      # the weights
                     what: str = "network",                  # names them in the message
                     hint: str = ("Check the dataset= argument and that the files are the published "
                                  "latest_net_G.pth / latest_net_E.pth of that dataset."),  # the fix
                     ) -> None:
    """Raise CheckpointMismatch unless `state` has exactly `module`'s keys with the same shapes."""
    ours = module.state_dict()
    missing = sorted(set(ours) - set(state))
    unexpected = sorted(set(state) - set(ours))
    shapes = sorted(f"{k}: checkpoint {tuple(state[k].shape)} vs ours {tuple(ours[k].shape)}"
                    for k in set(ours) & set(state) if tuple(state[k].shape) != tuple(ours[k].shape))
    if missing or unexpected or shapes:
        lines = [f"{what}: checkpoint does not match ({len(missing)} missing, {len(unexpected)} unexpected, "
                 f"{len(shapes)} shape-mismatched keys). {hint}"]
        for title, keys in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", shapes)):
            if keys:
                lines.append(f"  {title}: " + ", ".join(keys[:20])
                             + (f" ... (+{len(keys) - 20} more)" if len(keys) > 20 else ""))
        raise CheckpointMismatch("\n".join(lines))


def _load(source, map_location) -> Mapping[str, torch.Tensor]:
    if isinstance(source, Mapping):
        return source
    if not os.path.isfile(source):
        raise FileNotFoundError(f"no checkpoint at {source!r}; download the authors' latest_net_G.pth / "
                                "latest_net_E.pth and pass their paths")
    return safe_load(source, map_location=map_location, mmap=True)   # weights_only=True; corrupt files named


def load_official(generator_path: str | os.PathLike | Mapping[str, torch.Tensor],
                  encoder_path: str | os.PathLike | Mapping[str, torch.Tensor] | None = None,
                  dataset: str = "ade20k",
                  device: torch.device | str | None = None,
                  ) -> tuple[Generator, Encoder | None]:
    """Our G and E (eval mode, on `device`) holding the published weights of `dataset`.

    generator_path / encoder_path: files saved by the published code (or already-loaded state
    dicts); encoder_path None skips the encoder (sampling from the prior needs none).
    """
    if dataset not in OFFICIAL_DATASETS:
        raise ValueError(f"dataset={dataset!r} has no published checkpoint; choose one of {OFFICIAL_DATASETS}")
    # read first: fail fast
    states = [map_names(_load(p, "cpu")) for p in (generator_path, encoder_path) if p is not None]
    nets = build_networks("clvae", get_preset(dataset), discriminator=False, init_gain=None)
    G, E = nets.G, nets.E
    pairs = [(G, states[0], "generator")] + ([(E, states[1], "encoder")] if encoder_path is not None else [])
    for module, state, what in pairs:
        check_state_dict(module, state, f"{dataset} {what}")
        module.load_state_dict(state, strict=True)
    G = G.to(device).eval() if device is not None else G.eval()
    E = None if encoder_path is None else (E.to(device).eval() if device is not None else E.eval())
    return G, E


def groupdnet_preset(dataset: str):
    """The preset a published GroupDNet runs at: the dataset's preset with the model's classes (deepfashion:
    the authors' 8-class version, not the paper's 16; cityscapes: the 35 label ids; ade20k: 151)."""
    if dataset not in GROUPDNET_DATASETS:
        raise ValueError(f"dataset={dataset!r} has no published GroupDNet checkpoint; choose one of "
                         f"{GROUPDNET_DATASETS}")
    return get_preset(dataset, num_classes=PUBLISHED[dataset].num_classes)


def groupdnet_dataset_of(state: Mapping[str, torch.Tensor]) -> str | None:
    """Which published GroupDNet a (mapped) G or E state dict is, from its first layer's shape; None: none."""
    for name, cfg in PUBLISHED.items():
        fc = (block_table(cfg)[0][1], cfg.num_classes * 8 // (cfg.fc_groups or cfg.num_classes), 3, 3)
        layer1 = (cfg.nef, 3, 3, 3)
        if ("fc.weight" in state and tuple(state["fc.weight"].shape) == fc) or \
                ("layer1.0.weight_orig" in state and tuple(state["layer1.0.weight_orig"].shape) == layer1):
            return name
    return None


def load_groupdnet(generator_path: str | os.PathLike | Mapping[str, torch.Tensor],
                   encoder_path: str | os.PathLike | Mapping[str, torch.Tensor] | None = None,
                   dataset: str = "deepfashion",
                   device: torch.device | str | None = None,
                   ) -> tuple[GroupDNetGenerator, GroupDNetEncoder | None]:
    """Our GroupDNet G and E (eval mode) holding the published weights of `dataset` (GROUPDNET_DATASETS):
    the SMIS repository's latest_net_G.pth / latest_net_E.pth (or loaded state dicts); strict key and shape
    check; a file of another dataset's GroupDNet is named as such."""
    preset = groupdnet_preset(dataset)
    states = [map_names(_load(p, "cpu")) for p in (generator_path, encoder_path) if p is not None]
    for state, what in zip(states, ("generator", "encoder")):          # before building: fail fast
        other = groupdnet_dataset_of(state)
        if other is not None and other != dataset:
            raise CheckpointMismatch(f"GroupDNet {what}: this is the published {other} checkpoint, not {dataset}'s. "
                                     f"Fix: pass dataset={other!r} (model source groupdnet:{other}:FOLDER) or the "
                                     f"{dataset} files")
    nets = build_networks("groupdnet", preset, discriminator=False, init_gain=None)
    G, E = nets.G, nets.E
    pairs = [(G, states[0], "generator")] + ([(E, states[1], "encoder")] if encoder_path is not None else [])
    for module, state, what in pairs:
        check_state_dict(module, state, f"GroupDNet {dataset} {what}",
                         hint="Check the dataset and that the files are the SMIS repository's published "
                              "latest_net_G.pth / latest_net_E.pth (GroupDNet, not CLVAE: official:... loads those).")
        module.load_state_dict(state, strict=True)
    G = G.to(device).eval() if device is not None else G.eval()
    E = None if encoder_path is None else (E.to(device).eval() if device is not None else E.eval())
    return G, E
