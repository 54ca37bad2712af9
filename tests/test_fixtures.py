"""smis.data.fixtures: the generated datasets have the real layouts and encodings, load through our
loaders and pass the checker (the published-format weights: tests/test_weight_fixtures.py)."""
from __future__ import annotations

import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from smis.data import cityscapes, deepfashion, fixtures, make_dataset
from smis.utils import project_root

N = 3                                                                          # the writers' default pairs per split


def raw(path) -> np.ndarray:
    """A label PNG's stored values, (H, W) int64."""
    with Image.open(path) as im:
        return np.asarray(im, dtype=np.int64)


def pixels(path) -> np.ndarray:
    """An image file decoded, (H, W, 3) uint8."""
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def kind(path) -> tuple[str, str, tuple[int, int]]:
    """(format, mode, (W, H)) of an image file."""
    with Image.open(path) as im:
        return im.format, im.mode, im.size


# ---------------------------------------------------------------------------------------------
# ADE20K


def test_ade20k_layout_and_encoding(ade20k_root):
    assert ade20k_root.name == "ADEChallengeData2016"
    sizes = []
    for folder, prefix in (("training", "ADE_train"), ("validation", "ADE_val")):
        images = sorted((ade20k_root / "images" / folder).iterdir())
        labels = sorted((ade20k_root / "annotations" / folder).iterdir())
        assert [p.name for p in images] == [f"{prefix}_{i:08d}.jpg" for i in range(1, N + 1)]
        assert [p.name for p in labels] == [p.stem + ".png" for p in images]
        for img, lab in zip(images, labels):
            (fi, mi, si), (fl, ml, sl) = kind(img), kind(lab)
            assert (fi, mi, fl, ml) == ("JPEG", "RGB", "PNG", "L") and si == sl and si[0] != si[1]
            sizes.append(si)
            ids = set(np.unique(raw(lab)).tolist())
            assert {0, 1, 150} <= ids and max(ids) == 150        # unknown and both ends of 1..150
    assert len(set(sizes)) == len(sizes) == 2 * N                 # every file its own size
    assert any(w < h for w, h in sizes) and any(w > h for w, h in sizes)


def test_ade20k_loads_with_unknown_as_the_dontcare_class(ade20k_root):
    val = make_dataset("ade20k", ade20k_root, "val")
    assert len(val) == N and val.info.num_classes == 151 and val.info.dontcare == 150
    for i in range(N):
        r = raw(val.pairs[i][1])
        _, lab = val.load_raw(i)                                  # ids before resizing
        assert np.array_equal(lab == 150, r == 0) and np.array_equal(lab[r > 0], r[r > 0] - 1)
        assert lab.min() == 0 and lab.max() == 150                # raw 1 -> 0, raw 0 -> 150
        assert val[i]["label"].shape == (256, 256)
    torch.manual_seed(0)
    train = make_dataset("ade20k", ade20k_root, "train")
    assert len(train) == N and train[0]["image"].shape == (3, 256, 256)


# ---------------------------------------------------------------------------------------------
# DeepFashion


def test_deepfashion_layout_and_encoding(deepfashion_root):
    assert deepfashion.read_color_palette(deepfashion_root / "color_palette.txt") == deepfashion.PALETTE
    for split in ("train", "test"):
        files = sorted((deepfashion_root / split).iterdir())
        images = [p for p in files if p.suffix == ".jpg"]
        assert len(images) == N and len(files) == 2 * N
        for i, img in enumerate(images):
            lab_path = img.with_name(img.stem + deepfashion.LABEL_SUFFIX)
            (fi, mi, si), (fl, ml, sl) = kind(img), kind(lab_path)
            assert (fi, mi, fl, ml) == ("JPEG", "RGB", "PNG", "L") and si == sl
            lab, rgb = raw(lab_path), pixels(img)
            assert set(np.unique(lab).tolist()) == set(range(16))
            if i % 2 == 0:                                        # the 256x256 release: photo in columns 41..214
                assert si == (256, 256)
                assert (lab[:, :41] == 0).all() and (lab[:, 215:] == 0).all() and (lab[:, 41:215] > 0).any()
                assert (rgb[:, :32] >= 250).all() and (rgb[:, -32:] >= 250).all()  # white (whole JPEG blocks)
            else:                                                 # a portrait photo, not padded on disk
                assert si == (88, 128) and (lab[:, [0, -1]] > 0).any()


def test_deepfashion_portrait_is_padded_white_by_the_loader(deepfashion_root):
    ds = make_dataset("deepfashion", deepfashion_root, "train", train=False)
    assert len(ds) == N and [ds.original_size(i) for i in range(N)] == [(256, 256), (128, 88), (256, 256)]
    lab = raw(ds.pairs[1][1])                                     # (128, 88)
    padded = np.zeros((128, 128), np.int64)
    padded[:, 20:108] = lab                                       # centred: 20 columns each side
    s = ds[1]
    assert np.array_equal(s["label"].numpy(), padded.repeat(2, 0).repeat(2, 1))  # nearest x2 to 256
    assert (s["image"][:, :, :32] == 1).all() and (s["image"][:, :, -32:] == 1).all()  # white beyond bicubic's reach
    unpadded = deepfashion.remove_padding(s["label"], ds.original_size(1)).numpy()
    assert np.array_equal(unpadded, lab.repeat(2, 0).repeat(2, 1))
    assert np.array_equal(ds[0]["label"].numpy(), raw(ds.pairs[0][1]))  # 256x256 files pass unchanged


# ---------------------------------------------------------------------------------------------
# GTA-5 and Cityscapes


def test_gta5_layout_encoding_and_loader(gta5_root):
    for split in ("train", "test"):
        images = sorted((gta5_root / "RGB256Full" / split).iterdir())
        labels = sorted((gta5_root / "LabelgrayFull20" / split).iterdir())
        assert len(images) == N and [p.name for p in images] == [p.name for p in labels]
        for img, lab in zip(images, labels):
            assert kind(img) == ("PNG", "RGB", (512, 256)) and kind(lab) == ("PNG", "L", (512, 256))
            assert set(np.unique(raw(lab)).tolist()) == set(range(20))
        ds = make_dataset("gta5", gta5_root, split, train=False)
        s = ds[N - 1]                                             # stored at 256x512: not resampled
        assert np.array_equal(s["label"].numpy(), raw(labels[-1]))
        assert np.allclose(s["image"].permute(1, 2, 0).numpy(), pixels(images[-1]) / 127.5 - 1, atol=1e-6)


def test_cityscapes_layout_encoding_and_loader(cityscapes_root):
    for split, cities in fixtures.CITIES.items():
        assert sorted(p.name for p in (cityscapes_root / "leftImg8bit" / split).iterdir()) == sorted(cities)
        gt = [p for p in (cityscapes_root / "gtFine" / split).rglob("*") if p.is_file()]
        assert Counter(p.name.split("_gtFine_")[1] for p in gt) == {"labelIds.png": N, "color.png": N,
                                                                    "instanceIds.png": N, "polygons.json": N}
        ds = make_dataset("cityscapes", cityscapes_root, split, train=False, size=(64, 128))
        assert len(ds) == N                                       # color / instanceIds / polygons are not labels
        for i, (img, lab) in enumerate(ds.pairs):
            assert img.name.endswith("_leftImg8bit.png")
            assert lab.name == img.name.replace("leftImg8bit", "gtFine_labelIds")
            assert kind(lab) == ("PNG", "L", (128, 64)) and kind(img) == ("PNG", "RGB", (128, 64))
            r = raw(lab)
            assert set(np.unique(r).tolist()) == set(range(34))  # void, parking, caravan, ... included
            got = ds[i]["label"].numpy()
            assert np.array_equal(got, cityscapes.LUT[r])
            assert (got[r == 7] == 0).all() and (got[r == 33] == 18).all()
            assert (got[np.isin(r, [0, 3, 9, 10, 14, 29, 30])] == 19).all()
        assert make_dataset("cityscapes", cityscapes_root, split)[0]["label"].shape == (256, 512)


@pytest.mark.parametrize("name", sorted(fixtures.WRITERS))
def test_check_cli_passes_on_every_fixture(name, request):
    root = request.getfixturevalue(f"{name}_root")
    r = subprocess.run([sys.executable, "-m", "smis.data.check", str(root), "--format", name, "--quiet"],
                       cwd=project_root(), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "OK: no problems found" in r.stdout and r.stdout.count(f"| {N} | {N} | {N} | {N} |") == 2  # both splits


@pytest.mark.parametrize("name", sorted(fixtures.WRITERS))
def test_writers_are_deterministic_and_never_overwrite(name, tmp_path, request):
    def files(root: Path) -> dict[str, bytes]:
        return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}

    a = fixtures.WRITERS[name](tmp_path / "a")
    assert files(a) == files(request.getfixturevalue(f"{name}_root"))   # same call, same bytes
    b = files(fixtures.WRITERS[name](tmp_path / "b", seed=1))
    assert b.keys() == files(a).keys() and sum(b[k] != v for k, v in files(a).items()) >= 2 * N
    with pytest.raises(FileExistsError, match=f"{a}.*Fix:"):
        fixtures.WRITERS[name](tmp_path / "a")
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match=r"n_per_split=.*Fix: pass an int >= 1"):
            fixtures.WRITERS[name](tmp_path / "c", n_per_split=bad)
    one = fixtures.WRITERS[name](tmp_path / "c", n_per_split=1)
    assert len(make_dataset(name, one, "train")) == 1
    assert [p.name for p in (tmp_path / "c").iterdir()] == [one.name]  # no temporary folder left behind


def test_shared_dir_and_samples_dir_are_overridable(monkeypatch, tmp_path):
    monkeypatch.delenv("SMIS_SHARED_DIR", raising=False)
    monkeypatch.delenv("SMIS_SAMPLES", raising=False)
    assert fixtures.shared_dir() == project_root().parent / "shared"
    assert fixtures.samples_dir() == project_root().parent / "shared" / "samples"
    monkeypatch.setenv("SMIS_SHARED_DIR", str(tmp_path))
    assert fixtures.shared_dir() == tmp_path and fixtures.samples_dir() == tmp_path / "samples"
    monkeypatch.setenv("SMIS_SAMPLES", str(tmp_path / "elsewhere"))
    assert fixtures.samples_dir() == tmp_path / "elsewhere"
