"""GTA-5 as post-processed for the paper (and cIMLE): 512x256 frames, 20 classes.

Layout under `root`:
    RGB256Full/{train,test}/*.png         512x256 (W x H) colour frames
    LabelgrayFull20/{train,test}/*.png    same stems, 8-bit ids 0..19

Classes: the 19 Cityscapes train ids in their usual order, then 19 = "others". A raw 255 (the usual
"ignore" id of train-id label files) is read as 19 too. Frames stay non-square (H, W) = (256, 512).
The pre-processed frames come from the cIMLE repository (github.com/zth667/Diverse-Image-Synthesis-
from-Semantic-Layout), made from Playing for Data (download.visinf.tu-darmstadt.de/data/from_games/).

`rarity_weights` gives per-image weights for `torch.utils.data.WeightedRandomSampler` so that frames
with rare classes are drawn more often. It is our own, simpler scheme: cIMLE (and the paper's code)
rebalance by *appearance* rarity (a density estimate of each class's mean colour), which is not
reproduced here.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from smis.data.base import (DatasetInfo, PairedSegmentationDataset, PairTransform,
                            as_hw, files_by_stem, match_pairs, require_dirs)

NAME = "gta5"
SPLITS = ("train", "test")
CITYSCAPES_TRAIN_NAMES = ("road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign",
                          "vegetation", "terrain", "sky", "person", "rider", "car", "truck", "bus", "train",
                          "motorcycle", "bicycle")
# The Cityscapes colours of those 19 train ids (cityscapesScripts labels.py), black for "others".
CITYSCAPES_TRAIN_PALETTE = ((128, 64, 128), (244, 35, 232), (70, 70, 70), (102, 102, 156), (190, 153, 153),
                            (153, 153, 153), (250, 170, 30), (220, 220, 0), (107, 142, 35), (152, 251, 152),
                            (70, 130, 180), (220, 20, 60), (255, 0, 0), (0, 0, 142), (0, 0, 70), (0, 60, 100),
                            (0, 80, 100), (0, 0, 230), (119, 11, 32))
OTHERS = 19
NUM_CLASSES = 20
CLASS_NAMES = CITYSCAPES_TRAIN_NAMES + ("others",)
PALETTE = CITYSCAPES_TRAIN_PALETTE + ((0, 0, 0),)
SIZE = (256, 512)  # (H, W)
# raw id -> class id: 0..19 as stored, 255 -> others; 20..254 stay themselves and fail the range check
LUT = np.arange(256, dtype=np.int64)
LUT[255] = OTHERS


def info(size=SIZE, name: str = NAME) -> DatasetInfo:
    return DatasetInfo(name, NUM_CLASSES, CLASS_NAMES, PALETTE, None, as_hw(size))


def list_split(root, split: str) -> tuple[dict[str, Path], dict[str, Path], Path, Path]:
    root = Path(root)
    image_dir, label_dir = root / "RGB256Full" / split, root / "LabelgrayFull20" / split
    require_dirs((image_dir, label_dir), f"point root at the folder holding RGB256Full/ and LabelgrayFull20/, "
                 f"and use split one of {SPLITS}.", "GTA-5")
    return files_by_stem(image_dir, label_dir)


def make_gta5_dataset(
    root,                        # folder holding RGB256Full/ and LabelgrayFull20/
    split: str = "train",        # "train" or "test"
    train: bool | None = None,   # random flip; default: split == "train"
    size=SIZE,                   # output (H, W); frames already at 256x512 are not resampled
    flip: bool = True,           # random horizontal flip when training
) -> PairedSegmentationDataset:
    train = (split == "train") if train is None else train
    size = as_hw(size)
    pairs = match_pairs(*list_split(root, split))
    return PairedSegmentationDataset(pairs, info(size), PairTransform(load_size=size, flip=flip, train=train), lut=LUT)


def rarity_weights(
    hist: np.ndarray | torch.Tensor,  # (N, C) pixel count of each class in each image
    alpha: float = 0.5,               # 0 = uniform sampling, 1 = fully inverse-frequency
    min_fraction: float = 1e-3,       # a class counts as present in an image from this share of its pixels
    ignore: tuple[int, ...] = (),     # class ids that never add weight (e.g. a dontcare id)
) -> torch.Tensor:
    """Per-image sampling weights that favour images holding rare classes, for WeightedRandomSampler.

    Scheme: a class is present in image i when it covers at least `min_fraction` of its pixels;
    f_c = share of images where class c is present; w_i = sum over classes present in i of f_c^-alpha,
    normalised to mean 1. An image of only common classes (f ~ 1) gets about its class count, one with
    a class present in 1% of images gains 10x that class's share at alpha = 0.5. Images with no
    counted class get the smallest weight of the others (never zero, so every image can be drawn).
    Returns (N,) float64.
    """
    h = torch.as_tensor(np.asarray(hist), dtype=torch.float64)
    if h.ndim != 2 or len(h) == 0:
        raise ValueError(f"hist must be (N, C) per-image class pixel counts with N > 0, got shape {tuple(h.shape)}")
    if alpha < 0:
        raise ValueError(f"alpha must be >= 0, got {alpha}")
    present = h >= min_fraction * h.sum(1, keepdim=True).clamp_min(1)  # (N, C)
    present &= h > 0
    if ignore:
        present[:, list(ignore)] = False
    freq = present.double().mean(0)                                     # (C,) share of images with the class
    per_class = torch.where(freq > 0, freq.clamp_min(1e-12) ** -alpha, torch.zeros_like(freq))
    w = (present.double() * per_class).sum(1)                           # (N,)
    floor = w[w > 0].min() if (w > 0).any() else torch.tensor(1.0, dtype=torch.float64)
    w = torch.where(w > 0, w, floor)
    return w / w.mean()
