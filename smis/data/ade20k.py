"""ADE20K scene parsing (ADEChallengeData2016), as the paper uses it: 150 classes + "unknown" = 151.

Layout under `root` (ADEChallengeData2016.zip of the MIT Scene Parsing benchmark,
sceneparsing.csail.mit.edu, unpacked):
    images/{training,validation}/ADE_*.jpg
    annotations/{training,validation}/ADE_*.png   8-bit ids: 0 = unknown, 1..150 = classes

Ids are shifted to 0..149 and unknown goes to 150 (the dontcare class). The class table ships with
smis (`ade20k_classes.txt`, from the dataset's objectInfo150.csv). Paper preprocessing: train =
resize to 286x286, random 256x256 crop, random flip; validation = resize to 256x256.
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np

from smis.data.base import (DatasetError, DatasetInfo, PairedSegmentationDataset, PairTransform,
                            as_hw, files_by_stem, match_pairs, require_dirs)

NAME = "ade20k"
NUM_CLASSES = 151                    # 150 classes + unknown
DONTCARE = 150                       # where raw id 0 (unknown) goes
SPLIT_DIRS = {"train": "training", "training": "training",
              "val": "validation", "validation": "validation", "test": "validation"}
SPLITS = ("train", "val")            # the splits a full copy has (the checker scans these)
TRAIN_SPLITS = {"train", "training"}
CLASS_TABLE = Path(__file__).with_name("ade20k_classes.txt")

# raw id -> class id: 0 (unknown) -> 150, k -> k - 1
LUT = np.concatenate([[DONTCARE], np.arange(150)]).astype(np.int64)


@lru_cache(maxsize=1)
def class_names() -> tuple[str, ...]:
    """The 151 names, index = class id (the 150 of the class table, then "unknown")."""
    rows = [line.split("\t") for line in CLASS_TABLE.read_text().splitlines()
            if line and not line.startswith("#")][1:]  # skip the header row
    if [int(r[0]) for r in rows] != list(range(1, 151)):
        raise DatasetError(f"{CLASS_TABLE} must list raw ids 1..150 in order. "
                           "Fix: restore the file from the repository.")
    return tuple(r[1] for r in rows) + ("unknown",)


def voc_colormap(n: int) -> np.ndarray:
    """(n, 3) uint8: the bit-interleaved PASCAL VOC colour map that SPADE-style code draws ADE20K with."""
    ids = np.arange(n)
    rgb = np.zeros((n, 3), dtype=np.int64)
    for j in range(8):  # bit j of each channel comes from bits 3j, 3j+1, 3j+2 of the id
        for ch in range(3):
            rgb[:, ch] |= ((ids >> (3 * j + ch)) & 1) << (7 - j)
    return rgb.astype(np.uint8)


def palette() -> tuple[tuple[int, int, int], ...]:
    """Colours in raw-id order shifted like the ids: class k gets VOC colour k + 1, unknown gets black."""
    voc = voc_colormap(151)
    return tuple(tuple(int(c) for c in row) for row in voc[np.concatenate([np.arange(1, 151), [0]])])


def info(size=None) -> DatasetInfo:
    return DatasetInfo(NAME, NUM_CLASSES, class_names(), palette(), DONTCARE, as_hw(size))


def split_dir(split: str) -> str:
    """"train" / "training" -> "training"; "val" / "validation" / "test" -> "validation"."""
    if split not in SPLIT_DIRS:
        raise DatasetError(f"ADE20K has no split {split!r}. Fix: use one of {sorted(SPLIT_DIRS)}.")
    return SPLIT_DIRS[split]


def list_split(root, split: str) -> tuple[dict[str, Path], dict[str, Path], Path, Path]:
    """(images by stem, labels by stem, image folder, label folder) without pairing them yet."""
    root, d = Path(root), split_dir(split)
    image_dir, label_dir = root / "images" / d, root / "annotations" / d
    require_dirs((image_dir, label_dir), "point root at the unpacked ADEChallengeData2016 folder (it holds "
                 "images/ and annotations/).", "ADE20K")
    return files_by_stem(image_dir, label_dir)


def make_ade20k_dataset(
    root,                        # the ADEChallengeData2016 folder
    split: str = "train",        # "train"/"training" or "val"/"validation"/"test"
    train: bool | None = None,   # random crop + flip; default: a training split
    size=256,                    # output (H, W) or int
    load_size=None,              # training only: resize before the random crop; default size * 286 / 256
    flip: bool = True,           # random horizontal flip when training
) -> PairedSegmentationDataset:
    train = (split in TRAIN_SPLITS) if train is None else train
    size = as_hw(size)
    if train:
        load_size = as_hw(load_size) or (size[0] * 286 // 256, size[1] * 286 // 256)
        transform = PairTransform(load_size=load_size, crop_size=size, flip=flip, train=True)
    else:
        transform = PairTransform(load_size=size)  # validation: a plain resize
    pairs = match_pairs(*list_split(root, split))
    return PairedSegmentationDataset(pairs, info(size), transform, lut=LUT)
