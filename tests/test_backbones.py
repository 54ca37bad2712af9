"""Tests for smis/backbones.py: EfficientNet-Lite0 weights, VGG19 from the hub cache, fallback."""
from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from torch import nn

from smis import backbones as B


@pytest.fixture(scope="module")
def lite0():
    return B.efficientnet_lite0(pretrained=True, device="cpu")


def _as_input(img: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(img).permute(2, 0, 1).float() / 127.5 - 1   # (3, H, W) in [-1, 1]


def test_lite0_state_dict_matches_package_file_strictly():
    state = torch.load(B.efficientnet_lite0_weights_path(), map_location="cpu", weights_only=True)
    model = B.EfficientNetLite0()
    assert set(model.state_dict()) == set(state)
    model.load_state_dict(state, strict=True)
    n_params = sum(p.numel() for p in model.parameters())
    assert 4.6e6 < n_params < 4.7e6                     # EfficientNet-Lite0 has 4.65 M parameters


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


def test_conv2d_same_gives_ceil_of_size_over_stride():
    conv = B.Conv2dSame(1, 1, 5, 2, bias=False)
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
    assert not net.training and not net.net._bn0.training
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
