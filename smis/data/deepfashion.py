"""DeepFashion In-shop with the paper's 16-class human parsing.

Layout under `root`:
    {train,test}/<stem>.jpg  +  {train,test}/<stem>_label.png   (8-bit ids 0..15, 0 = background)
    color_palette.txt        (optional) the 16 RGB colours, index = class id: [[0,0,0],[144,238,144],...]

Photos: DeepFashion In-shop Clothes Retrieval (mmlab.ie.cuhk.edu.hk/projects/DeepFashion/InShopRetrieval.html,
where the paper's repository points). The 16-class parsing maps are the ones the paper trained on; the
paper does not document their origin.

Paper preprocessing: the authors left out images without face labels when they built the split
(nothing here filters them); a non-square photo is padded with white left and right (label:
background) to a square, then resized to 256x256; `remove_padding` takes that padding off a result
for display.

Class names are not published with the data, so the classes are called "background", "class_1", ...,
"class_15". (Unofficial, from looking at a few samples: 1 looks like skin, 3 trousers, 4 top,
7 hair, 8 face, 9 dress, 10 hat; not used as names because nothing published confirms them.)
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from smis.data.base import (IMAGE_EXTENSIONS, DatasetError, DatasetInfo, PairedSegmentationDataset, PairTransform,
                            as_hw, match_pairs)

NAME = "deepfashion"
NUM_CLASSES = 16
SPLITS = ("train", "test")
LABEL_SUFFIX = "_label.png"
CLASS_NAMES = ("background",) + tuple(f"class_{i}" for i in range(1, NUM_CLASSES))
# The dataset's color_palette.txt (index = class id); shipped so masks draw the same without the file.
PALETTE = ((0, 0, 0), (144, 238, 144), (245, 222, 179), (211, 211, 211), (255, 250, 250), (220, 220, 220),
           (50, 205, 50), (255, 0, 0), (16, 78, 139), (255, 250, 205), (127, 255, 212), (255, 255, 0),
           (70, 130, 180), (255, 140, 0), (0, 100, 0), (250, 235, 215))


def read_color_palette(path) -> tuple[tuple[int, int, int], ...]:
    """Parse a color_palette.txt ("[[r,g,b],[r,g,b],...]") into NUM_CLASSES RGB triples."""
    path = Path(path)
    try:
        pal = json.loads(path.read_text())
    except Exception as e:
        raise DatasetError(f"cannot parse {path}: {e}. Fix: it must read like [[0,0,0],[144,238,144],...].") from e
    arr = np.asarray(pal)
    if arr.shape != (NUM_CLASSES, 3) or arr.min() < 0 or arr.max() > 255:
        raise DatasetError(f"{path} holds an array of shape {arr.shape}, expected {NUM_CLASSES} [r, g, b] triples in "
                           "0..255. Fix: give one colour per class id.")
    return tuple(tuple(int(c) for c in row) for row in arr)


def info(size=None, root=None) -> DatasetInfo:
    """Class table; the palette comes from `root`/color_palette.txt when there is one."""
    pal_file = Path(root) / "color_palette.txt" if root is not None else None
    pal = read_color_palette(pal_file) if pal_file is not None and pal_file.exists() else PALETTE
    return DatasetInfo(NAME, NUM_CLASSES, CLASS_NAMES, pal, None, as_hw(size))


def list_split(root, split: str) -> tuple[dict[str, Path], dict[str, Path], Path, Path]:
    """(images by stem, labels by stem, folder, folder): `<stem>.jpg` pairs with `<stem>_label.png`."""
    folder = Path(root) / split
    if not folder.is_dir():
        raise DatasetError(f"DeepFashion folder {folder} does not exist. Fix: point root at the folder that holds "
                           f"{'/ and '.join(SPLITS)}/, and use split one of {SPLITS}.")
    files = sorted(folder.iterdir())
    labels = {p.name[: -len(LABEL_SUFFIX)]: p for p in files if p.name.endswith(LABEL_SUFFIX)}
    images = {p.stem: p for p in files if p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.endswith(LABEL_SUFFIX)}
    return images, labels, folder, folder


class DeepFashionDataset(PairedSegmentationDataset):
    """Padded-to-square DeepFashion pairs; `original_size(i)` is what `remove_padding` needs."""

    def original_size(self, index: int) -> tuple[int, int]:
        """(H, W) of the photo on disk, read from the file header."""
        with Image.open(self.pairs[index][0]) as im:
            return im.size[1], im.size[0]


def make_deepfashion_dataset(
    root,                        # folder holding train/ and test/
    split: str = "train",        # "train" or "test"
    train: bool | None = None,   # random flip; default: split == "train"
    size=256,                    # output (H, W) or int
    flip: bool = True,           # random horizontal flip when training
) -> DeepFashionDataset:
    train = (split == "train") if train is None else train
    size = as_hw(size)
    transform = PairTransform(load_size=size, flip=flip, train=train, pad_square=True,
                              pad_fill=(255, 255, 255), pad_label=0)
    pairs = match_pairs(*list_split(root, split))
    return DeepFashionDataset(pairs, info(size, root), transform)


def padding_box(original_size, output_size) -> tuple[int, int, int, int]:
    """(top, bottom, left, right) in output pixels of the photo inside its padded, resized square."""
    H, W = original_size
    h, w = output_size
    S = max(H, W)
    top, left = (S - H) // 2, (S - W) // 2  # as smis.data.base.pad_to_square centres it
    return (round(top * h / S), round((top + H) * h / S), round(left * w / S), round((left + W) * w / S))


def remove_padding(x: torch.Tensor | np.ndarray, original_size, axes=(-2, -1)):
    """Crop the square-padding off a result for display.

    x: an image / label / batch whose `axes` (height axis, width axis) are the padded square, e.g.
    (3, 256, 256) or (B, 3, 256, 256) with the default axes, or (256, 256, 3) with axes=(0, 1).
    original_size: (H, W) of the photo before padding (`DeepFashionDataset.original_size`).
    """
    ha, wa = axes
    top, bottom, left, right = padding_box(original_size, (x.shape[ha], x.shape[wa]))
    index = [slice(None)] * x.ndim
    index[ha], index[wa] = slice(top, bottom), slice(left, right)
    return x[tuple(index)]
