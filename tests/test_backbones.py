"""Tests for smis/backbones.py: EfficientNet-Lite0 weights, VGG19 from the hub cache, fallback."""
from __future__ import annotations

import logging
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from smis import backbones as B
from smis.data import make_dataset


# ----------------------------------------------------------------------------------------------
# The reference: the hand-written EfficientNet-Lite0 smis used before timm built it (issue 15), kept
# here as the oracle timm's `tf_efficientnet_lite0` must reproduce. Its parameter names are those of
# the packaged file, so it loads the weights strictly without renaming.

REF_STAGES = (  # (repeats, kernel, stride, expand ratio, in channels, out channels) of the 7 MBConv stages
    (1, 3, 1, 1, 32, 16), (2, 3, 2, 6, 16, 24), (2, 5, 2, 6, 24, 40), (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112), (4, 5, 2, 6, 112, 192), (1, 3, 1, 6, 192, 320))
REF_FEATURE_BLOCKS = (0, 2, 4, 10, 15)   # last block of strides 2, 4, 8, 16, 32
REF_BN_EPS = 1e-3                        # TensorFlow's batch-norm epsilon


class RefConv2dSame(nn.Conv2d):
    """Conv2d with TensorFlow 'SAME' padding: output size ceil(in / stride), extra pad at the end."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pads = []
        for size, k, s in zip(reversed(x.shape[-2:]), reversed(self.kernel_size), reversed(self.stride)):
            total = max((math.ceil(size / s) - 1) * s + k - size, 0)
            pads += [total // 2, total - total // 2]          # (left, right) then (top, bottom)
        return F.conv2d(F.pad(x, pads), self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


class RefMBConv(nn.Module):
    """Inverted residual block: 1x1 expand, depthwise kxk, 1x1 project (ReLU6, no SE)."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int, expand: int):
        super().__init__()
        c_mid = c_in * expand
        if expand != 1:
            self._expand_conv = nn.Conv2d(c_in, c_mid, 1, bias=False)
            self._bn0 = nn.BatchNorm2d(c_mid, eps=REF_BN_EPS)
        self._depthwise_conv = RefConv2dSame(c_mid, c_mid, kernel, stride, groups=c_mid, bias=False)
        self._bn1 = nn.BatchNorm2d(c_mid, eps=REF_BN_EPS)
        self._project_conv = nn.Conv2d(c_mid, c_out, 1, bias=False)
        self._bn2 = nn.BatchNorm2d(c_out, eps=REF_BN_EPS)
        self.expand = expand != 1
        self.residual = stride == 1 and c_in == c_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu6(self._bn0(self._expand_conv(x))) if self.expand else x
        h = F.relu6(self._bn1(self._depthwise_conv(h)))
        h = self._bn2(self._project_conv(h))
        return x + h if self.residual else h


class RefLite0(nn.Module):
    """The former smis EfficientNet-Lite0: logits, stages and pooled head features of [-1, 1] images."""

    def __init__(self):
        super().__init__()
        self._conv_stem = RefConv2dSame(3, 32, 3, 2, bias=False)
        self._bn0 = nn.BatchNorm2d(32, eps=REF_BN_EPS)
        self._blocks = nn.ModuleList(RefMBConv(c_in if i == 0 else c_out, c_out, k, s if i == 0 else 1, e)
                                     for repeats, k, s, e, c_in, c_out in REF_STAGES for i in range(repeats))
        self._conv_head = nn.Conv2d(320, 1280, 1, bias=False)
        self._bn1 = nn.BatchNorm2d(1280, eps=REF_BN_EPS)
        self._fc = nn.Linear(1280, 1000)

    def stages(self, x: torch.Tensor) -> list[torch.Tensor]:
        h = F.relu6(self._bn0(self._conv_stem((127.5 * x + 0.5) / 128.0)))
        feats = []
        for i, block in enumerate(self._blocks):
            h = block(h)
            if i in REF_FEATURE_BLOCKS:
                feats.append(h)
        return feats

    def pooled(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu6(self._bn1(self._conv_head(self.stages(x)[-1]))).mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._fc(self.pooled(x))


@pytest.fixture(scope="module")
def packaged_state():
    return torch.load(B.efficientnet_lite0_weights_path(), map_location="cpu", weights_only=True)


@pytest.fixture(scope="module")
def lite0():
    return B.efficientnet_lite0(pretrained=True, device="cpu")


def _as_input(img: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(img).permute(2, 0, 1).float() / 127.5 - 1   # (3, H, W) in [-1, 1]


def test_lite0_state_dict_matches_package_file_strictly(packaged_state):
    model = B.EfficientNetLite0()
    reference = RefLite0()
    assert set(reference.state_dict()) == set(packaged_state)          # the file's own names
    reference.load_state_dict(packaged_state, strict=True)
    renamed = {B.packaged_key_to_timm(k): v for k, v in packaged_state.items()}
    assert len(renamed) == len(packaged_state)                           # the renaming is one-to-one
    theirs = model.net.state_dict()
    assert set(renamed) == set(theirs)
    assert all(renamed[k].shape == theirs[k].shape for k in theirs)
    model.net.load_state_dict(renamed, strict=True)
    n_params = sum(p.numel() for p in model.parameters())
    assert 4.6e6 < n_params < 4.7e6                     # EfficientNet-Lite0 has 4.65 M parameters
    assert n_params == sum(p.numel() for p in reference.parameters())


def test_packaged_key_to_timm_names_stage_and_block():
    assert B.packaged_key_to_timm("_conv_stem.weight") == "conv_stem.weight"
    assert B.packaged_key_to_timm("_blocks.0._project_conv.weight") == "blocks.0.0.conv_pw.weight"
    assert B.packaged_key_to_timm("_blocks.3._depthwise_conv.weight") == "blocks.2.0.conv_dw.weight"
    assert B.packaged_key_to_timm("_blocks.15._bn2.running_var") == "blocks.6.0.bn3.running_var"
    assert B.packaged_key_to_timm("_fc.bias") == "classifier.bias"
    with pytest.raises(KeyError, match="16 blocks"):
        B.packaged_key_to_timm("_blocks.16._bn0.weight")
    with pytest.raises(KeyError, match="_head"):
        B.packaged_key_to_timm("_head.weight")


def test_timm_lite0_reproduces_the_hand_written_network(lite0, packaged_state):
    """Same weights, same images: timm's build equals the former hand-written network (float noise at most)."""
    reference = RefLite0().eval()
    reference.load_state_dict(packaged_state, strict=True)
    ds = make_dataset("synthscenes", None, "val", size=224, length=2, seed=0)
    synth = torch.stack([ds[i]["image"] for i in range(2)])               # (2, 3, 224, 224) in [-1, 1]
    g = torch.Generator().manual_seed(0)
    batches = {"synthscenes 224": synth, "random 64x48": torch.rand(2, 3, 64, 48, generator=g) * 2 - 1,
               "random 37x29": torch.rand(2, 3, 37, 29, generator=g) * 2 - 1}   # odd sizes: 'SAME' padding
    with torch.no_grad():
        for name, x in batches.items():
            ref_logits, logits = reference(x), lite0(x)
            assert (logits - ref_logits).abs().max() <= 1e-5, name
            assert torch.equal(logits.argmax(1), ref_logits.argmax(1)), name
            assert (lite0.pooled(x) - reference.pooled(x)).abs().max() <= 1e-5, name
            feats, ref_feats = lite0.stages(x), reference.stages(x)
            assert [f.shape for f in feats] == [f.shape for f in ref_feats], name
            for i, (f, r) in enumerate(zip(feats, ref_feats)):
                assert (f - r).abs().max() <= 1e-5, (name, i)


def test_chelsea_is_classified_as_a_cat(lite0):
    skdata = pytest.importorskip("skimage.data")
    top5 = B.imagenet_topk(lite0, _as_input(skdata.chelsea()), k=5)
    assert 281 <= top5[0][0] <= 285, top5                # tabby / tiger / Persian / Siamese / Egyptian cat
    assert top5[0][2] > 0.5
    assert sum(281 <= i <= 285 for i, _, _ in top5) >= 3
    probs = [p for _, _, p in top5]
    assert probs == sorted(probs, reverse=True)


def test_coffee_is_classified_as_coffee(lite0):
    skdata = pytest.importorskip("skimage.data")
    top5 = B.imagenet_topk(lite0, _as_input(skdata.coffee()), k=5)
    assert top5[0][0] in (967, 968, 504), top5           # espresso, cup, coffee mug
    assert top5[0][1] == B.imagenet_categories()[top5[0][0]]


def test_imagenet_topk_rejects_a_batch(lite0):
    with pytest.raises(ValueError, match="one image"):
        B.imagenet_topk(lite0, torch.zeros(2, 3, 32, 32))


def test_reference_conv2d_same_gives_ceil_of_size_over_stride():
    conv = RefConv2dSame(1, 1, 5, 2, bias=False)
    nn.init.ones_(conv.weight)
    out = conv(torch.ones(1, 1, 7, 6))
    assert out.shape[-2:] == (4, 3)
    # TF 'SAME': rows 7 -> 4 pad 2 + 2, so the top row sees 3 image rows; columns 6 -> 3 pad
    # 1 before and 2 after (the odd pixel at the end), so the first column sees 4, the last 3.
    assert out[0, 0, 0, 0].item() == 12.0
    assert out[0, 0, 0, -1].item() == 9.0


def test_effnet_features_shapes_strides_and_frozen():
    net = B.EffNetFeatures()
    feats = net(torch.rand(2, 3, 64, 48) * 2 - 1)
    assert [f.shape[1] for f in feats] == list(B.LITE0_FEATURE_CHANNELS)
    assert [tuple(f.shape[2:]) for f in feats] == [(32, 24), (16, 12), (8, 6), (4, 3), (2, 2)]
    assert not net.training and not any(p.requires_grad for p in net.parameters())
    nn.ModuleList([net]).train()               # a training loop's .train() must not unfreeze BN
    assert not any(m.training for m in net.modules())
    x = torch.rand(1, 3, 32, 32, requires_grad=True)
    net(x)[-1].sum().backward()                         # gradients reach the image (perceptual loss)
    assert x.grad is not None and x.grad.abs().sum() > 0
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        net(torch.zeros(3, 32, 32))


def test_perceptual_extractor_falls_back_without_vgg(hub_dir, capsys, caplog):
    with caplog.at_level(logging.WARNING, logger="smis.backbones"):
        module, name = B.perceptual_extractor(device="cpu")
    assert name == "efficientnet_lite0"
    assert "perceptual backbone: efficientnet_lite0" in capsys.readouterr().out
    assert "falls back" in caplog.text
    assert isinstance(module, B.EffNetFeatures)
    assert module.layer_weights == B.VGG_LAYER_WEIGHTS
    assert not module.training and not any(p.requires_grad for p in module.parameters())


def test_vgg19_features_load_from_hub_cache(hub_dir, capsys):
    from torchvision.models.vgg import cfgs, make_layers

    torch.manual_seed(0)
    reference = make_layers(cfgs["E"]).eval()           # randomly initialised VGG19 trunk
    torch.save({f"features.{k}": v for k, v in reference.state_dict().items()},
               hub_dir / "checkpoints" / B.VGG19_FILE)
    module, name = B.perceptual_extractor(device="cpu")
    assert name == "vgg19" and isinstance(module, B.VGG19Features)
    assert "perceptual backbone: vgg19" in capsys.readouterr().out
    assert module.layer_weights == (1 / 32, 1 / 16, 1 / 8, 1 / 4, 1.0)
    assert not any(p.requires_grad for p in module.parameters())

    x = torch.rand(1, 3, 32, 32) * 2 - 1
    feats = module(x)
    h = ((x + 1) / 2 - torch.tensor(B.IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor(B.IMAGENET_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        expected = [reference[:i + 1](h) for i in (1, 6, 11, 20, 29)]   # relu1_1 ... relu5_1
    assert [f.shape[1] for f in feats] == [64, 128, 256, 512, 512]
    for f, e in zip(feats, expected):
        torch.testing.assert_close(f, e)


def test_perceptual_extractor_rejects_unknown_backbone():
    with pytest.raises(ValueError, match="vgg16"):
        B.perceptual_extractor(prefer="vgg16")


def test_vgg19_features_missing_file_names_the_path(hub_dir):
    with pytest.raises(FileNotFoundError, match=B.VGG19_FILE):
        B.VGG19Features()
