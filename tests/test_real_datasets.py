"""The paper's datasets through their loaders, on datasets generated in their real layouts
(smis.data.fixtures; the `*_source` and `*_root` fixtures of conftest.py) and, where ../shared/samples
exists, on the real ADE20K and DeepFashion sample files too (each such test runs once per source)."""
import csv
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from smis.data import DATASETS, DatasetError, make_dataset
from smis.data import ade20k, cityscapes, deepfashion, gta5
from smis.data.fixtures import samples_dir

SAMPLES = samples_dir()                 # real files, where they exist (SMIS_SHARED_DIR / SMIS_SAMPLES move them)
OBJECT_INFO = SAMPLES / "ade20k" / "objectInfo150.csv"


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


def object_info_names(source: str) -> list[str]:
    """The 150 'Name' fields ("wall", "building;edifice", ...): of the real objectInfo150.csv, or the copy
    in the third column of the class table smis ships."""
    if source == "objectInfo150.csv":
        with open(OBJECT_INFO) as f:
            return [r["Name"] for r in csv.DictReader(f)]
    lines = [line for line in ade20k.CLASS_TABLE.read_text().splitlines() if line and not line.startswith("#")]
    return [line.split("\t")[2] for line in lines[1:]]


@pytest.mark.parametrize("source", ["shipped table"] + (["objectInfo150.csv"] if OBJECT_INFO.is_file() else []))
def test_ade20k_names_match_object_info(source):
    names = object_info_names(source)
    assert len(names) == 150 and names[1] == "building;edifice"
    first = [n.split(";")[0] for n in names]
    ours = ade20k.class_names()[:150]
    differ = [i for i in range(150) if ours[i] != first[i]]
    assert differ == [58] and ours[58] == "screen door"  # raw id 59, renamed to keep names unique


def test_ade20k_validation_resize_and_unknown_shift(ade20k_source):
    ds = make_dataset("ade20k", ade20k_source.root, "val")
    assert len(ds) == ade20k_source.pairs["val"] and ds.info.num_classes == 151
    for i in range(len(ds)):
        s = ds[i]
        assert s["image"].shape == (3, 256, 256) and s["label"].shape == (256, 256) and s["label"].dtype == torch.long
        assert -1 <= s["image"].min() and s["image"].max() <= 1
        raw = raw_label(ds.pairs[i][1])
        _, lab = ds.load_raw(i)
        assert ((raw == 0) == (lab == 150)).all() and (lab[raw > 0] == raw[raw > 0] - 1).all()
        assert (raw == 0).any()  # every file holds unknown pixels, so the shift is exercised
        small = np.asarray(Image.open(ds.pairs[i][1]).resize((256, 256), Image.NEAREST), dtype=np.int64)
        assert np.array_equal(s["label"].numpy(), ade20k.LUT[small])
        img = np.asarray(Image.open(ds.pairs[i][0]).convert("RGB").resize((256, 256), Image.BICUBIC), dtype=np.float32)
        assert np.allclose(s["image"].permute(1, 2, 0).numpy(), img / 127.5 - 1, atol=1e-5)


def test_ade20k_train_is_resize_286_crop_256_flip(ade20k_source):
    ds = make_dataset("ade20k", ade20k_source.root, "training")
    assert len(ds) == ade20k_source.pairs["train"]
    last = len(ds) - 1
    big = ade20k.LUT[np.asarray(Image.open(ds.pairs[last][1]).resize((286, 286), Image.NEAREST), dtype=np.int64)]
    torch.manual_seed(0)
    flips = set()
    for _ in range(6):
        lab = ds[last]["label"].numpy()
        assert lab.shape == (256, 256)
        found = [(t, l, f) for f in (False, True) for t in range(31) for l in range(31)
                 if np.array_equal(big[t:t + 256, l:l + 256][:, ::-1] if f else big[t:t + 256, l:l + 256], lab)]
        assert found, "train label is not a (flipped) 256 crop of the 286 resize"
        flips.add(found[0][2])
    assert flips == {False, True}


def test_ade20k_split_names(ade20k_source):
    root = ade20k_source.root
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


def padded_resized(label: np.ndarray, size: int = 256) -> np.ndarray:
    """What the loader must make of a label file: background columns (rows) centred on each side up to
    a square, then a nearest resize to size x size (output pixel i samples source pixel (i + 0.5) * S / size)."""
    H, W = label.shape
    S = max(H, W)
    square = np.zeros((S, S), np.int64)
    square[(S - H) // 2:(S - H) // 2 + H, (S - W) // 2:(S - W) // 2 + W] = label
    idx = ((np.arange(size) + 0.5) * S / size).astype(int)
    return square[idx][:, idx]


def test_deepfashion_loader(deepfashion_source):
    ds = make_dataset("deepfashion", deepfashion_source.root, "test")
    assert len(ds) == deepfashion_source.pairs["test"] and ds.info.num_classes == 16
    assert ds.info.class_names[0] == "background" and ds.info.class_names[15] == "class_15"
    for i in range(len(ds)):
        s = ds[i]
        lab = raw_label(ds.pairs[i][1])
        assert s["image"].shape == (3, 256, 256)
        assert np.array_equal(s["label"].numpy(), padded_resized(lab))  # square 256 files pass unchanged
        if lab.shape == (256, 256):
            assert np.array_equal(s["label"].numpy(), lab)
        assert 0 <= s["label"].min() and s["label"].max() <= 15
    assert len(make_dataset("deepfashion", deepfashion_source.root, "train")) == deepfashion_source.pairs["train"]


def test_deepfashion_palette_is_the_datasets(deepfashion_source):
    assert deepfashion.read_color_palette(deepfashion_source.root / "color_palette.txt") == deepfashion.PALETTE
    assert make_dataset("deepfashion", deepfashion_source.root, "test").info.palette == deepfashion.PALETTE


def test_deepfashion_bad_palette_file(tmp_path):
    (tmp_path / "color_palette.txt").write_text("[[0,0,0],[1,2,3]]")
    with pytest.raises(DatasetError, match=r"color_palette.txt.*\(2, 3\)"):
        deepfashion.read_color_palette(tmp_path / "color_palette.txt")


@pytest.fixture
def portrait_fashion(deepfashion_source, tmp_path):
    """(root, split, index, photo (H, W, 3), label (H, W)) of a portrait photo the loader must pad: the
    generated 128x88 JPEG, or a 256x160 PNG cut from a real sample (lossless, so pixels compare exactly)."""
    if deepfashion_source.kind == "fixture":
        ds = make_dataset("deepfashion", deepfashion_source.root, "train", train=False)
        index = next(i for i in range(len(ds)) if ds.original_size(i)[0] != ds.original_size(i)[1])
        img, lab = ds.pairs[index]
        return deepfashion_source.root, "train", index, np.asarray(Image.open(img).convert("RGB")), raw_label(lab)
    src = deepfashion_source.root / "train" / "id_00000002_02_1_front"
    (tmp_path / "train").mkdir()
    img = Image.open(src.with_suffix(".jpg")).convert("RGB").crop((48, 0, 208, 256))
    lab = Image.open(f"{src}_label.png").crop((48, 0, 208, 256))
    img.save(tmp_path / "train" / "p.png")
    lab.save(tmp_path / "train" / "p_label.png")
    return tmp_path, "train", 0, np.asarray(img), np.asarray(lab, dtype=np.int64)


def test_deepfashion_pads_white_left_and_right(portrait_fashion):
    root, split, i, img, lab = portrait_fashion
    H, W = lab.shape
    left, right = (H - W) // 2, (H - W) // 2 + W                    # real crop: 48, 208; fixture: 20, 108
    assert H > W and left % 2 == 0
    ds = make_dataset("deepfashion", root, split, train=False, size=H)  # pad only, no resize
    s = ds[i]
    assert ds.original_size(i) == (H, W)
    assert (s["image"][:, :, :left] == 1).all() and (s["image"][:, :, right:] == 1).all()  # white
    assert (s["label"][:, :left] == 0).all() and (s["label"][:, right:] == 0).all()       # background
    assert np.array_equal(s["label"][:, left:right].numpy(), lab)
    assert np.allclose(s["image"][:, :, left:right].permute(1, 2, 0).numpy(), img / 127.5 - 1, atol=1e-6)
    # removing the padding gives the photo back, also for batches and channels-last arrays
    assert np.array_equal(deepfashion.remove_padding(s["label"], ds.original_size(i)).numpy(), lab)
    batch = torch.stack([s["image"], s["image"]])
    assert deepfashion.remove_padding(batch, (H, W)).shape == (2, 3, H, W)
    hwc = ds.info.colorize(s["label"])
    assert deepfashion.remove_padding(hwc, (H, W), axes=(0, 1)).shape == (H, W, 3)


def test_deepfashion_padding_at_other_sizes(portrait_fashion):
    root, split, i, _, lab = portrait_fashion
    H, W = lab.shape
    left = (H - W) // 2
    s = make_dataset("deepfashion", root, split, train=False, size=H // 2)[i]
    assert s["label"].shape == (H // 2, H // 2) and (s["label"][:, :left // 2] == 0).all()
    # bicubic reaches 2 columns into the padding from the photo's edge
    assert (s["image"][:, :, :left // 2 - 2] == 1).all()
    unpadded = deepfashion.remove_padding(s["label"], (H, W))
    assert unpadded.shape == (H // 2, W // 2)
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
    assert ds.info.class_names[0] == "road" and ds.info.class_names[18] == "bicycle"
    assert ds.info.class_names[19] == "others"
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
    assert torch.allclose(gta5.rarity_weights(tiny, alpha=1.0, min_fraction=0.01),
                          torch.tensor([0.5, 1.5], dtype=torch.float64))
    assert torch.allclose(gta5.rarity_weights(hist, alpha=1.0, ignore=(1,)),
                          torch.tensor([2, 2, 10, 2], dtype=torch.float64) / 4)
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
EXPECTED_CITYSCAPES = [
    19, 19, 19, 19, 19, 19, 19,   # 0-6: unlabeled, ego vehicle, border, out of roi, static, dynamic, ground
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
