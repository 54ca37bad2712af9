"""The paper's datasets through their loaders: real sample files (ADE20K, DeepFashion) and generated
fixtures in the GTA-5 and Cityscapes layouts."""
import csv
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from smis.data import DATASETS, DatasetError, make_dataset
from smis.data import ade20k, cityscapes, deepfashion, gta5

SAMPLES = Path(os.environ.get("SMIS_SAMPLES", Path(__file__).resolve().parents[1].parent / "shared" / "samples"))
needs_ade20k = pytest.mark.skipif(not (SAMPLES / "ade20k").is_dir(), reason=f"ADE20K samples not found at {SAMPLES}")
needs_deepfashion = pytest.mark.skipif(not (SAMPLES / "deepfashion").is_dir(),
                                       reason=f"DeepFashion samples not found at {SAMPLES}")


def raw_label(path) -> np.ndarray:
    return np.asarray(Image.open(path), dtype=np.int64)


def test_registry_has_the_real_datasets():
    assert {"ade20k", "deepfashion", "gta5", "cityscapes"} <= set(DATASETS)


# ---------------------------------------------------------------------------------------------
# ADE20K


def test_ade20k_class_table():
    names = ade20k.class_names()
    assert len(names) == 151 and len(set(names)) == 151
    assert names[:3] == ("wall", "building", "sky") and names[149] == "flag" and names[150] == "unknown"
    info = ade20k.info(256)
    assert info.num_classes == 151 and info.dontcare == 150 and info.size == (256, 256)
    assert info.palette[150] == (0, 0, 0) and len(set(info.palette)) == 151  # unknown black, all colours distinct
    assert ade20k.LUT[0] == 150 and ade20k.LUT[1] == 0 and ade20k.LUT[150] == 149


def test_voc_colormap_known_values():
    # the PASCAL VOC colours: background black, 1 = dark red, 2 = dark green, 3 = olive, 4 = navy
    assert ade20k.voc_colormap(5).tolist() == [[0, 0, 0], [128, 0, 0], [0, 128, 0], [128, 128, 0], [0, 0, 128]]


@needs_ade20k
def test_ade20k_names_match_object_info():
    rows = list(csv.DictReader(open(SAMPLES / "ade20k" / "objectInfo150.csv")))
    first = [r["Name"].split(";")[0] for r in rows]
    ours = ade20k.class_names()[:150]
    differ = [i for i in range(150) if ours[i] != first[i]]
    assert differ == [58] and ours[58] == "screen door"  # raw id 59, renamed to keep names unique


@needs_ade20k
def test_ade20k_validation_resize_and_unknown_shift():
    ds = make_dataset("ade20k", SAMPLES / "ade20k", "val")
    assert len(ds) == 2 and ds.info.num_classes == 151
    for i in range(len(ds)):
        s = ds[i]
        assert s["image"].shape == (3, 256, 256) and s["label"].shape == (256, 256) and s["label"].dtype == torch.long
        assert -1 <= s["image"].min() and s["image"].max() <= 1
        raw = raw_label(ds.pairs[i][1])
        _, lab = ds.load_raw(i)
        assert ((raw == 0) == (lab == 150)).all() and (lab[raw > 0] == raw[raw > 0] - 1).all()
        assert (raw == 0).any()  # the samples hold unknown pixels, so the shift is exercised
        small = np.asarray(Image.open(ds.pairs[i][1]).resize((256, 256), Image.NEAREST), dtype=np.int64)
        assert np.array_equal(s["label"].numpy(), ade20k.LUT[small])
        img = np.asarray(Image.open(ds.pairs[i][0]).convert("RGB").resize((256, 256), Image.BICUBIC), dtype=np.float32)
        assert np.allclose(s["image"].permute(1, 2, 0).numpy(), img / 127.5 - 1, atol=1e-5)


@needs_ade20k
def test_ade20k_train_is_resize_286_crop_256_flip():
    ds = make_dataset("ade20k", SAMPLES / "ade20k", "training")
    assert len(ds) == 4
    big = ade20k.LUT[np.asarray(Image.open(ds.pairs[3][1]).resize((286, 286), Image.NEAREST), dtype=np.int64)]
    torch.manual_seed(0)
    flips = set()
    for _ in range(6):
        lab = ds[3]["label"].numpy()
        assert lab.shape == (256, 256)
        found = [(t, l, f) for f in (False, True) for t in range(31) for l in range(31)
                 if np.array_equal(big[t:t + 256, l:l + 256][:, ::-1] if f else big[t:t + 256, l:l + 256], lab)]
        assert found, "train label is not a (flipped) 256 crop of the 286 resize"
        flips.add(found[0][2])
    assert flips == {False, True}


@needs_ade20k
def test_ade20k_split_names():
    root = SAMPLES / "ade20k"
    assert make_dataset("ade20k", root, "train").pairs == make_dataset("ade20k", root, "training").pairs
    val = make_dataset("ade20k", root, "val").pairs
    assert make_dataset("ade20k", root, "validation").pairs == val == make_dataset("ade20k", root, "test").pairs
    with pytest.raises(DatasetError, match="'valid'"):
        make_dataset("ade20k", root, "valid")


def test_ade20k_missing_root_is_a_clear_error(tmp_path):
    with pytest.raises(DatasetError, match="ADEChallengeData2016"):
        make_dataset("ade20k", tmp_path / "nope", "train")


# ---------------------------------------------------------------------------------------------
# DeepFashion


@needs_deepfashion
def test_deepfashion_samples():
    ds = make_dataset("deepfashion", SAMPLES / "deepfashion", "test")
    assert len(ds) == 2 and ds.info.num_classes == 16
    assert ds.info.class_names[0] == "background" and ds.info.class_names[15] == "class_15"
    for i in range(len(ds)):
        s = ds[i]
        assert s["image"].shape == (3, 256, 256)
        assert np.array_equal(s["label"].numpy(), raw_label(ds.pairs[i][1]))  # square 256 files pass unchanged
        assert 0 <= s["label"].min() and s["label"].max() <= 15
    assert len(make_dataset("deepfashion", SAMPLES / "deepfashion", "train")) == 4


@needs_deepfashion
def test_deepfashion_palette_is_the_datasets():
    assert deepfashion.read_color_palette(SAMPLES / "deepfashion" / "color_palette.txt") == deepfashion.PALETTE
    assert make_dataset("deepfashion", SAMPLES / "deepfashion", "test").info.palette == deepfashion.PALETTE


def test_deepfashion_bad_palette_file(tmp_path):
    (tmp_path / "color_palette.txt").write_text("[[0,0,0],[1,2,3]]")
    with pytest.raises(DatasetError, match=r"color_palette.txt.*\(2, 3\)"):
        deepfashion.read_color_palette(tmp_path / "color_palette.txt")


@pytest.fixture
def portrait_fashion(tmp_path):
    """A 256x160 (HxW) photo cut from a real sample, so the loader must pad it."""
    src = SAMPLES / "deepfashion" / "train" / "id_00000002_02_1_front"
    (tmp_path / "train").mkdir()
    img = Image.open(src.with_suffix(".jpg")).convert("RGB").crop((48, 0, 208, 256))
    lab = Image.open(f"{src}_label.png").crop((48, 0, 208, 256))
    img.save(tmp_path / "train" / "p.png")  # lossless, so pixels can be compared
    lab.save(tmp_path / "train" / "p_label.png")
    return tmp_path, np.asarray(img), np.asarray(lab, dtype=np.int64)


@needs_deepfashion
def test_deepfashion_pads_white_left_and_right(portrait_fashion):
    root, img, lab = portrait_fashion
    ds = make_dataset("deepfashion", root, "train", train=False)
    s = ds[0]
    assert ds.original_size(0) == (256, 160)
    assert (s["image"][:, :, :48] == 1).all() and (s["image"][:, :, 208:] == 1).all()  # white
    assert (s["label"][:, :48] == 0).all() and (s["label"][:, 208:] == 0).all()       # background
    assert np.array_equal(s["label"][:, 48:208].numpy(), lab)
    assert np.allclose(s["image"][:, :, 48:208].permute(1, 2, 0).numpy(), img / 127.5 - 1, atol=1e-6)
    # removing the padding gives the photo back, also for batches and channels-last arrays
    assert np.array_equal(deepfashion.remove_padding(s["label"], ds.original_size(0)).numpy(), lab)
    batch = torch.stack([s["image"], s["image"]])
    assert deepfashion.remove_padding(batch, (256, 160)).shape == (2, 3, 256, 160)
    hwc = ds.info.colorize(s["label"])
    assert deepfashion.remove_padding(hwc, (256, 160), axes=(0, 1)).shape == (256, 160, 3)


@needs_deepfashion
def test_deepfashion_padding_at_other_sizes(portrait_fashion):
    root, _, lab = portrait_fashion
    s = make_dataset("deepfashion", root, "train", train=False, size=128)[0]
    assert s["label"].shape == (128, 128) and (s["label"][:, :24] == 0).all()
    assert (s["image"][:, :, :22] == 1).all()  # bicubic reaches 2 columns into the padding from the photo's edge
    unpadded = deepfashion.remove_padding(s["label"], (256, 160))
    assert unpadded.shape == (128, 80)
    assert np.array_equal(unpadded.numpy(), lab[1::2, 1::2])  # nearest resize by 1/2 samples pixel centres 2i + 1


def test_padding_box_landscape_and_portrait():
    assert deepfashion.padding_box((1101, 750), (256, 256)) == (0, 256, 41, 215)
    assert deepfashion.padding_box((100, 200), (64, 64)) == (16, 48, 0, 64)  # top / bottom padding
    assert deepfashion.padding_box((80, 80), (256, 256)) == (0, 256, 0, 256)


# ---------------------------------------------------------------------------------------------
# GTA-5 (generated fixture in the paper's layout)


def write_pair(image_path: Path, label_path: Path, label: np.ndarray, seed: int = 0):
    H, W = label.shape
    rgb = np.random.default_rng(seed).integers(0, 256, (H, W, 3), dtype=np.uint8)
    image_path.parent.mkdir(parents=True, exist_ok=True)
    label_path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rgb).save(image_path)
    Image.fromarray(label.astype(np.uint8), mode="L").save(label_path)


def gta_label(H=256, W=512, shift=0) -> np.ndarray:
    return ((np.arange(W)[None, :] // (W // 20) + shift + 0 * np.arange(H)[:, None]) % 20).astype(np.int64)


def test_gta5_fixture(tmp_path):
    for i in range(3):
        write_pair(tmp_path / "RGB256Full" / "train" / f"{i:05d}.png",
                   tmp_path / "LabelgrayFull20" / "train" / f"{i:05d}.png", gta_label(shift=i), seed=i)
    ds = make_dataset("gta5", tmp_path, "train", train=False)
    assert len(ds) == 3 and ds.info.num_classes == 20 and ds.info.size == (256, 512)
    assert ds.info.class_names[0] == "road" and ds.info.class_names[18] == "bicycle" and ds.info.class_names[19] == "others"
    assert ds.info.palette[0] == (128, 64, 128) and ds.info.palette[10] == (70, 130, 180)  # road, sky
    s = ds[1]
    assert s["image"].shape == (3, 256, 512) and np.array_equal(s["label"].numpy(), gta_label(shift=1))
    flipped = make_dataset("gta5", tmp_path, "train")  # training: random flips
    torch.manual_seed(1)
    labels = {tuple(flipped[0]["label"][0, :: 26].tolist()) for _ in range(8)}
    assert len(labels) == 2


def test_gta5_ignore_id_is_others_and_bad_ids_fail(tmp_path):
    lab = gta_label()
    lab[0, :7] = 255
    write_pair(tmp_path / "RGB256Full" / "test" / "a.png", tmp_path / "LabelgrayFull20" / "test" / "a.png", lab)
    ds = make_dataset("gta5", tmp_path, "test")
    got = ds[0]["label"]
    assert (got[0, :7] == 19).all() and torch.equal(got[1:], torch.from_numpy(lab[1:]))
    lab[0, 0] = 20
    write_pair(tmp_path / "RGB256Full" / "test" / "a.png", tmp_path / "LabelgrayFull20" / "test" / "a.png", lab)
    with pytest.raises(DatasetError, match=r"a.png has class id 20"):
        ds[0]


def test_rarity_weights_hand_computed():
    hist = np.array([[100, 0, 0], [50, 50, 0], [90, 0, 10], [100, 0, 0]])
    # present: {0}, {0, 1}, {0, 2}, {0}; image frequency f = (1, 1/4, 1/4)
    w = gta5.rarity_weights(hist, alpha=0.5)        # f^-0.5 = (1, 2, 2): w = (1, 3, 3, 1) / 2
    assert torch.allclose(w, torch.tensor([0.5, 1.5, 1.5, 0.5], dtype=torch.float64))
    w0 = gta5.rarity_weights(hist, alpha=0.0)       # class counts (1, 2, 2, 1) / 1.5
    assert torch.allclose(w0, torch.tensor([1, 2, 2, 1], dtype=torch.float64) / 1.5)
    w1 = gta5.rarity_weights(hist, alpha=1.0)       # f^-1 = (1, 4, 4): w = (1, 5, 5, 1) / 3
    assert torch.allclose(w1, torch.tensor([1, 5, 5, 1], dtype=torch.float64) / 3)
    # a class under min_fraction of the image's pixels does not count; ignored ids never count
    tiny = np.array([[999, 1, 0], [500, 500, 0]])
    assert torch.allclose(gta5.rarity_weights(tiny, alpha=1.0), torch.ones(2, dtype=torch.float64))  # 1/1000 counts
    # at 1%: present {0}, {0, 1}; f = (1, 1/2); w = (1, 1 + 2) / 2
    assert torch.allclose(gta5.rarity_weights(tiny, alpha=1.0, min_fraction=0.01), torch.tensor([0.5, 1.5], dtype=torch.float64))
    assert torch.allclose(gta5.rarity_weights(hist, alpha=1.0, ignore=(1,)), torch.tensor([2, 2, 10, 2], dtype=torch.float64) / 4)
    with pytest.raises(ValueError, match="alpha"):
        gta5.rarity_weights(hist, alpha=-1)


def test_rarity_weights_drive_a_sampler():
    hist = np.array([[100, 0, 0]] * 6 + [[50, 0, 50]] * 2)  # class 2 in 2 of 8 images
    w = gta5.rarity_weights(hist, alpha=1.0)                  # (1, ..., 1, 5, 5)
    g = torch.Generator().manual_seed(0)
    drawn = torch.tensor(list(torch.utils.data.WeightedRandomSampler(w, 8000, generator=g)))
    share_rare = (drawn >= 6).double().mean().item()
    assert abs(share_rare - 10 / 16) < 0.03                  # vs 2/8 without weights


# ---------------------------------------------------------------------------------------------
# Cityscapes (generated fixture in the official layout)

# labelId -> expected id, written out by hand from the Cityscapes label table
EXPECTED_CITYSCAPES = [19, 19, 19, 19, 19, 19, 19,   # 0-6: unlabeled, ego vehicle, border, out of roi, static, dynamic, ground
                       0, 1, 19, 19,                 # 7 road, 8 sidewalk, 9 parking, 10 rail track
                       2, 3, 4, 19, 19, 19,          # 11 building, 12 wall, 13 fence, 14 guard rail, 15 bridge, 16 tunnel
                       5, 19, 6, 7, 8, 9, 10,        # 17 pole, 18 polegroup, 19 light, 20 sign, 21 vegetation, 22 terrain, 23 sky
                       11, 12, 13, 14, 15, 19, 19,   # 24 person, 25 rider, 26 car, 27 truck, 28 bus, 29 caravan, 30 trailer
                       16, 17, 18]                   # 31 train, 32 motorcycle, 33 bicycle


def cityscapes_fixture(root: Path, split="train", cities=("aachen", "bremen"), H=34, W=68):
    raw = (np.arange(H)[:, None] + 0 * np.arange(W)[None, :]) % 34  # row r holds label id r
    for c, city in enumerate(cities):
        stem = f"{city}_000000_00001{c}"
        write_pair(root / "leftImg8bit" / split / city / f"{stem}_leftImg8bit.png",
                   root / "gtFine" / split / city / f"{stem}_gtFine_labelIds.png", raw, seed=c)
    return raw


def test_cityscapes_label_mapping(tmp_path):
    raw = cityscapes_fixture(tmp_path)
    assert cityscapes.LUT.tolist() == EXPECTED_CITYSCAPES
    ds = make_dataset("cityscapes", tmp_path, "train", train=False, size=(34, 68))
    assert len(ds) == 2 and ds.info.num_classes == 20 and ds.info.name == "cityscapes"
    assert [p[0].parent.name for p in ds.pairs] == ["aachen", "bremen"]
    lab = ds[0]["label"].numpy()
    assert np.array_equal(lab[:, 0], np.array(EXPECTED_CITYSCAPES)[raw[:, 0]])
    assert make_dataset("cityscapes", tmp_path, "train")[0]["image"].shape == (3, 256, 512)  # default size


def test_cityscapes_rejects_ids_outside_the_table(tmp_path):
    cityscapes_fixture(tmp_path, cities=("aachen",))
    path = next((tmp_path / "gtFine").rglob("*_labelIds.png"))
    arr = np.asarray(Image.open(path)).copy()
    arr[0, 0] = 255
    Image.fromarray(arr).save(path)
    with pytest.raises(DatasetError, match="raw id 255"):
        make_dataset("cityscapes", tmp_path, "train")[0]


def test_cityscapes_unpaired_is_an_error(tmp_path):
    cityscapes_fixture(tmp_path)
    next((tmp_path / "gtFine").rglob("bremen*_labelIds.png")).unlink()
    with pytest.raises(DatasetError, match="1 image\\(s\\) without a label.*bremen"):
        make_dataset("cityscapes", tmp_path, "train")
