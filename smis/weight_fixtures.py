"""Published-format weights written by code, for tests: the files the authors, GroupDNet's authors and the
field's segmenters published, with random values, so that the importers are tested without the real files.

    write_official_weights(folder, dataset)    latest_net_G.pth / latest_net_E.pth as the authors published them
                                               (plain `torch.save` of the networks' state dicts, their key names and
                                               key order, no DataParallel prefix), for `smis.official.load_official`
    write_groupdnet_weights(folder, dataset)   the same for GroupDNet's published files (SMIS repository)
    write_segmenter_weights(folder, dataset)   the field's mask-fidelity segmenters (CSAIL's UperNet-ResNet101
                                               `encoder_epoch_50.pth` / `decoder_epoch_50.pth`, fyu/drn's
                                               `drn-d-105_ms_cityscapes.pth`), for `smis.real_segmenters`

It sits on the top floor (it builds networks and segmenters); the tiny datasets in the real layouts stay in
`smis.data.fixtures`, below the networks.
"""
from __future__ import annotations

from collections import OrderedDict
from pathlib import Path
from typing import Callable

import torch

from smis.config import get_preset
from smis.networks import build_networks
from smis.official import GROUPDNET_DATASETS, OFFICIAL_DATASETS, groupdnet_preset
from smis.real_segmenters import PROTOCOLS, DRND105Seg, UPerNetResNet101
from smis.utils import atomic_torch_save

# Key order of the published files where it differs from ours (see `published_order`): the generator's
# label embedding comes first, and a SPADE residual block lists its convolutions before its norms.
PUBLISHED_FIRST_KEYS = ("embedding.weight",)
PUBLISHED_BLOCK_ORDER = ("conv_0", "conv_1", "conv_s", "norm_0", "norm_1", "norm_s")
WEIGHT_FILES = ("latest_net_G.pth", "latest_net_E.pth")


# ---------------------------------------------------------------------------------------------
# Published-format weights


def published_order(state: "OrderedDict[str, torch.Tensor]") -> "OrderedDict[str, torch.Tensor]":
    """`state` (a `state_dict()`) with its keys in the published files' order; its `_metadata` (module
    versions, which `torch.save` stores too) is kept. The values are the same tensors.

    Published order = ours, except that PUBLISHED_FIRST_KEYS come first and, inside each SPADE residual
    block, the submodules come in PUBLISHED_BLOCK_ORDER (the authors' block registers its convolutions
    before its SPADE norms; ours registers each conv beside its norm).
    """
    keys = list(state)
    group: dict[str, int] = {}                                        # top-level module -> first position
    for i, key in enumerate(keys):
        group.setdefault(key.split(".")[0], i)

    def rank(i: int) -> tuple[int, int, int]:
        parts = keys[i].split(".")
        top = -1 if keys[i] in PUBLISHED_FIRST_KEYS else group[parts[0]]
        child = PUBLISHED_BLOCK_ORDER.index(parts[1]) if len(parts) > 2 and parts[1] in PUBLISHED_BLOCK_ORDER else 0
        return top, child, i

    out = OrderedDict((keys[i], state[keys[i]]) for i in sorted(range(len(keys)), key=rank))
    if hasattr(state, "_metadata"):
        out._metadata = state._metadata
    return out


def _write_random_weights(folder: Path,                 # where latest_net_G.pth and latest_net_E.pth go
                          variant: str,                 # smis.networks.VARIANTS name of the published networks
                          preset,                       # their configuration (smis.config.Preset)
                          seed: int,                    # same seed, same weights
                          order: Callable[[dict], dict],   # state dict -> the published files' key order
                          ) -> tuple[Path, Path]:
    """(G path, E path): `variant`'s randomly initialised G and E (seeded in a fork of torch's generator, so the
    caller's random state is left alone), each saved atomically as a plain state dict in `order`."""
    folder = Path(folder)
    paths = (folder / WEIGHT_FILES[0], folder / WEIGHT_FILES[1])
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        nets = build_networks(variant, preset, discriminator=False)
    for module, path in zip((nets.G, nets.E), paths):
        atomic_torch_save(order(module.state_dict()), path)
    return paths


def write_official_weights(folder: Path,        # where latest_net_G.pth and latest_net_E.pth go
                           dataset: str,        # one of smis.official.OFFICIAL_DATASETS
                           seed: int = 0,       # same seed, same weights
                           ) -> tuple[Path, Path]:
    """(generator path, encoder path): the authors' checkpoint files, with random weights.

    Randomly initialised networks of `dataset`'s preset (`build_networks("clvae", ...)`), saved as
    the published files are: plain state dicts (float32 tensors, int64 `num_batches_tracked`) with
    the published key names and order, no wrapper object, no `module.` prefix. About 0.5 GB for
    ade20k / gta5 and 2.2 GB for deepfashion.
    """
    if dataset not in OFFICIAL_DATASETS:
        raise ValueError(f"dataset={dataset!r} has no published checkpoint. Fix: use one of {OFFICIAL_DATASETS}.")
    return _write_random_weights(folder, "clvae", get_preset(dataset), seed, published_order)


def write_groupdnet_weights(folder: Path,        # where latest_net_G.pth and latest_net_E.pth go
                            dataset: str,        # one of smis.official.GROUPDNET_DATASETS
                            seed: int = 0,       # same seed, same weights
                            ) -> tuple[Path, Path]:
    """(generator path, encoder path): GroupDNet's published files (the SMIS repository), random weights.

    Randomly initialised GroupDNet of the published configuration (`smis.official.groupdnet_preset`),
    saved as their code saves it: plain state dicts with the published key names, in their modules'
    order (ours is the same), no `module.` prefix. About 0.44 GB for deepfashion, more for the others.
    """
    if dataset not in GROUPDNET_DATASETS:
        raise ValueError(f"dataset={dataset!r} has no published GroupDNet. Fix: use one of {GROUPDNET_DATASETS}.")
    return _write_random_weights(folder, "groupdnet", groupdnet_preset(dataset), seed, lambda state: state)


# ---------------------------------------------------------------------------------------------
# Published-format segmenter weights (smis.real_segmenters)

SYNC_BN_BUFFERS = ("_tmp_running_mean", "_tmp_running_var", "_running_iter")   # CSAIL's SynchronizedBatchNorm2d


def _with_sync_bn_buffers(state: "OrderedDict[str, torch.Tensor]") -> "OrderedDict[str, torch.Tensor]":
    """`state` with the three buffers CSAIL's SynchronizedBatchNorm2d adds after each BatchNorm's
    num_batches_tracked (its files carry them; eval mode reads none): running sums = the running statistics
    times the iteration count 1."""
    out = OrderedDict()
    for key, value in state.items():
        out[key] = value
        if key.endswith("num_batches_tracked"):
            prefix = key[: -len("num_batches_tracked")]
            out[prefix + "_tmp_running_mean"] = state[prefix + "running_mean"].clone()
            out[prefix + "_tmp_running_var"] = state[prefix + "running_var"].clone()
            out[prefix + "_running_iter"] = torch.ones(1)
    return out


def write_segmenter_weights(folder: Path,             # where the published file(s) go
                            dataset: str,             # a smis.real_segmenters.PROTOCOLS key: ade20k, cityscapes, gta5
                            seed: int = 0,            # same seed, same weights
                            classes: int | None = None,   # classifier outputs; None: the protocol's (150 / 19)
                            ) -> list[Path]:
    """The published segmenter file(s) of `dataset` with random weights (`smis.real_segmenters`):

    - ade20k: `encoder_epoch_50.pth` and `decoder_epoch_50.pth`, CSAIL's UperNet-ResNet101 as
      semantic-segmentation-pytorch saves them (plain state dicts, SynchronizedBatchNorm2d's extra buffers
      included); about 170 MB and 70 MB.
    - cityscapes, gta5: `drn-d-105_ms_cityscapes.pth`, fyu/drn's DRNSeg state dict as its 2017 file holds it
      (no num_batches_tracked, saved before torch 0.4.1 added it); about 220 MB.

    BatchNorm running statistics are drawn near (0, 1) so that the random networks give varied labels.
    `classes` other than the protocol's writes a segmenter of another dataset (for the error tests)."""
    if dataset not in PROTOCOLS:
        raise ValueError(f"dataset={dataset!r} has no published segmenter. Fix: use one of {sorted(PROTOCOLS)}.")
    protocol, folder = PROTOCOLS[dataset], Path(folder)
    n = protocol.classes if classes is None else int(classes)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = UPerNetResNet101(n) if dataset == "ade20k" else DRND105Seg(n)
        for key, value in net.state_dict().items():
            if key.endswith("running_mean"):
                value.normal_(0.0, 0.1)
            elif key.endswith("running_var"):
                value.uniform_(0.5, 1.5)
    if dataset == "ade20k":
        parts = [(net.encoder, "encoder_epoch_50.pth"), (net.decoder, "decoder_epoch_50.pth")]
        return [atomic_torch_save(_with_sync_bn_buffers(m.state_dict()), folder / name) for m, name in parts]
    state = OrderedDict((k, v) for k, v in net.state_dict().items() if not k.endswith("num_batches_tracked"))
    return [atomic_torch_save(state, folder / protocol.files[0])]
