"""The generic `folder` format: `<root>/<split>/images/*` + `<root>/<split>/labels/*.png`.

Optional `<root>/classes.json`:
    {"names": ["sky", ...], "palette": [[r, g, b], ...], "dontcare": null}
gives class names, the colours for drawing masks, and lets RGB label images be read through the
palette. Without it, `num_classes` must be passed and labels must be single-channel id PNGs.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from smis.data.base import (DatasetError, DatasetInfo, PairedSegmentationDataset, PairTransform, as_hw,
                            default_palette, pair_files)


def read_classes_json(root: Path) -> dict | None:
    path = Path(root) / "classes.json"
    if not path.exists():
        return None
    try:
        meta = json.loads(path.read_text())
    except Exception as e:
        raise DatasetError(f"cannot parse {path}: {e}. Fix: make it valid JSON with 'names' and optional 'palette'.") from e
    if not isinstance(meta.get("names"), list) or not meta["names"]:
        raise DatasetError(f"{path} has no 'names' list. Fix: add \"names\": [one name per class id].")
    pal = meta.get("palette")
    if pal is not None and (len(pal) != len(meta["names"]) or any(len(c) != 3 for c in pal)):
        raise DatasetError(f"{path}: 'palette' must hold one [r, g, b] per class ({len(meta['names'])}), got {len(pal)} "
                           "entries. Fix: give one colour per name.")
    return meta


def folder_info(root: Path, name: str = "folder", num_classes: int | None = None, size=None) -> tuple[DatasetInfo, bool]:
    """DatasetInfo from classes.json (or `num_classes`), and whether a real palette was given."""
    meta = read_classes_json(root)
    if meta is None:
        if num_classes is None:
            raise DatasetError(f"{root} has no classes.json and no num_classes was given. Fix: pass num_classes=... or "
                               "write classes.json with the class names.")
        names = tuple(f"class_{i}" for i in range(num_classes))
        return DatasetInfo(name, num_classes, names, default_palette(num_classes), None, as_hw(size)), False
    names = tuple(str(n) for n in meta["names"])
    if num_classes is not None and num_classes != len(names):
        raise DatasetError(f"num_classes={num_classes} but {root / 'classes.json'} names {len(names)} classes. Fix: drop "
                           "the num_classes argument or correct classes.json.")
    has_pal = meta.get("palette") is not None
    palette = tuple(tuple(int(v) for v in c) for c in meta["palette"]) if has_pal else default_palette(len(names))
    return DatasetInfo(name, len(names), names, palette, meta.get("dontcare"), as_hw(size)), has_pal


def make_folder_dataset(
    root,                        # dataset root holding <split>/images and <split>/labels
    split: str = "train",        # sub-folder name
    train: bool | None = None,   # random crop/flip; default: split == "train"
    size=None,                   # output (H, W) or int; None keeps the files' size
    load_size=None,              # resize before cropping, e.g. 286 for a random 256 crop
    flip: bool = True,           # random horizontal flip when training
    num_classes: int | None = None,  # needed when there is no classes.json
    name: str = "folder",        # name recorded in DatasetInfo
) -> PairedSegmentationDataset:
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"dataset root {root} does not exist. Fix: check the path (for SynthScenes, generate it with "
                           "`python -m smis.data.synthetic --out {root}`).")
    train = (split == "train") if train is None else train
    info, has_pal = folder_info(root, name, num_classes, size)
    pairs = pair_files(root / split / "images", root / split / "labels")
    size, load_size = as_hw(size), as_hw(load_size)
    transform = PairTransform(load_size=load_size or size, crop_size=size if load_size else None, flip=flip, train=train)
    palette = np.asarray(info.palette, dtype=np.uint8) if has_pal else None
    return PairedSegmentationDataset(pairs, info, transform, rgb_palette=palette)
