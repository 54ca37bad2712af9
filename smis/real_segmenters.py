"""The field's standard segmenters for mask fidelity on real data, and the protocol they are run with.

Every semantic image synthesis paper since SPADE reports mask mIoU: a segmenter trained on the real
images of the dataset labels each generated image, and its labels are compared with the mask the image
was made from. The segmenters are fixed published networks; this module rebuilds them with their
published parameter names, so that the published files load with a strict key and shape check:

    dataset             segmenter                          published file(s)                        classes
    ade20k              UperNet, ResNet-101 encoder (CSAIL) encoder_epoch_*.pth + decoder_epoch_*.pth  150
    cityscapes, gta5    DRN-D-105 (fyu/drn)                 drn-d-105_ms_cityscapes.pth               19
    deepfashion         none: the field has no standard segmenter; the column reads "not measured"

    seg = load_real_segmenter("ade20k", "auto")            # the default paths (SEGMENTER_FILES); see below
    MaskFidelity(seg).update(images, labels).compute()     # the same path as the SynthScenes segmenter

The protocol (README, "Mask fidelity and FID on real data", is where it is written down; PROTOCOLS holds it):
images in [-1, 1] at the generator's size are mapped to [0, 1], resized (bilinear) so that their short
side is each of the protocol's `short_sides` (each side rounded up to `multiple`), normalised with the
segmenter's training mean and std; the class probabilities of every scale are resized (bilinear) back to
the mask's size and averaged; the label is their argmax. Masks are never resized. The mask's dontcare
class (ADE20K's "unknown" = 150, GTA-5 / Cityscapes "others" = 19, i.e. Cityscapes' 255) is the
`ignore_index`: its pixels are not counted. mIoU is pooled over the test set from one confusion matrix
(`smis.stats.confusion_matrix`), with per-class IoU beside it.

A SEGMENTER string may end in "@S1,S2,..." to run at other short sides (e.g. "auto@256": one scale at
the generated size, minutes instead of hours on a CPU); the tables then name those sizes, and the
number is not the protocol's.

Published weights are read with `smis.utils.safe_load` (weights_only=True). Wrong files fail before any
generator pass with `SegmenterMismatch` naming the file, what was expected and the fix.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from smis.utils import CheckpointError, pick_device, resolve, safe_load

# ---------------------------------------------------------------------------------------------
# The networks, with the published parameter names


def _conv3x3(c_in: int, c_out: int, stride: int = 1, dilation: int = 1) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, 3, stride=stride, padding=dilation, dilation=dilation, bias=False)


def _conv_bn_relu(c_in: int, c_out: int, kernel: int = 3, stride: int = 1, dilation: int = 1) -> nn.Sequential:
    """Keys .0 (conv, no bias), .1 (BatchNorm)."""
    pad = dilation * (kernel // 2)
    return nn.Sequential(nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=pad, dilation=dilation, bias=False),
                         nn.BatchNorm2d(c_out), nn.ReLU(inplace=True))


class Bottleneck(nn.Module):
    """ResNet bottleneck (1x1, 3x3 with the stride and dilation, 1x1 to 4 `planes`) + shortcut; keys conv1..3,
    bn1..3, downsample.0 / .1 (both CSAIL's ResNet and fyu/drn's DRN name them so)."""

    def __init__(self,
                 c_in: int,           # input channels
                 planes: int,         # bottleneck width; output 4 planes
                 stride: int = 1,     # of the 3x3 convolution
                 dilation: int = 1,   # of the 3x3 convolution
                 ):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(c_in, planes, 1, bias=False), nn.BatchNorm2d(planes)
        self.conv2, self.bn2 = _conv3x3(planes, planes, stride, dilation), nn.BatchNorm2d(planes)
        self.conv3, self.bn3 = nn.Conv2d(planes, 4 * planes, 1, bias=False), nn.BatchNorm2d(4 * planes)
        self.downsample = (nn.Sequential(nn.Conv2d(c_in, 4 * planes, 1, stride=stride, bias=False),
                                         nn.BatchNorm2d(4 * planes))
                           if stride != 1 or c_in != 4 * planes else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:                      # (B, c_in, H, W) -> (B, 4p, H/s, W/s)
        y = F.relu(self.bn1(self.conv1(x)))
        y = F.relu(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        return F.relu(y + (x if self.downsample is None else self.downsample(x)))


def _stage(c_in: int, planes: int, blocks: int, stride: int = 1, dilation: int = 1) -> nn.Sequential:
    """`blocks` bottlenecks, the first with the stride (and the shortcut projection), keys .0 .. .blocks-1."""
    return nn.Sequential(*[Bottleneck(c_in if i == 0 else 4 * planes, planes, stride if i == 0 else 1, dilation)
                           for i in range(blocks)])


class ResNet101Encoder(nn.Module):
    """CSAIL's `resnet101` encoder (mit_semseg.models.Resnet): a deep stem of three 3x3 convolutions
    (64, 64, 128 channels, the first with stride 2), max pooling, then ResNet-101's four stages (3, 4, 23, 3
    bottlenecks). (B, 3, H, W) -> [C2 (B, 256, H/4), C3 (512, H/8), C4 (1024, H/16), C5 (2048, H/32)]."""

    def __init__(self):
        super().__init__()
        self.conv1, self.bn1 = _conv3x3(3, 64, 2), nn.BatchNorm2d(64)
        self.conv2, self.bn2 = _conv3x3(64, 64), nn.BatchNorm2d(64)
        self.conv3, self.bn3 = _conv3x3(64, 128), nn.BatchNorm2d(128)
        self.layer1 = _stage(128, 64, 3)
        self.layer2 = _stage(256, 128, 4, 2)
        self.layer3 = _stage(512, 256, 23, 2)
        self.layer4 = _stage(1024, 512, 3, 2)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = F.relu(self.bn1(self.conv1(x)))                                  # (B, 64, H/2, W/2)
        x = F.relu(self.bn2(self.conv2(x)))
        x = F.relu(self.bn3(self.conv3(x)))                                  # (B, 128, H/2, W/2)
        x = F.max_pool2d(x, 3, 2, 1)                                         # (B, 128, H/4, W/4)
        out = []
        for layer in (self.layer1, self.layer2, self.layer3, self.layer4):
            x = layer(x)
            out.append(x)
        return out


class UPerNetDecoder(nn.Module):
    """CSAIL's `upernet` decoder (Xiao et al. 2018, mit_semseg.models.UPerNet, fc_dim 2048, fpn_dim 256): a
    pyramid pooling module on C5 (bins 1, 2, 3, 6), a top-down FPN over C2-C4, the four levels upsampled to
    C2's size and fused. Features -> (B, classes, H/4, W/4) logits."""

    POOL_SCALES = (1, 2, 3, 6)
    FPN_IN = (256, 512, 1024, 2048)

    def __init__(self,
                 classes: int = 150,      # ADE20K's 150 classes
                 fpn_dim: int = 256,
                 ):
        super().__init__()
        c5 = self.FPN_IN[-1]
        self.ppm_conv = nn.ModuleList([_conv_bn_relu(c5, 512, 1) for _ in self.POOL_SCALES])
        self.ppm_last_conv = _conv_bn_relu(c5 + len(self.POOL_SCALES) * 512, fpn_dim)
        self.fpn_in = nn.ModuleList([_conv_bn_relu(c, fpn_dim, 1) for c in self.FPN_IN[:-1]])
        self.fpn_out = nn.ModuleList([nn.Sequential(_conv_bn_relu(fpn_dim, fpn_dim)) for _ in self.FPN_IN[:-1]])
        self.conv_last = nn.Sequential(_conv_bn_relu(len(self.FPN_IN) * fpn_dim, fpn_dim),
                                       nn.Conv2d(fpn_dim, classes, 1))

    def forward(self, feats: Sequence[torch.Tensor]) -> torch.Tensor:
        up = lambda t, hw: F.interpolate(t, size=hw, mode="bilinear", align_corners=False)
        c5 = feats[-1]                                                       # (B, 2048, h5, w5)
        hw5 = c5.shape[-2:]
        ppm = [c5] + [conv(up(F.adaptive_avg_pool2d(c5, s), hw5)) for s, conv in zip(self.POOL_SCALES, self.ppm_conv)]
        f = self.ppm_last_conv(torch.cat(ppm, 1))                            # (B, 256, h5, w5)
        levels = [f]
        for i in reversed(range(len(feats) - 1)):                            # top-down: C4, C3, C2
            lateral = self.fpn_in[i](feats[i])
            f = lateral + up(f, lateral.shape[-2:])
            levels.append(self.fpn_out[i](f))
        levels.reverse()                                                     # [P2, P3, P4, P5]
        hw2 = levels[0].shape[-2:]
        fused = torch.cat([levels[0]] + [up(t, hw2) for t in levels[1:]], 1)  # (B, 1024, H/4, W/4)
        return self.conv_last(fused)                                         # (B, classes, H/4, W/4)


class UPerNetResNet101(nn.Module):
    """Encoder and decoder as CSAIL publishes them, in two files (`encoder` / `decoder` key prefixes here).
    (B, 3, H, W) normalised images -> (B, 150, H, W) logits (bilinear from 1/4)."""

    def __init__(self, classes: int = 150):
        super().__init__()
        self.encoder, self.decoder = ResNet101Encoder(), UPerNetDecoder(classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.decoder(self.encoder(x))
        return F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)


def bilinear_kernel(channels: int, size: int = 16) -> torch.Tensor:
    """(channels, 1, size, size) weights of a per-channel transposed convolution that upsamples bilinearly by
    size / 2 (fyu/drn's `fill_up_weights`; the published file stores them as `up.weight`)."""
    f = math.ceil(size / 2)
    c = (2 * f - 1 - f % 2) / (2.0 * f)
    t = 1 - (torch.arange(size, dtype=torch.float64) / f - c).abs()            # (size,)
    return (t[:, None] * t[None, :]).float().expand(channels, 1, size, size).clone()


def _conv_layers(c_in: int, c_out: int, stride: int = 1, dilation: int = 1) -> nn.Sequential:
    """DRN-D's plain level: conv 3x3 (no bias), BatchNorm, ReLU; keys .0 and .1."""
    return _conv_bn_relu(c_in, c_out, 3, stride, dilation)


class DRND105Seg(nn.Module):
    """fyu/drn's DRNSeg with DRN-D-105 (Yu et al. 2017): `base` = levels 0-8 of DRN-D-105 (a 7x7 stem, two plain
    levels, bottleneck stages of 3, 4, 23, 3 blocks, the last two dilated 2 and 4 instead of strided, two plain
    dilated levels), output stride 8; `seg` a 1x1 classifier; `up` a fixed bilinear x8 transposed convolution.
    (B, 3, H, W) normalised images, H and W divisible by 8 -> (B, classes, H, W) logits."""

    def __init__(self, classes: int = 19):
        super().__init__()
        self.base = nn.Sequential(
            _conv_bn_relu(3, 16, 7),                       # layer0
            _conv_layers(16, 16),                          # layer1
            _conv_layers(16, 32, stride=2),                # layer2                  H/2
            _stage(32, 64, 3, stride=2),                   # layer3, 256 channels    H/4
            _stage(256, 128, 4, stride=2),                 # layer4, 512             H/8
            _stage(512, 256, 23, dilation=2),              # layer5, 1024, dilated
            _stage(1024, 512, 3, dilation=4),              # layer6, 2048, dilated
            _conv_layers(2048, 512, dilation=2),           # layer7
            _conv_layers(512, 512),                        # layer8
        )
        self.seg = nn.Conv2d(512, classes, 1)
        self.up = nn.ConvTranspose2d(classes, classes, 16, stride=8, padding=4, groups=classes, bias=False)
        with torch.no_grad():
            self.up.weight.copy_(bilinear_kernel(classes))
        self.up.weight.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.up(self.seg(self.base(x)))                               # (B, classes, H, W)


# ---------------------------------------------------------------------------------------------
# The protocol per dataset


IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
CITYSCAPES_MEAN = (0.29010095242892997, 0.32808144844279574, 0.28696394422942517)   # fyu/drn cityscapes info.json
CITYSCAPES_STD = (0.1829540508368939, 0.18656561047509476, 0.18447508988480435)


@dataclass(frozen=True)
class Protocol:
    """How one dataset's generated images are segmented (README, "Mask fidelity and FID on real data")."""

    dataset: str
    segmenter: str                      # the network, for tables and the preflight
    files: tuple[str, ...]              # file names as published (a glob for CSAIL's epoch-numbered files)
    default: str                        # where "auto" looks (a folder for two files, else the file)
    classes: int                        # the segmenter's classes = the mask ids it scores, 0..classes-1
    mask_classes: int                   # the dataset's C in smis (its dontcare class included)
    ignore_index: int                   # the mask id not counted (= classes: the dontcare class)
    ignored: str                        # what that id is, in words
    short_sides: tuple[int, ...]        # the short side of each test scale (probabilities averaged)
    multiple: int                       # each side rounded up to a multiple of this
    max_side: int | None                # a scale's long side is at most this (CSAIL's imgMaxSize)
    mean: tuple[float, float, float]    # input normalisation of [0, 1] RGB
    std: tuple[float, float, float]
    source: str                         # where the weights are published

    def sizes(self, hw: tuple[int, int], short_sides: Sequence[int] | None = None) -> list[tuple[int, int]]:
        """(H, W) of each scale for images of size `hw` (CSAIL's test resizing: short side s, long side at
        most max_side, each side rounded up to `multiple`)."""
        out = []
        for s in short_sides or self.short_sides:
            scale = s / min(hw)
            if self.max_side:
                scale = min(scale, self.max_side / max(hw))
            out.append(tuple(int(math.ceil(int(x * scale) / self.multiple)) * self.multiple for x in hw))
        return out


_DRN = dict(segmenter="DRN-D-105 (fyu/drn, Cityscapes)", files=("drn-d-105_ms_cityscapes.pth",),
            default="checkpoints/segmenters/drn-d-105_ms_cityscapes.pth", classes=19, mask_classes=20,
            ignore_index=19, short_sides=(1024,), multiple=8, max_side=None, mean=CITYSCAPES_MEAN,
            std=CITYSCAPES_STD, source="github.com/fyu/drn (README, 'Semantic Image Segmentation'; the file SPADE's "
                                       "evaluation names)")
PROTOCOLS: dict[str, Protocol] = {
    "ade20k": Protocol(
        "ade20k", "UperNet-ResNet101 (CSAIL, ADE20K)", ("encoder_epoch_*.pth", "decoder_epoch_*.pth"),
        "checkpoints/segmenters/ade20k-resnet101-upernet", 150, 151, 150, "unknown (raw id 0)",
        (300, 375, 450, 525, 600), 32, 1000, IMAGENET_MEAN, IMAGENET_STD,
        "sceneparsing.csail.mit.edu/model/pytorch/ade20k-resnet101-upernet "
        "(CSAILVision/semantic-segmentation-pytorch)"),
    "cityscapes": Protocol("cityscapes", ignored="others (Cityscapes' 255 and the ids without a train id)", **_DRN),
    "gta5": Protocol("gta5", ignored="others (GTA-5's 255 and the ids without a Cityscapes train id)", **_DRN),
}
# BatchNorm buffers that eval mode never reads: num_batches_tracked (absent from files saved by torch < 0.4.1, such
# as fyu/drn's) and the three of CSAIL's SynchronizedBatchNorm2d (mit_semseg.lib.nn), which its files carry.
OPTIONAL_BUFFERS = ("num_batches_tracked", "_tmp_running_mean", "_tmp_running_var", "_running_iter")
NO_SEGMENTER = {"deepfashion": "no standard segmenter exists for DeepFashion (the field reports no mask mIoU on it)"}
NOT_MEASURED = "not measured"


def describe(protocol: Protocol, files: Sequence[str | Path], short_sides: Sequence[int] | None = None) -> str:
    """'UperNet-ResNet101 (CSAIL, ADE20K), <files>, short side 300, ..., 600 (5 scales, sides to multiples of 32),
    ignores unknown (raw id 0)'; other scales than the protocol's are flagged."""
    sides = tuple(short_sides or protocol.short_sides)
    note = "" if sides == protocol.short_sides else " - NOT the protocol's scales, numbers not comparable"
    named = "".join(f"{f} + " for f in files)[:-3]
    return (f"{protocol.segmenter}{', ' + named if named else ''}, short side {', '.join(map(str, sides))} "
            f"({len(sides)} scale{'s' * (len(sides) > 1)}, sides to multiples of {protocol.multiple}){note}, "
            f"ignores {protocol.ignored}")


class SegmenterMismatch(CheckpointError):
    """A segmenter file that is not the published network the protocol needs (wrong dataset, class count,
    architecture) or a dataset whose masks the segmenter cannot score."""


# ---------------------------------------------------------------------------------------------
# The segmenter as MaskFidelity uses it


class RealSegmenter(nn.Module):
    """A published segmenter run with its dataset's protocol. MaskFidelity / predict call `predict_labels`;
    `num_classes` and `ignore_index` are the mask's (the dontcare id is never predicted and not counted)."""

    def __init__(self,
                 net: nn.Module,                       # UPerNetResNet101 or DRND105Seg, weights loaded
                 protocol: Protocol,
                 files: Sequence[str | Path],          # the weight files read (for tables and errors)
                 short_sides: Sequence[int] | None = None,   # another test scale than the protocol's
                 ):
        super().__init__()
        self.net, self.protocol = net.eval(), protocol
        self.files = [str(f) for f in files]
        self.short_sides = tuple(int(s) for s in short_sides) if short_sides else protocol.short_sides
        self.num_classes, self.ignore_index = protocol.mask_classes, protocol.ignore_index
        self.max_batch = 8                                                # images per pass, whatever the caller asks
        self.register_buffer("mean", torch.tensor(protocol.mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(protocol.std).view(1, 3, 1, 1), persistent=False)
        self.source = self.describe()

    @property
    def device(self) -> torch.device:
        return self.mean.device

    @property
    def is_protocol(self) -> bool:
        """True when run at the protocol's scales (numbers comparable with papers using the same segmenter)."""
        return self.short_sides == self.protocol.short_sides

    def describe(self) -> str:
        """What the tables and REPORT.md name: the network, its files, the scales, the ignored class."""
        return describe(self.protocol, self.files, self.short_sides)

    def check_dataset(self, num_classes: int, where: str = "") -> None:
        """SegmenterMismatch unless masks of `num_classes` ids are the ones this segmenter scores."""
        if int(num_classes) != self.num_classes:
            raise SegmenterMismatch(
                f"{where or 'the masks'}: {num_classes} class ids, but {self.protocol.segmenter} ({self.files[0]}) "
                f"scores {self.protocol.dataset} masks of {self.num_classes} ids (its {self.protocol.classes} classes "
                f"+ {self.protocol.ignored} = {self.ignore_index}). Fix: evaluate {self.protocol.dataset} data with "
                f"it, or SEGMENTER='' for no mask fidelity.")

    @torch.no_grad()
    def probabilities(self,
                      images: torch.Tensor,     # (B, 3, H, W) in [-1, 1]
                      ) -> torch.Tensor:        # (B, classes, H, W) averaged over the scales
        hw = tuple(images.shape[-2:])
        x01 = ((images.to(self.device, torch.float32) + 1) / 2).clamp(0, 1)
        total = None
        for size in self.protocol.sizes(hw, self.short_sides):
            x = x01 if size == hw else F.interpolate(x01, size=size, mode="bilinear", align_corners=False,
                                                     antialias=True)
            p = self.net((x - self.mean) / self.std).softmax(1)              # (B, classes, h, w)
            if tuple(p.shape[-2:]) != hw:
                p = F.interpolate(p, size=hw, mode="bilinear", align_corners=False, antialias=True)
            total = p if total is None else total + p
        return total / len(self.short_sides)

    @torch.no_grad()
    def predict_labels(self,
                       images: torch.Tensor,    # (N, 3, H, W) in [-1, 1]
                       batch_size: int = 8,     # images per pass
                       ) -> torch.Tensor:       # (N, H, W) int64 ids in 0..classes-1
        chunk = max(1, min(int(batch_size), self.max_batch))          # 608x608 ResNet-101 maps: ~1 GB per 8 images
        out = [self.probabilities(part).argmax(1) for part in images.split(chunk)]
        return torch.cat(out) if out else torch.zeros(0, *images.shape[-2:], dtype=torch.long, device=self.device)


# ---------------------------------------------------------------------------------------------
# Loading


def parse_source(source: str) -> tuple[str, tuple[int, ...] | None]:
    """'auto@256,300' -> ('auto', (256, 300)); 'path' -> ('path', None)."""
    m = re.fullmatch(r"(.*)@(\d+(?:,\d+)*)", str(source))
    return (m.group(1), tuple(int(s) for s in m.group(2).split(","))) if m else (str(source), None)


def _plain_state(obj, path: Path) -> dict[str, torch.Tensor]:
    """The state dict in a published file: a plain one, or a training checkpoint's 'state_dict' (a
    DataParallel 'module.' prefix removed)."""
    if isinstance(obj, Mapping) and "state_dict" in obj and isinstance(obj["state_dict"], Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise SegmenterMismatch(f"{path} holds a {type(obj).__name__} that is not a state dict of tensors. Fix: use "
                                "the published file as downloaded.")
    return {(k[7:] if k.startswith("module.") else k): v for k, v in obj.items()}


def _check(module: nn.Module, state: Mapping[str, torch.Tensor], path: Path, protocol: Protocol, what: str,
           head: str) -> None:
    """Strict key and shape check of every parameter and running statistic. OPTIONAL_BUFFERS may be present or
    absent (eval mode reads none of them). The classifier's class count is checked first."""
    if head in state and head in module.state_dict() and state[head].shape[0] != module.state_dict()[head].shape[0]:
        raise SegmenterMismatch(
            f"{path}: its classifier ({head}) predicts {state[head].shape[0]} classes, the {protocol.dataset} protocol "
            f"needs {protocol.classes} ({protocol.segmenter}): a segmenter of another dataset. Fix: download "
            f"{' and '.join(protocol.files)} from {protocol.source} to {protocol.default}.")
    ours = {k: v for k, v in module.state_dict().items() if not k.endswith(OPTIONAL_BUFFERS)}
    theirs = {k: v for k, v in state.items() if not k.endswith(OPTIONAL_BUFFERS)}
    missing, unexpected = sorted(set(ours) - set(theirs)), sorted(set(theirs) - set(ours))
    shapes = sorted(f"{k}: file {tuple(theirs[k].shape)} vs expected {tuple(ours[k].shape)}"
                    for k in set(ours) & set(theirs) if theirs[k].shape != ours[k].shape)
    if missing or unexpected or shapes:
        lines = [f"{path} is not the {what} of {protocol.segmenter} ({len(missing)} missing, {len(unexpected)} "
                 f"unexpected, {len(shapes)} shape-mismatched keys). Fix: download {' and '.join(protocol.files)} "
                 f"from {protocol.source} to {protocol.default}, or point SEGMENTER at them."]
        for title, keys in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", shapes)):
            if keys:
                lines.append(f"  {title}: " + ", ".join(keys[:8]) + (f" ... (+{len(keys) - 8} more)" if len(keys) > 8
                                                                        else ""))
        raise SegmenterMismatch("\n".join(lines))


def _read(path: Path, protocol: Protocol, mmap: bool) -> dict[str, torch.Tensor]:
    try:
        return _plain_state(safe_load(path, mmap=mmap), path)
    except SegmenterMismatch:
        raise
    except CheckpointError as e:
        raise SegmenterMismatch(f"{e} (the {protocol.dataset} segmenter: {protocol.segmenter}; download "
                                f"{' and '.join(protocol.files)} from {protocol.source})") from None


def segmenter_files(dataset: str,           # a PROTOCOLS key
                    source: str = "auto",   # "auto" (the protocol's default), a file (DRN) or a folder (UperNet)
                    ) -> list[Path]:
    """The weight files `source` names for `dataset` (they may not exist). UperNet: a folder with one
    encoder_epoch_*.pth and one decoder_epoch_*.pth (CSAIL's download layout; epoch 50 when absent)."""
    protocol = PROTOCOLS[dataset]
    given = Path(protocol.default if source == "auto" else source)     # shown as given; read via resolve()
    path = resolve(given)
    if len(protocol.files) == 1:
        return [given / protocol.files[0] if path.is_dir() else given]
    found = []
    for pattern in protocol.files:
        hits = sorted(path.glob(pattern)) if path.is_dir() else []
        if len(hits) > 1:
            raise SegmenterMismatch(f"{given} holds {len(hits)} files {pattern} ({', '.join(h.name for h in hits)}); "
                                    "the protocol reads one. Fix: keep the published one (epoch 50) there.")
        found.append(given / (hits[0].name if hits else pattern.replace("*", "50")))
    return found


def load_real_segmenter(dataset: str,                                   # ade20k, cityscapes or gta5
                        source: str = "auto",                           # see segmenter_files; may end in @S1,S2
                        device: str | torch.device | None = "cpu",
                        ) -> RealSegmenter:
    """The published segmenter of `dataset`, every key and shape checked, in eval mode. FileNotFoundError
    (naming the file and where it is published) when absent; SegmenterMismatch for a file that is not it."""
    if dataset not in PROTOCOLS:
        why = NO_SEGMENTER.get(dataset, f"no published segmenter is set up for {dataset!r}")
        raise ValueError(f"{why}. Fix: SEGMENTER='' (the mask mIoU column then reads '{NOT_MEASURED}'), or one of "
                         f"{sorted(PROTOCOLS)}")
    protocol = PROTOCOLS[dataset]
    base, sizes = parse_source(source)
    files = segmenter_files(dataset, base)
    for f in files:
        if not resolve(f).is_file():
            raise FileNotFoundError(f"segmenter file {f} not found. Fix: download {' and '.join(protocol.files)} "
                                    f"({protocol.segmenter}) from {protocol.source} into "
                                    f"{f.parent}, or SEGMENTER='' for no mask fidelity.")
    net = _network(dataset)
    for f, (what, module, head) in zip(files, _parts(net)):
        state = _read(resolve(f), protocol, mmap=False)
        _check(module, state, f, protocol, what, head)
        module.load_state_dict(state, strict=False)     # checked strictly above; OPTIONAL_BUFFERS may be absent
    return RealSegmenter(net, protocol, files, sizes).to(pick_device(device)).eval()


def _network(dataset: str) -> nn.Module:
    classes = PROTOCOLS[dataset].classes
    return UPerNetResNet101(classes) if dataset == "ade20k" else DRND105Seg(classes)


def _parts(net: nn.Module) -> list[tuple[str, nn.Module, str]]:
    """(what, module, classifier key) per published file, in `Protocol.files` order."""
    if isinstance(net, UPerNetResNet101):
        return [("encoder", net.encoder, ""), ("decoder", net.decoder, "conv_last.1.weight")]
    return [("network", net, "seg.weight")]


def check_segmenter_files(dataset: str, source: str = "auto") -> tuple[str, str, str]:
    """(state, where, detail) for the preflight, reading shapes only (mmap): 'ok', 'missing' (the column will
    read 'not measured') or 'invalid' (the message names the fix)."""
    protocol = PROTOCOLS[dataset]
    base, sizes = parse_source(source)
    try:
        files = segmenter_files(dataset, base)
    except SegmenterMismatch as e:
        return "invalid", base, str(e)
    where = " + ".join(str(f) for f in files)
    absent = [f for f in files if not resolve(f).is_file()]
    if absent:
        return "missing", where, (f"the mask mIoU column will read '{NOT_MEASURED} (missing {absent[0]})'. "
                                  f"Fix: download {' and '.join(protocol.files)} "
                                  f"({protocol.segmenter}) from {protocol.source} into {absent[0].parent}.")
    with torch.device("meta"):
        net = _network(dataset)
    problems = []
    for f, (what, module, head) in zip(files, _parts(net)):
        try:
            _check(module, _read(resolve(f), protocol, mmap=True), f, protocol, what, head)
        except SegmenterMismatch as e:
            problems.append(str(e).replace("\n", " "))
    if problems:
        return "invalid", where, " | ".join(problems)
    return "ok", where, f"loads (weights_only), every key and shape of {describe(protocol, [], sizes)}"


def not_measured(dataset: str, source: str = "auto") -> str | None:
    """The mask mIoU column's text when no number can be given (None when a segmenter can be loaded):
    'not measured (missing <file>)' or 'not measured (no standard segmenter ...)'."""
    if dataset in NO_SEGMENTER:
        return f"{NOT_MEASURED} ({NO_SEGMENTER[dataset]})"
    if dataset not in PROTOCOLS:
        return None
    absent = [f for f in segmenter_files(dataset, parse_source(source)[0]) if not resolve(f).is_file()]
    return f"{NOT_MEASURED} (missing {absent[0]})" if absent else None


def preflight_inputs(params: Mapping[str, Mapping]) -> list[tuple[str, str, str, str, tuple[str, ...]]]:
    """(state, what, where, detail, notebooks) for the mask-fidelity segmenter of every real dataset the notebooks
    `params` ({notebook stem: its parameters}) evaluate with a SEGMENTER parameter: an optional input, so an
    absent file is 'info' (the column will read 'not measured'), a wrong one 'invalid' (the run stops)."""
    wanted: dict[tuple[str, str], set[str]] = {}
    for stem, p in params.items():
        dataset = p.get("DATASET")
        if "SEGMENTER" in p and (dataset in PROTOCOLS or dataset in NO_SEGMENTER):
            wanted.setdefault((dataset, str(p["SEGMENTER"] or "")), set()).add(stem)
    out = []
    for (dataset, source), stems in wanted.items():
        used, what = tuple(sorted(stems)), f"segmenter for mask mIoU ({dataset}, optional)"
        if dataset in NO_SEGMENTER:
            out.append(("info", what, "", f"none: {NO_SEGMENTER[dataset]}; the mask mIoU column reads "
                                          f"'{not_measured(dataset)}'", used))
        elif not source:
            out.append(("info", what, "", "SEGMENTER='': no mask fidelity asked for", used))
        else:
            state, where, detail = check_segmenter_files(dataset, source)
            out.append(("info" if state == "missing" else state, what, where,
                        ("absent, " if state == "missing" else "") + detail, used))
    return out
