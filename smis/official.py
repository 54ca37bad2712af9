"""Load the authors' published CLVAE checkpoints (ADE20K, DeepFashion, GTA-5) into our networks.

    G, E = smis.load_official("ade20k/latest_net_G.pth", "ade20k/latest_net_E.pth", dataset="ade20k")

Our module names equal the published ones (`fc`, `embedding`, `head_0`, `G_middle_0/1`, `up_0..3`,
`conv_img`, SPADE `norm_0/1/s.{param_free_norm, mlp_shared.0, mlp_gamma, mlp_beta}`, `conv_0/1/s`
with spectral-norm `weight_orig/_u/_v`; encoder `layer1.0 .. layer6.0`, `fc_mu`, `fc_var`,
`fc_mu1..5`, `fc_var1..5`), so `NAME_MAP` only strips DataParallel prefixes. Every key must map and
match in shape (strict); otherwise the error lists missing, unexpected and mismatched keys.
"""
from __future__ import annotations

import os
from typing import Mapping

import torch
from torch import nn

from smis.config import get_preset
from smis.networks import Encoder, Generator, build_networks
from smis.utils import safe_load

OFFICIAL_DATASETS = ("ade20k", "deepfashion", "gta5")
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
