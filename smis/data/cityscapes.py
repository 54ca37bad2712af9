"""Cityscapes (gtFine) mapped to the 19 train ids + one "others" class, at 512x256.

Layout under `root`:
    leftImg8bit/{train,val}/<city>/<city>_<seq>_<frame>_leftImg8bit.png
    gtFine/{train,val}/<city>/<city>_<seq>_<frame>_gtFine_labelIds.png   raw label ids 0..33

The standard labelId -> trainId table (cityscapesScripts) gives 0..18; every other label id
(void, parking, rail track, guard rail, bridge, tunnel, polegroup, caravan, trailer, ...) becomes
19 = "others", so the classes match the GTA-5 set of `smis.data.gta5`.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from smis.data import gta5
from smis.data.base import (DatasetInfo, PairedSegmentationDataset, PairTransform, as_hw, match_pairs,
                            require_dirs)

NAME = "cityscapes"
SPLITS = ("train", "val")
IMAGE_SUFFIX = "_leftImg8bit.png"
LABEL_SUFFIX = "_gtFine_labelIds.png"
NUM_CLASSES = gta5.NUM_CLASSES
OTHERS = gta5.OTHERS
SIZE = (256, 512)  # (H, W): 2048x1024 frames at a quarter of their side
# labelId -> trainId for the 19 evaluated classes (cityscapesScripts labels.py); the rest -> OTHERS
TRAIN_IDS = {7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10, 24: 11, 25: 12, 26: 13,
             27: 14, 28: 15, 31: 16, 32: 17, 33: 18}
NUM_LABEL_IDS = 34  # label ids 0..33 are all a labelIds PNG may hold
LUT = np.full(NUM_LABEL_IDS, OTHERS, dtype=np.int64)
LUT[list(TRAIN_IDS)] = list(TRAIN_IDS.values())


def info(size=SIZE) -> DatasetInfo:
    return gta5.info(size, name=NAME)


def list_split(root, split: str) -> tuple[dict[str, Path], dict[str, Path], Path, Path]:
    """Images and labels keyed by "<city>/<city>_<seq>_<frame>"."""
    root = Path(root)
    image_dir, label_dir = root / "leftImg8bit" / split, root / "gtFine" / split
    require_dirs((image_dir, label_dir), f"point root at the folder holding leftImg8bit/ and gtFine/, and use "
                 f"split one of {SPLITS}.", "Cityscapes")

    def keyed(folder: Path, suffix: str) -> dict[str, Path]:
        return {f"{p.parent.name}/{p.name[: -len(suffix)]}": p for p in sorted(folder.glob(f"*/*{suffix}"))}

    return keyed(image_dir, IMAGE_SUFFIX), keyed(label_dir, LABEL_SUFFIX), image_dir, label_dir


def make_cityscapes_dataset(
    root,                        # folder holding leftImg8bit/ and gtFine/
    split: str = "train",        # "train" or "val"
    train: bool | None = None,   # random flip; default: split == "train"
    size=SIZE,                   # output (H, W)
    flip: bool = True,           # random horizontal flip when training
) -> PairedSegmentationDataset:
    train = (split == "train") if train is None else train
    size = as_hw(size)
    pairs = match_pairs(*list_split(root, split))
    return PairedSegmentationDataset(pairs, info(size), PairTransform(load_size=size, flip=flip, train=train), lut=LUT)
