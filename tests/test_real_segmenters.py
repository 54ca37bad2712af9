"""The field's published segmenters for mask mIoU on real data (smis.real_segmenters): the networks have the
published parameter names and shapes (tests/data/segmenter_checkpoint_keys.json, derived from the reference code),
UperNet-ResNet101 gives mit-semseg's own forward output for the same weights, the protocol pools one confusion
matrix over the test set (a hand-computed case), and wrong files or masks fail with the file, what was expected
and the fix."""
import dataclasses
import json
import math
from collections import OrderedDict
from pathlib import Path

import pytest
import torch
from torch import nn

from smis import real_segmenters as rs
from smis.weight_fixtures import SYNC_BN_BUFFERS
from smis.models import load_segmenter_for
from smis.segmenter import MaskFidelity
from smis.stats import miou_ci
from smis.utils import project_root

KEYS = json.loads((project_root() / "tests" / "data" / "segmenter_checkpoint_keys.json").read_text())
DRN_FILE, ENCODER_FILE, DECODER_FILE = "drn-d-105_ms_cityscapes.pth", "encoder_epoch_50.pth", "decoder_epoch_50.pth"


def _shapes(module: nn.Module) -> dict[str, list[int]]:
    return {k: list(v.shape) for k, v in module.state_dict().items()}


# ---------------------------------------------------------------------------------------------
# Published names and shapes


def test_drn_d_105_has_the_published_names_and_shapes():
    """Every key of fyu/drn's DRNSeg('drn_d_105', 19) state dict, in its order, with its shape (54.3 M weights)."""
    with torch.device("meta"):
        net = rs.DRND105Seg()
    assert list(_shapes(net).items()) == list(KEYS[DRN_FILE].items())
    params = sum(math.prod(s) for k, s in KEYS[DRN_FILE].items() if not k.endswith(("running_mean", "running_var",
                                                                                     "num_batches_tracked")))
    assert round(params / 1e6, 1) == 54.3                  # fyu/drn's README: DRN-D-105, 54.8 M with its fc


def test_upernet_resnet101_has_the_published_names_and_shapes():
    """Encoder and decoder keys of CSAIL's files, in order, less the SynchronizedBatchNorm2d buffers that eval mode
    never reads (the published files carry them; the loader accepts them present or absent)."""
    with torch.device("meta"):
        net = rs.UPerNetResNet101()
    for module, name in ((net.encoder, ENCODER_FILE), (net.decoder, DECODER_FILE)):
        published = KEYS[name]
        extra = [k for k in published if k.endswith(SYNC_BN_BUFFERS)]
        assert len(extra) == 3 * sum(k.endswith("num_batches_tracked") for k in published)
        assert list(_shapes(module).items()) == [(k, s) for k, s in published.items() if k not in extra]
    assert KEYS[DECODER_FILE]["conv_last.1.weight"] == [150, 256, 1, 1]


def test_drn_upsampling_is_fyu_drns_bilinear_kernel():
    """`up.weight` = fill_up_weights of segment.py: w[i, j] = (1 - |i / f - c|)(1 - |j / f - c|), f = 8,
    c = 15 / 16; a constant map stays constant inside after the x8 transposed convolution."""
    w = rs.bilinear_kernel(19)
    f, c = 8, 15 / 16
    assert w[3, 0, 2, 5].item() == pytest.approx((1 - abs(2 / f - c)) * (1 - abs(5 / f - c)))
    up = nn.ConvTranspose2d(1, 1, 16, stride=8, padding=4, bias=False)
    up.weight.data.copy_(w[:1])
    y = up(torch.ones(1, 1, 4, 4))
    assert y.shape[-2:] == (32, 32) and torch.allclose(y[..., 8:24, 8:24], torch.ones(16, 16))


@pytest.mark.slow
def test_fixture_files_are_in_the_published_format(segmenter_weights):
    """write_segmenter_weights writes the published key lists: CSAIL's with its SyncBN buffers, in order; fyu/drn's
    without num_batches_tracked (its 2017 file predates it)."""
    from smis.utils import safe_load

    ade, drn = segmenter_weights("ade20k"), segmenter_weights("gta5")
    for name in (ENCODER_FILE, DECODER_FILE):
        assert list({k: list(v.shape) for k, v in safe_load(ade / name, mmap=True).items()}.items()) == \
            list(KEYS[name].items())
    state = safe_load(drn / DRN_FILE, mmap=True)
    assert list({k: list(v.shape) for k, v in state.items()}.items()) == \
        [(k, s) for k, s in KEYS[DRN_FILE].items() if not k.endswith("num_batches_tracked")]
    assert torch.equal(state["up.weight"], rs.bilinear_kernel(19))


# ---------------------------------------------------------------------------------------------
# The package's own forward


def _package_upernet():
    """mit-semseg's encoder and decoder (random weights, BatchNorm statistics drawn as the fixtures draw them)."""
    mit = pytest.importorskip("mit_semseg.models.models", reason="mit-semseg not installed (bash run.sh setup "
                              "installs it with --no-deps; or pip install --no-deps mit-semseg==1.0.0)")
    from mit_semseg.models import resnet

    torch.manual_seed(0)
    enc = mit.Resnet(resnet.resnet101(pretrained=False))
    dec = mit.UPerNet(num_class=150, fc_dim=2048, use_softmax=True)
    for module in (enc, dec):
        for k, v in module.state_dict().items():
            if k.endswith("running_mean"):
                v.normal_(0.0, 0.1)
            elif k.endswith("running_var"):
                v.uniform_(0.5, 1.5)
            elif k.endswith(".weight") and v.dim() == 1:          # BatchNorm scales: keep activations moderate
                v.uniform_(0.5, 1.0)
    dec.conv_last[1].weight.data *= 30                            # varied labels, probabilities not saturated
    dec.conv_last[1].bias.data.zero_()
    return enc.eval(), dec.eval()


def test_upernet_gives_mit_semsegs_forward_for_the_same_weights(tmp_path):
    """The package's state dicts saved as CSAIL's train.py saves them (torch.save(net.state_dict())), loaded by
    load_real_segmenter (weights_only, strict): the class probabilities equal the package's SegmentationModule
    inference (decoder use_softmax, segSize = the input size), and the protocol's labels equal the package's on
    the same resized, normalised images."""
    enc, dec = _package_upernet()
    torch.save(enc.state_dict(), tmp_path / ENCODER_FILE)
    torch.save(dec.state_dict(), tmp_path / DECODER_FILE)
    seg = rs.load_real_segmenter("ade20k", f"{tmp_path}@96")
    x = torch.rand(2, 3, 80, 112) * 2 - 1                              # [-1, 1], not square
    with torch.no_grad():
        size = rs.PROTOCOLS["ade20k"].sizes((80, 112), (96,))[0]
        assert size == (96, 160)                                      # 112 x 96 / 80 = 134, rounded up to 160
        z = torch.nn.functional.interpolate((x + 1) / 2, size=size, mode="bilinear", align_corners=False,
                                            antialias=True)
        z = (z - torch.tensor(rs.IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor(rs.IMAGENET_STD).view(1, 3, 1, 1)
        theirs = dec(enc(z, return_feature_maps=True), segSize=size)  # (2, 150, 96, 160) probabilities
        ours = seg.net(z).softmax(1)
        assert torch.allclose(ours, theirs, atol=1e-5), (ours - theirs).abs().max()
        assert theirs.argmax(1).unique().numel() > 3                   # not a constant map: the test can fail
        back = torch.nn.functional.interpolate(theirs, size=(80, 112), mode="bilinear", align_corners=False,
                                               antialias=True)
        agree = (seg.predict_labels(x) == back.argmax(1)).float().mean()
    assert agree > 0.999                                               # ties of nearly equal classes may flip


# ---------------------------------------------------------------------------------------------
# The protocol on a hand-built case


class _ColourNet(nn.Module):
    """Class c's score is colour channel c: red pixels are class 0, green 1, blue 2."""

    def forward(self, x):
        return x * 10


TOY = rs.Protocol("toy", "colour net", ("toy.pth",), "toy.pth", classes=3, mask_classes=4, ignore_index=3,
                  ignored="id 3", short_sides=(4,), multiple=1, max_side=None, mean=(0.0, 0.0, 0.0),
                  std=(1.0, 1.0, 1.0), source="this test")


def _hand_case():
    """Two 4x4 images and masks. A: columns 0-1 red, 2-3 green; its mask 0 on columns 0-1, 1 on the top right
    2x2, 2 on the bottom right 2x2. B: all blue; its mask 3 (ignored) on row 0, 0 on column 0 of rows 1-3, 2 on
    the rest."""
    red, green, blue = (torch.tensor(c, dtype=torch.float32).view(3, 1, 1) for c in ((1, -1, -1), (-1, 1, -1),
                                                                                    (-1, -1, 1)))
    a = torch.cat([red.expand(3, 4, 2), green.expand(3, 4, 2)], 2)
    b = blue.expand(3, 4, 4)
    ma = torch.tensor([[0, 0, 1, 1], [0, 0, 1, 1], [0, 0, 2, 2], [0, 0, 2, 2]])
    mb = torch.tensor([[3, 3, 3, 3], [0, 2, 2, 2], [0, 2, 2, 2], [0, 2, 2, 2]])
    return torch.stack([a, b]), torch.stack([ma, mb])


@pytest.mark.parametrize("short_side", [4, 8])
def test_pooled_miou_and_per_class_iou_equal_a_hand_computation(short_side):
    """Counted by hand (truth -> prediction): class 0: 8 px -> 0 (A), 3 px -> 2 (B); class 1: 4 -> 1; class 2:
    4 -> 1 (A), 9 -> 2 (B); the 4 ignored pixels are not counted. IoU_0 = 8 / (8 + 3) = 8/11, IoU_1 = 4 / (4 + 4) =
    1/2, IoU_2 = 9 / (9 + 3 + 4) = 9/16; class 3 never predicted nor counted: NaN. mIoU = their mean over one pooled
    matrix (not the mean of per-image mIoUs: A alone gives (1 + 1/2 + 0) / 3). At short side 8 the images are
    upsampled and the probabilities resized back: the same labels."""
    images, masks = _hand_case()
    seg = rs.RealSegmenter(_ColourNet(), TOY, ["toy.pth"], (short_side,))
    result = MaskFidelity(seg).update(images, masks).compute()        # ignore_index 3 from the segmenter
    expected = torch.tensor([[8, 0, 3, 0], [0, 4, 0, 0], [0, 4, 9, 0], [0, 0, 0, 0]])
    assert torch.equal(result["confusion"], expected)
    iou = result["per_class"]
    assert iou[:3].tolist() == pytest.approx([8 / 11, 1 / 2, 9 / 16]) and math.isnan(iou[3])
    assert result["miou"] == pytest.approx((8 / 11 + 1 / 2 + 9 / 16) / 3)
    assert result["pixel_acc"] == pytest.approx(21 / 28)
    assert miou_ci(result["per_mask"], replicates=50)["miou"] == pytest.approx(result["miou"])
    single = MaskFidelity(seg).update(images[:1], masks[:1]).compute()
    assert single["miou"] == pytest.approx((1 + 1 / 2 + 0) / 3)


def test_scales_follow_csails_test_resizing():
    """Short side s, long side at most 1000, each side rounded UP to a multiple of 32 (CSAIL's round2nearest_multiple);
    DRN: 256x512 frames upsampled to 1024x2048, its training resolution."""
    ade = rs.PROTOCOLS["ade20k"]
    assert ade.sizes((256, 256)) == [(320, 320), (384, 384), (480, 480), (544, 544), (608, 608)]
    assert ade.sizes((256, 512), (600,)) == [(512, 1024)]            # capped by the long side 1000, then rounded up
    assert rs.PROTOCOLS["gta5"].sizes((256, 512)) == [(1024, 2048)]
    assert rs.PROTOCOLS["gta5"].ignore_index == 19 and rs.PROTOCOLS["ade20k"].ignore_index == 150


# ---------------------------------------------------------------------------------------------
# Bad inputs


def _save(state: dict, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(OrderedDict(state), path)
    return path


def test_a_segmenter_of_another_class_count_names_the_file_and_the_fix(tmp_path):
    f = _save({"seg.weight": torch.zeros(150, 512, 1, 1), "seg.bias": torch.zeros(150)}, tmp_path / DRN_FILE)
    with pytest.raises(rs.SegmenterMismatch) as e:
        rs.load_real_segmenter("gta5", str(f))
    msg = str(e.value)
    assert str(f) in msg and "predicts 150 classes" in msg and "needs 19" in msg
    assert "Fix: download drn-d-105_ms_cityscapes.pth" in msg
    assert rs.check_segmenter_files("gta5", str(f))[0] == "invalid"


def test_a_segmenter_of_another_dataset_names_the_file_and_the_fix(tmp_path):
    """An ADE20K decoder given as the Cityscapes DRN: the keys do not match (counts and examples named)."""
    with torch.device("meta"):
        dec = rs.UPerNetDecoder()
    f = _save({k: torch.zeros(v.shape) for k, v in dec.state_dict().items()}, tmp_path / "decoder.pth")
    with pytest.raises(rs.SegmenterMismatch, match=r"decoder\.pth is not the network of DRN-D-105 .*missing.*"
                                                   r"Fix: download drn-d-105_ms_cityscapes\.pth"):
        rs.load_real_segmenter("gta5", str(f))
    (tmp_path / "ade").mkdir()
    _save({"seg.weight": torch.zeros(19, 512, 1, 1)}, tmp_path / "ade" / ENCODER_FILE)      # DRN keys
    _save({"seg.weight": torch.zeros(19, 512, 1, 1)}, tmp_path / "ade" / DECODER_FILE)
    with pytest.raises(rs.SegmenterMismatch, match=r"encoder_epoch_50\.pth is not the encoder of UperNet-ResNet101"):
        rs.load_real_segmenter("ade20k", str(tmp_path / "ade"))


def test_a_truncated_or_missing_file_names_it_and_where_it_is_published(tmp_path):
    f = _save({"seg.weight": torch.zeros(19, 512, 1, 1), "pad": torch.zeros(4096)}, tmp_path / DRN_FILE)
    f.write_bytes(f.read_bytes()[:2000])
    with pytest.raises(rs.SegmenterMismatch, match=r"(?s)drn-d-105_ms_cityscapes\.pth.*truncated.*github\.com/fyu/drn"):
        rs.load_real_segmenter("gta5", str(tmp_path))                 # a folder: the published name inside it
    with pytest.raises(FileNotFoundError, match=r"encoder_epoch_50\.pth not found\. Fix: download .*sceneparsing"):
        rs.load_real_segmenter("ade20k", str(tmp_path))
    state, where, detail = rs.check_segmenter_files("ade20k", str(tmp_path))
    assert state == "missing" and f"not measured (missing {tmp_path / ENCODER_FILE})" in detail


def test_masks_the_segmenter_does_not_score_are_refused():
    """A dataset of another class count, and a mask id beyond the segmenter's classes (its ignored id passes)."""
    images, masks = _hand_case()
    seg = rs.RealSegmenter(_ColourNet(), TOY, ["toy.pth"])
    with pytest.raises(rs.SegmenterMismatch, match=r"cityscapes under x: 35 class ids, but colour net \(toy\.pth\) "
                                                   r"scores toy masks of 4 ids .*Fix"):
        seg.check_dataset(35, "cityscapes under x")
    masks[1, 0, 0] = 4
    with pytest.raises(ValueError, match=r"labels ids must lie in \[0, 4\) \(or the ignore_index 3\), found \[0, 4\]"):
        MaskFidelity(seg).update(images, masks)


def test_deepfashion_and_absent_files_read_not_measured(tmp_path):
    """DeepFashion: no segmenter, the column text says why; ade20k with "auto" and no file: None, the text names the
    missing file; an explicit path that does not exist is an error (the user asked for it)."""
    assert load_segmenter_for("deepfashion", "auto") is None
    assert rs.not_measured("deepfashion") == "not measured (no standard segmenter exists for DeepFashion (the field " \
                                             "reports no mask mIoU on it))"
    with pytest.raises(ValueError, match="no standard segmenter exists for DeepFashion.*SEGMENTER=''"):
        rs.load_real_segmenter("deepfashion")
    default = Path(rs.PROTOCOLS["ade20k"].default)
    if not (project_root() / default).exists():
        assert load_segmenter_for("ade20k", "auto") is None
        assert rs.not_measured("ade20k") == f"not measured (missing {default / ENCODER_FILE})"
    with pytest.raises(FileNotFoundError, match="drn-d-105_ms_cityscapes.pth not found"):
        load_segmenter_for("gta5", str(tmp_path / DRN_FILE))
    assert rs.parse_source("auto@256,300") == ("auto", (256, 300)) and rs.parse_source("a/b") == ("a/b", None)


@pytest.mark.slow
@pytest.mark.parametrize("dataset", ["ade20k", "gta5"])
def test_published_format_fixture_loads_and_segments(segmenter_weights, dataset):
    """The fixture files load through load_segmenter_for (strict, weights_only); labels lie in the segmenter's
    classes, never the ignored id; the description names the network, the file and the scales."""
    folder = segmenter_weights(dataset)
    seg = load_segmenter_for(dataset, f"{folder}@64")
    hw = (256, 256) if dataset == "ade20k" else (256, 512)
    labels = seg.predict_labels(torch.rand(2, 3, *hw) * 2 - 1)
    assert labels.shape == (2, *hw) and 0 <= labels.min() and labels.max() < seg.protocol.classes
    assert str(folder) in seg.source and "short side 64" in seg.source and "NOT the protocol's scales" in seg.source
    assert rs.check_segmenter_files(dataset, str(folder))[0] == "ok"


def test_the_readme_section_states_the_protocol_of_the_code():
    """README's "Mask fidelity and FID on real data" is the protocol's one written place: each dataset's row
    names the code's files, scales and ignored id, DeepFashion's says what the column says, FID names
    pytorch-fid's file and resize."""
    from smis.metrics import FID_INCEPTION_FILE

    readme = (project_root() / "README.md").read_text()
    title = "### Mask fidelity and FID on real data"
    assert readme.count(title) == 1
    section = readme.split(title, 1)[1].split("\n## ", 1)[0]
    rows = {line.split("|")[1].strip(): line for line in section.splitlines() if line.startswith("| ")}
    for name, p in rs.PROTOCOLS.items():
        row = next(r for k, r in rows.items() if name in k.split(", "))
        assert all(f"{p.default}/{f.replace('*', '50')}" in row or f.replace("*", "50") in row for f in p.files)
        assert p.default in row and f"mask id {p.ignore_index}" in row
        assert f"short side {', '.join(map(str, p.short_sides))}" in row
        assert all(f"{min(hw)}" in row for hw in p.sizes((256, 256 if name == "ade20k" else 512)))
    assert rs.NO_SEGMENTER["deepfashion"].split(" (")[0] in rows["deepfashion"]
    assert FID_INCEPTION_FILE in section and "bilinear, `align_corners=False`, no antialiasing" in section
    assert "FID_RESIZE_TABLE" not in section                       # the measured numbers are filled in


def test_a_label_map_beyond_the_segmenters_classes_names_its_file(tmp_path, ade20k_root):
    """The ceiling pass (real images, before any generator pass) reads every test label: an ADE20K label holding
    raw id 200 (the segmenter scores 150 classes + unknown) is refused with the file named."""
    import shutil

    import numpy as np
    from PIL import Image

    from smis.data import DatasetError, make_dataset
    from smis.evaluate import real_mask_fidelity

    root = tmp_path / "ADEChallengeData2016"
    shutil.copytree(ade20k_root, root)
    bad = sorted((root / "annotations" / "validation").glob("*.png"))[1]
    label = np.array(Image.open(bad))
    label[0, 0] = 200
    Image.fromarray(label).save(bad)
    ade = rs.PROTOCOLS["ade20k"]
    seg = rs.RealSegmenter(nn.Conv2d(3, ade.classes, 1), dataclasses.replace(ade, short_sides=(32,)), ["toy.pth"])
    test = make_dataset("ade20k", root, "val", size=64)
    seg.check_dataset(test.info.num_classes)                           # 151 ids: the ones it scores
    assert real_mask_fidelity(seg, test, [0], progress=False).shape == (1, 151, 151)
    with pytest.raises(DatasetError, match=rf"{bad.name} has raw id 200, outside 0\.\.150\. Fix"):
        real_mask_fidelity(seg, test, [0, 1, 2], progress=False)
