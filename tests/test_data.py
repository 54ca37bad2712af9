import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

from smis.data import DATASETS, DatasetError, collate, distinct_training_images, make_dataset
from smis.data.base import PairTransform, rgb_to_ids
from smis.data.synthetic import PALETTE, generate

NAMES = ["a", "b", "c", "d"]
PAL = [[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 0]]


def make_folder(root, n=3, size=(40, 56), split="train", rgb_labels=False, classes_json=True, seed=0):
    rng = np.random.default_rng(seed)
    (root / split / "images").mkdir(parents=True, exist_ok=True)
    (root / split / "labels").mkdir(parents=True, exist_ok=True)
    labels = []
    for i in range(n):
        img = rng.integers(0, 256, (*size, 3), dtype=np.uint8)
        lab = rng.integers(0, 4, size).astype(np.uint8)
        Image.fromarray(img).save(root / split / "images" / f"im{i}.png")
        out = Image.fromarray(np.asarray(PAL, np.uint8)[lab]) if rgb_labels else Image.fromarray(lab, mode="L")
        out.save(root / split / "labels" / f"im{i}.png")
        labels.append(lab)
    if classes_json:
        (root / "classes.json").write_text(json.dumps({"names": NAMES, "palette": PAL, "dontcare": None}))
    return labels


def test_registry_lists_builtin_datasets():
    assert {"synthscenes", "folder"} <= set(DATASETS)
    with pytest.raises(ValueError, match="unknown dataset 'nope'"):
        make_dataset("nope", None)


def test_folder_reads_ids_and_metadata(tmp_path):
    labels = make_folder(tmp_path, split="val")
    ds = make_dataset("folder", tmp_path, "val")
    assert len(ds) == 3 and ds.info.num_classes == 4 and ds.info.class_names == tuple(NAMES)
    s = ds[1]
    assert s["image"].shape == (3, 40, 56) and s["label"].shape == (40, 56)
    assert torch.equal(s["label"], torch.from_numpy(labels[1].astype(np.int64)))
    assert -1 <= s["image"].min() and s["image"].max() <= 1
    batch = collate([ds[0], ds[2]])
    assert batch["image"].shape == (2, 3, 40, 56) and batch["index"].tolist() == [0, 2]


def test_folder_rgb_labels_through_palette(tmp_path):
    labels = make_folder(tmp_path, rgb_labels=True)
    ds = make_dataset("folder", tmp_path, "train", train=False)
    assert torch.equal(ds[0]["label"], torch.from_numpy(labels[0].astype(np.int64)))


def test_rgb_label_without_palette_is_an_error(tmp_path):
    make_folder(tmp_path, rgb_labels=True, classes_json=False)
    ds = make_dataset("folder", tmp_path, "train", num_classes=4)
    with pytest.raises(DatasetError, match=r"im0\.png is an RGB image but the dataset has no palette"):
        ds[0]


def test_unknown_colour_is_an_error():
    rgb = np.zeros((2, 2, 3), np.uint8)
    rgb[...] = PAL[2]
    rgb[1, 1] = (1, 2, 3)
    assert rgb_to_ids(rgb[:1], np.asarray(PAL)).tolist() == [[2, 2]]
    with pytest.raises(DatasetError, match=r"\(1, 2, 3\) at \(y=1, x=1\)"):
        rgb_to_ids(rgb, np.asarray(PAL), "x.png")


def test_no_classes_json_needs_num_classes(tmp_path):
    make_folder(tmp_path, classes_json=False)
    with pytest.raises(DatasetError, match="num_classes"):
        make_dataset("folder", tmp_path, "train")


def test_unpaired_files_are_named(tmp_path):
    make_folder(tmp_path)
    (tmp_path / "train" / "labels" / "im1.png").unlink()
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / "train" / "labels" / "orphan.png")
    with pytest.raises(DatasetError) as e:
        make_dataset("folder", tmp_path, "train")
    msg = str(e.value)
    assert "im1.png" in msg and "orphan.png" in msg and "Fix:" in msg


def test_label_id_beyond_class_count(tmp_path):
    make_folder(tmp_path)
    Image.fromarray(np.full((40, 56), 9, np.uint8), mode="L").save(tmp_path / "train" / "labels" / "im2.png")
    ds = make_dataset("folder", tmp_path, "train")
    ds[0]
    with pytest.raises(DatasetError, match=r"im2\.png has class id 9, outside 0\.\.3"):
        ds[2]


def test_size_mismatch(tmp_path):
    make_folder(tmp_path)
    Image.fromarray(np.zeros((20, 56), np.uint8), mode="L").save(tmp_path / "train" / "labels" / "im0.png")
    with pytest.raises(DatasetError, match=r"size mismatch: image .*im0\.png is 40x56 .* is 20x56"):
        make_dataset("folder", tmp_path, "train")[0]


def test_unreadable_file(tmp_path):
    make_folder(tmp_path)
    (tmp_path / "train" / "images" / "im1.png").write_bytes(b"not a png")
    with pytest.raises(DatasetError, match=r"cannot read image .*im1\.png"):
        make_dataset("folder", tmp_path, "train")[1]


def test_empty_split_and_missing_root(tmp_path):
    make_folder(tmp_path, n=0)
    with pytest.raises(DatasetError, match="empty split"):
        make_dataset("folder", tmp_path, "train")
    with pytest.raises(DatasetError, match="does not exist") as err:
        make_dataset("folder", tmp_path / "nowhere", "train")
    assert f"--out {tmp_path / 'nowhere'}`" in str(err.value)          # the fix names this root, not "{root}"
    with pytest.raises(DatasetError, match=r"folder .*test.* does not exist"):
        make_dataset("folder", tmp_path, "test")


def test_transforms_keep_labels_nearest_and_pair_flips(tmp_path):
    img, label, _ = generate(0, (64, 96))
    t = PairTransform(load_size=(80, 120), crop_size=(64, 64), flip=True, train=True)
    seen_flip = False
    for seed in range(8):
        x, y = t(Image.fromarray(img), label, torch.Generator().manual_seed(seed))
        assert x.shape == (3, 64, 64) and y.shape == (64, 64)
        assert set(y.unique().tolist()) <= set(np.unique(label).tolist())  # nearest: no new ids
        ref, _ = PairTransform(load_size=(80, 120), crop_size=(64, 64), train=False)(Image.fromarray(img), label)
        seen_flip |= not torch.equal(x, ref)
    assert seen_flip
    # evaluation transform is deterministic (centre crop, no flip)
    ev = PairTransform(load_size=(80, 120), crop_size=(64, 64), flip=True, train=False)
    a, b = ev(Image.fromarray(img), label), ev(Image.fromarray(img), label)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    # flipping moves image and label together
    g = torch.Generator().manual_seed(0)
    flips = [PairTransform(flip=True, train=True)(Image.fromarray(img), label, g) for _ in range(6)]
    for x, y in flips:
        flipped = not torch.equal(y, torch.from_numpy(label))
        assert torch.equal(y, torch.from_numpy(label).flip(-1)) == flipped
        assert torch.allclose(x, (torch.from_numpy(img).permute(2, 0, 1).float() / 127.5 - 1).flip(-1) if flipped
                              else torch.from_numpy(img).permute(2, 0, 1).float() / 127.5 - 1)


def test_folder_training_crop(tmp_path):
    make_folder(tmp_path, size=(48, 48))
    ds = make_dataset("folder", tmp_path, "train", size=32, load_size=40)
    assert ds[0]["image"].shape == (3, 32, 32)
    loader = torch.utils.data.DataLoader(ds, batch_size=2, collate_fn=collate)
    assert next(iter(loader))["label"].shape == (2, 32, 32)



def test_distinct_training_images_counts_flips_and_is_unbounded_with_random_crops(tmp_path):
    """What sizes the perceptual-map cache: data x flips, or math.inf where training crops at random positions."""
    make_folder(tmp_path, n=3, size=(48, 48))
    cropped = make_dataset("folder", tmp_path, "train", size=32, load_size=40)        # random 32x32 crops of 40x40
    plain = make_dataset("folder", tmp_path, "train", size=32)                        # a resize: one view per file
    same = make_dataset("folder", tmp_path, "train", size=32, load_size=32)           # crop = load size: one position
    assert cropped.transform.random_crops and not plain.transform.random_crops and not same.transform.random_crops
    assert distinct_training_images(cropped, flip=True) == math.inf
    assert distinct_training_images(plain, flip=True) == 6 and distinct_training_images(same, flip=False) == 3
    synth = make_dataset("synthscenes", None, "train", size=64, length=5)
    assert distinct_training_images(synth, flip=True) == 10
    test_split = make_dataset("folder", tmp_path, "train", size=32, load_size=40, train=False)   # centre crops
    assert distinct_training_images(test_split, flip=False) == 3


def test_palette_colorize():
    ds = make_dataset("synthscenes", None, "test", size=64, length=2)
    rgb = ds.info.colorize(ds[0]["label"])
    assert rgb.shape == (64, 64, 3) and tuple(rgb[0, 0]) == PALETTE[int(ds[0]["label"][0, 0])]


def test_classes_per_image_line_counts_the_classes_present_in_each_image():
    from smis.data.stats import classes_per_image
    hist = np.array([[5, 0, 1, 0], [1, 1, 1, 1], [0, 0, 0, 9]])       # 2, 4 and 1 classes present
    assert classes_per_image(hist) == "classes per image: min 1, mean 2.33, max 4"


def test_sample_pairs_tiles_image_and_mask_pairs_in_rows():
    from smis.data.check import sample_pairs
    from smis.viz import colorize, to_uint8
    ds = make_dataset("synthscenes", None, "test", size=64, length=4)   # a test split: no random flip
    g = sample_pairs(ds, n=4, per_row=2)
    assert g.shape == (2 * 64 + 2, 4 * 64 + 3 * 2, 3) and g.dtype == np.uint8   # 2 rows of 4 tiles, 2 px between
    s = ds[3]                                                                   # row 1, second pair: tiles 2 and 3
    assert np.array_equal(g[66:130, 132:196], to_uint8(s["image"]))
    assert np.array_equal(g[66:130, 198:262], colorize(s["label"], ds.info.palette))


def test_sample_pairs_of_a_flipped_training_split_are_the_same_in_every_call_and_leave_the_rng_alone():
    from smis.data.check import sample_pairs
    ds = make_dataset("synthscenes", None, "train", size=64, length=8, flip=True)   # random flips: global torch RNG
    torch.manual_seed(123)
    state = torch.random.get_rng_state()
    a = sample_pairs(ds, n=8)
    assert torch.equal(torch.random.get_rng_state(), state)                  # the caller's stream is untouched
    torch.manual_seed(7)
    assert np.array_equal(sample_pairs(ds, n=8), a)                          # whatever the global state
    others = [sample_pairs(ds, n=8, seed=s) for s in (1, 2, 3)]
    assert any(not np.array_equal(o, a) for o in others)                     # the seed does draw the flips
