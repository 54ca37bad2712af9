"""Datasets: the built-in SynthScenes, a generic folder format and the paper's real datasets.

`make_dataset(name, root, split, ...)` is the one entry point; `DATASETS` is the registry.
"""
from __future__ import annotations

from smis.data.ade20k import make_ade20k_dataset
from smis.data.base import (DatasetError, DatasetInfo, PairedSegmentationDataset, PairTransform, collate,
                            distinct_training_images)
from smis.data.cityscapes import make_cityscapes_dataset
from smis.data.deepfashion import make_deepfashion_dataset
from smis.data.folder import make_folder_dataset
from smis.data.gta5 import make_gta5_dataset
from smis.data.synthetic import SynthScenes


def make_synthscenes_dataset(root=None, split: str = "train", train: bool | None = None, size=64, length: int = 1000,
                             seed: int = 0, flip: bool = True, object_factor: bool = False, cache_mb: float = 256,
                             **folder_kwargs):
    """SynthScenes: generated on the fly when `root` is None (`object_factor`: with the object-scale
    factor; `cache_mb`: renders kept in memory, see `SynthScenes`), else read from a folder written by
    `python -m smis.data.synthetic --out ROOT`."""
    train = (split == "train") if train is None else train
    if root is None:
        return SynthScenes(size=size, length=length, split=split, seed=seed, flip=flip and train,
                           object_factor=object_factor, cache_mb=cache_mb)
    return make_folder_dataset(root, split, train=train, size=size, flip=flip, name="synthscenes", **folder_kwargs)


# name -> builder(root, split, **kwargs) returning a torch Dataset with an `.info: DatasetInfo`
DATASETS = {
    "synthscenes": make_synthscenes_dataset,
    "folder": make_folder_dataset,
    "ade20k": make_ade20k_dataset,
    "deepfashion": make_deepfashion_dataset,
    "gta5": make_gta5_dataset,
    "cityscapes": make_cityscapes_dataset,
}


def make_dataset(name: str, root=None, split: str = "train", **kwargs):
    """Build dataset `name` (see `DATASETS`) from `root` for `split`; kwargs go to its builder."""
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}. Fix: use one of {sorted(DATASETS)}.")
    return DATASETS[name](root, split, **kwargs)


__all__ = ["DATASETS", "DatasetError", "DatasetInfo", "PairTransform", "PairedSegmentationDataset", "SynthScenes",
           "collate", "distinct_training_images", "make_ade20k_dataset", "make_cityscapes_dataset", "make_dataset",
           "make_deepfashion_dataset", "make_folder_dataset", "make_gta5_dataset"]
