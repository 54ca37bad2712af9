"""Tiny generated datasets in the paper's real on-disk layouts (the published-format weights: smis.weight_fixtures).

A fresh clone has no real dataset files (research-only licences; the few real samples CI keeps
live in `../shared/samples`, beside the clone, never in it), so the tests and smoke runs read
these instead. Each writer lays out a few pairs per split exactly as the full dataset is laid out,
with the same file types and label encodings, from random shapes drawn in that dataset's class ids:

    write_ade20k(root)       root/ADEChallengeData2016/images/{training,validation}/ADE_{train,val}_%08d.jpg
                                                 annotations/{training,validation}/<stem>.png
                             RGB JPEGs of varying non-square sizes; 8-bit ids 0 = unknown, 1..150 = classes
    write_deepfashion(root)  root/deepfashion/{train,test}/<stem>.jpg + <stem>_label.png, color_palette.txt
                             even indices: 256x256 JPEGs whose photo band is already padded with white left and
                             right (as the 256x256 release is); odd indices: non-square portrait photos
                             (the high-resolution release's 750x1101 aspect) that the loader must pad; ids 0..15
    write_gta5(root)         root/gta5/RGB256Full/{train,test}/%05d.png + LabelgrayFull20/{train,test}/%05d.png
                             512x256 (W x H) RGB PNGs; 8-bit ids 0..19
    write_cityscapes(root)   root/cityscapes/leftImg8bit/{train,val}/<city>/<city>_%06d_%06d_leftImg8bit.png
                                        gtFine/{train,val}/<city>/<same>_gtFine_labelIds.png (+ _color.png,
                             _instanceIds.png, _polygons.json beside it, as in the real gtFine)
                             raw label ids 0..33, the ones mapped to "others" included

Every label map holds every id of its dataset's range in a strip along its bottom edge (ADE20K:
ids 0, 1 and 150, the edges of its range), so id handling is exercised on every file. Each writer
returns the dataset root to pass to `smis.data.make_dataset` / `python -m smis.data.check`, and is
deterministic in (n_per_split, seed): the same call writes the same bytes.

`shared_dir()` / `samples_dir()` locate the optional `../shared` folder (override: SMIS_SHARED_DIR,
SMIS_SAMPLES), where tests run extra checks on real files when it exists.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from PIL import Image

from smis.data import ade20k, cityscapes, deepfashion, gta5
from smis.utils import project_root

# Sizes (H, W): small, but in each dataset's real aspect ratios.
DEEPFASHION_SQUARE = 256          # the 256x256 release; its photos fill the middle 174 columns
DEEPFASHION_PORTRAIT = (128, 88)  # a 750x1101 photo (W x H) at about 1/8.6 of its side, even padding
GTA5_SIZE = gta5.SIZE             # (256, 512), as RGB256Full is stored
CITYSCAPES_SIZE = (64, 128)       # 2048x1024 frames at 1/16 of their side
CITIES = {"train": ("aachen", "bochum"), "val": ("frankfurt", "lindau")}


def shared_dir() -> Path:
    """The `shared/` folder beside the clone (CI only; absent in a user's clone); SMIS_SHARED_DIR overrides."""
    return Path(os.environ.get("SMIS_SHARED_DIR", project_root().parent / "shared"))


def samples_dir() -> Path:
    """The real sample files (`shared/samples`); SMIS_SAMPLES overrides, else under `shared_dir()`."""
    return Path(os.environ.get("SMIS_SAMPLES", shared_dir() / "samples"))


# ---------------------------------------------------------------------------------------------
# Drawing


def random_shapes(rng: np.random.Generator,    # the writer's generator
                  size: tuple[int, int],       # (H, W)
                  ids: Sequence[int],          # ids the shapes are drawn in
                  background: int,             # id under the shapes
                  n_shapes: int = 8,           # ellipses and rectangles, later ones on top
                  ) -> np.ndarray:
    """(H, W) uint8 label map: random ellipses and rectangles of `ids` on `background`."""
    H, W = size
    label = np.full((H, W), background, dtype=np.uint8)
    yy, xx = np.mgrid[:H, :W]
    for _ in range(n_shapes):
        c = int(rng.choice(np.asarray(ids)))
        cy, cx = rng.uniform(0, H), rng.uniform(0, W)
        ry, rx = rng.uniform(0.08, 0.35) * H + 1, rng.uniform(0.08, 0.35) * W + 1
        if rng.random() < 0.5:
            mask = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
        else:
            mask = (np.abs(yy - cy) <= ry) & (np.abs(xx - cx) <= rx)
        label[mask] = c
    return label


def stamp_ids(label: np.ndarray, ids: Sequence[int], rows: int) -> np.ndarray:
    """Write `ids` as equal-width blocks over the bottom `rows` rows of `label` (in place), so each id occurs."""
    W = label.shape[1]
    if len(ids) > W:
        raise ValueError(f"cannot stamp {len(ids)} ids into a map {W} pixels wide. Fix: make the map wider.")
    edges = np.linspace(0, W, len(ids) + 1).round().astype(int)
    for c, a, b in zip(ids, edges[:-1], edges[1:]):
        label[-rows:, a:b] = c
    return label


def paint(rng: np.random.Generator, label: np.ndarray, palette: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 picture of `label`: each id's palette colour, a per-image tint, a gradient and noise."""
    H, W = label.shape
    base = palette[label].astype(np.float32)                           # (H, W, 3)
    tint = rng.uniform(0.7, 1.1, size=3).astype(np.float32)
    ramp = np.linspace(0.85, 1.1, H, dtype=np.float32)[:, None, None]  # lighter towards the bottom
    noise = rng.normal(0, 12, size=(H, W, 3)).astype(np.float32)
    return np.clip(base * tint * ramp + 20 + noise, 0, 255).astype(np.uint8)


def _palette(colours: Sequence[Sequence[int]], n: int) -> np.ndarray:
    """(n, 3) uint8 lookup indexed by raw id: `colours` first, grey for ids beyond them."""
    out = np.full((n, 3), 128, dtype=np.uint8)
    out[: len(colours)] = np.asarray(colours, dtype=np.uint8)[:n]
    return out


def _check_n(n_per_split: int) -> None:
    if isinstance(n_per_split, bool) or not isinstance(n_per_split, int) or n_per_split < 1:
        raise ValueError(f"n_per_split={n_per_split!r}. Fix: pass an int >= 1 (pairs per split).")


def _write_atomically(out: Path, fill: Callable[[Path], None]) -> Path:
    """Run `fill(tmp)` on a fresh folder beside `out`, then rename it to `out`: a complete dataset or none."""
    out = Path(out)
    if out.exists():
        raise FileExistsError(f"{out} already exists. Fix: write the fixture into an empty folder (e.g. pytest's "
                              "tmp_path) or delete the old one.")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        fill(tmp)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def _save_jpeg(path: Path, rgb: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rgb, mode="RGB").save(path, format="JPEG", quality=90)


def _save_png(path: Path, array: np.ndarray) -> None:
    """uint8 (H, W) -> 8-bit single-channel PNG; (H, W, 3|4) -> RGB / RGBA; uint16 (H, W) -> 16-bit grey."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, format="PNG")


# ---------------------------------------------------------------------------------------------
# Datasets


def write_ade20k(root: Path,             # folder to create ADEChallengeData2016/ in
                 n_per_split: int = 3,   # pairs in training/ and in validation/
                 seed: int = 0,          # same seed, same bytes
                 ) -> Path:
    """ADE20K (ADEChallengeData2016) in its real layout; returns root/ADEChallengeData2016.

    Images: RGB JPEGs, non-square, sizes varying per file (every third one portrait). Annotations:
    8-bit single-channel PNGs with the stem of their image, raw ids 0 = unknown, 1..150 = classes;
    every map holds 0, 1 and 150 and random shapes of other ids (unknown among them).
    objectInfo150.csv is not written: our loader reads the class table shipped in smis.
    """
    _check_n(n_per_split)
    rng = np.random.default_rng([seed, 20016])
    pal = ade20k.voc_colormap(151)                                     # indexed by raw id

    def fill(out: Path) -> None:
        for split, folder, prefix in (("train", "training", "ADE_train"), ("val", "validation", "ADE_val")):
            for i in range(n_per_split):
                short = int(rng.integers(48, 97))
                long = int(short * rng.uniform(1.2, 1.6))
                H, W = (long, short) if i % 3 == 2 else (short, long)
                label = random_shapes(rng, (H, W), range(0, 151), background=int(rng.integers(1, 151)))
                stamp_ids(label, (0, 1, 150), rows=max(2, H // 8))
                stem = f"{prefix}_{i + 1:08d}"
                _save_jpeg(out / "images" / folder / f"{stem}.jpg", paint(rng, label, pal))
                _save_png(out / "annotations" / folder / f"{stem}.png", label)

    return _write_atomically(Path(root) / "ADEChallengeData2016", fill)


def write_deepfashion(root: Path,             # folder to create deepfashion/ in
                      n_per_split: int = 3,   # pairs in train/ and in test/
                      seed: int = 0,          # same seed, same bytes
                      ) -> Path:
    """DeepFashion In-shop with the paper's 16-class parsing, in the layout our loader reads; returns root/deepfashion.

    Pair i of a split: even i, a 256x256 JPEG whose photo (the middle 174 columns: 750x1101 scaled
    to height 256) is padded with white left and right, label 0 there, as in the 256x256 release;
    odd i, a non-square 128x88 (H x W) portrait photo, unpadded, that the loader pads to a square.
    Labels: 8-bit single-channel `<stem>_label.png`, 0 = background, every map holding all of 0..15
    inside the photo. color_palette.txt holds the dataset's 16 colours in its own text format.
    """
    _check_n(n_per_split)
    rng = np.random.default_rng([seed, 16])
    pal = np.asarray(deepfashion.PALETTE, dtype=np.uint8)
    views = ("front", "side", "back", "full")

    def person(size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
        """A photo-sized label (background 0, garments 1..15, every id stamped) and its picture on white."""
        label = random_shapes(rng, size, range(1, deepfashion.NUM_CLASSES), background=0, n_shapes=6)
        stamp_ids(label, range(deepfashion.NUM_CLASSES), rows=max(2, size[0] // 10))
        rgb = paint(rng, label, pal)
        rgb[label == 0] = 255                                          # studio background: white
        return label, rgb

    def fill(out: Path) -> None:
        (out / "color_palette.txt").write_text("[" + ",".join(f"[{r},{g},{b}]" for r, g, b in pal.tolist()) + "]")
        for s, split in enumerate(deepfashion.SPLITS):
            for i in range(n_per_split):
                stem = f"id_{1000 * s + i + 1:08d}_{i % 7 + 1:02d}_{i % 4 + 1}_{views[i % 4]}"
                if i % 2 == 0:
                    S = DEEPFASHION_SQUARE
                    photo_w = round(S * 750 / 1101)                    # 174
                    left = (S - photo_w) // 2                          # 41, as in the samples
                    lab, rgb = person((S, photo_w))
                    label = np.zeros((S, S), np.uint8)
                    image = np.full((S, S, 3), 255, np.uint8)
                    label[:, left:left + photo_w], image[:, left:left + photo_w] = lab, rgb
                else:
                    label, image = person(DEEPFASHION_PORTRAIT)
                _save_jpeg(out / split / f"{stem}.jpg", image)
                _save_png(out / split / f"{stem}{deepfashion.LABEL_SUFFIX}", label)

    return _write_atomically(Path(root) / "deepfashion", fill)


def write_gta5(root: Path,             # folder to create gta5/ in
               n_per_split: int = 3,   # pairs in train/ and in test/
               seed: int = 0,          # same seed, same bytes
               ) -> Path:
    """GTA-5 as post-processed for the paper, in its real layout; returns root/gta5.

    RGB256Full/{train,test}/%05d.png: 512x256 (W x H) RGB PNGs; LabelgrayFull20/{train,test}/%05d.png:
    8-bit single-channel ids 0..19 (19 = others), every map holding all 20.
    """
    _check_n(n_per_split)
    rng = np.random.default_rng([seed, 5])
    pal = _palette(gta5.PALETTE, gta5.NUM_CLASSES)

    def fill(out: Path) -> None:
        for s, split in enumerate(gta5.SPLITS):
            for i in range(n_per_split):
                label = random_shapes(rng, GTA5_SIZE, range(gta5.NUM_CLASSES), background=10, n_shapes=10)  # sky
                stamp_ids(label, range(gta5.NUM_CLASSES), rows=GTA5_SIZE[0] // 8)
                name = f"{20000 * s + i + 1:05d}.png"
                _save_png(out / "RGB256Full" / split / name, paint(rng, label, pal))
                _save_png(out / "LabelgrayFull20" / split / name, label)

    return _write_atomically(Path(root) / "gta5", fill)


def write_cityscapes(root: Path,             # folder to create cityscapes/ in
                     n_per_split: int = 3,   # pairs in train/ and in val/ (spread over two cities each)
                     seed: int = 0,          # same seed, same bytes
                     ) -> Path:
    """Cityscapes (leftImg8bit + gtFine) in its real layout at 128x64; returns root/cityscapes.

    `*_gtFine_labelIds.png`: 8-bit raw label ids, every map holding all of 0..33 (void, parking,
    guard rail, caravan, ... included: the loader maps them to "others"). Beside each, as in the
    real gtFine: `_gtFine_color.png` (RGBA), `_gtFine_instanceIds.png` (16-bit: label id, or
    label id * 1000 for the instance classes 24..33) and `_gtFine_polygons.json` (no polygons),
    which the loader must ignore.
    """
    _check_n(n_per_split)
    rng = np.random.default_rng([seed, 34])
    pal = np.zeros((cityscapes.NUM_LABEL_IDS, 3), np.uint8)           # labelId -> its train id's colour
    for label_id, train_id in cityscapes.TRAIN_IDS.items():
        pal[label_id] = gta5.CITYSCAPES_TRAIN_PALETTE[train_id]
    H, W = CITYSCAPES_SIZE

    def fill(out: Path) -> None:
        for split in cityscapes.SPLITS:
            for i in range(n_per_split):
                city = CITIES[split][i % len(CITIES[split])]
                stem = f"{city}_{i:06d}_{19 + i:06d}"
                label = random_shapes(rng, (H, W), range(cityscapes.NUM_LABEL_IDS), background=23, n_shapes=10)
                stamp_ids(label, range(cityscapes.NUM_LABEL_IDS), rows=H // 8)
                gt = out / "gtFine" / split / city
                photo = out / "leftImg8bit" / split / city / f"{stem}{cityscapes.IMAGE_SUFFIX}"
                _save_png(photo, paint(rng, label, pal))
                _save_png(gt / f"{stem}{cityscapes.LABEL_SUFFIX}", label)
                colour = np.concatenate([pal[label], np.full((H, W, 1), 255, np.uint8)], axis=-1)  # (H, W, 4)
                _save_png(gt / f"{stem}_gtFine_color.png", colour)
                instances = np.where(label >= 24, label.astype(np.uint16) * 1000, label.astype(np.uint16))
                _save_png(gt / f"{stem}_gtFine_instanceIds.png", instances)
                polygons = {"imgHeight": H, "imgWidth": W, "objects": []}
                (gt / f"{stem}_gtFine_polygons.json").write_text(json.dumps(polygons))

    return _write_atomically(Path(root) / "cityscapes", fill)


WRITERS: dict[str, Callable[..., Path]] = {   # dataset name (smis.data.DATASETS) -> writer
    "ade20k": write_ade20k,
    "deepfashion": write_deepfashion,
    "gta5": write_gta5,
    "cityscapes": write_cityscapes,
}


__all__ = ["CITIES", "WRITERS", "paint", "random_shapes", "samples_dir", "shared_dir", "stamp_ids", "write_ade20k",
           "write_cityscapes", "write_deepfashion", "write_gta5"]
