"""The generic `folder` format: `<root>/<split>/images/*` + `<root>/<split>/labels/*.png`.

Optional `<root>/classes.json`:
    {"names": ["sky", ...], "palette": [[r, g, b], ...], "dontcare": null}
gives class names, the colours for drawing masks, and lets RGB label images be read through the
palette. Without it, `num_classes` must be passed and labels must be single-channel id PNGs.
`read_classes_json` validates the file (names, palette values, distinct colours, dontcare id) for
the loader and for `python -m smis.data.check` alike.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from smis.data.base import (DatasetError, DatasetInfo, PairedSegmentationDataset, PairTransform, as_hw,
                            default_palette, pair_files)


CLASSES_JSON_EXAMPLE = '{"names": ["sky", "tree"], "palette": [[70, 130, 180], [34, 139, 34]], "dontcare": null}'


def read_classes_json(root: Path) -> dict | None:
    """`<root>/classes.json` read and validated, or None when there is none.

    The one place the file is read: the folder loader (`folder_info`) and `python -m smis.data.check`
    both go through here. Returns {"names": tuple of C str, "palette": tuple of C (r, g, b) ints in
    0..255 or None, "dontcare": class id in 0..C-1 or None}. Anything else is a DatasetError naming
    the file, the key, the bad value and the fix; nothing is silently coerced.
    """
    path = Path(root) / "classes.json"
    if not path.exists():
        return None
    try:
        meta = json.loads(path.read_text())
    except Exception as e:
        raise DatasetError(f"cannot parse {path}: {e}. Fix: make it valid JSON like {CLASSES_JSON_EXAMPLE}.") from e
    if not isinstance(meta, dict):
        hint = ('wrap the list as {"names": [...]}' if isinstance(meta, list)
                else f"write an object like {CLASSES_JSON_EXAMPLE}")
        raise DatasetError(f"{path} holds a JSON {type(meta).__name__} ({_short(meta)}), not an object with 'names'. "
                           f"Fix: {hint}.")
    names = meta.get("names")
    if not isinstance(names, list) or not names:
        raise DatasetError(f"{path}: 'names' is {_short(names)}, not a non-empty list. Fix: add \"names\": "
                           "[one name per class id].")
    for i, n in enumerate(names):
        if not isinstance(n, str) or not n:
            raise DatasetError(f"{path}: 'names'[{i}] is {_short(n)}, not a non-empty string. Fix: give class id {i} "
                               "a name in quotes.")
    C = len(names)
    palette = _read_palette(path, meta.get("palette"), C)
    dontcare = meta.get("dontcare")
    if dontcare is not None and (not _is_int(dontcare) or not 0 <= dontcare < C):
        raise DatasetError(f"{path}: 'dontcare' is {_short(dontcare)}, not a class id in 0..{C - 1} ({C} names). "
                           "Fix: give the id of the unknown class in 'names', or null when every id is a real class.")
    return {"names": tuple(names), "palette": palette, "dontcare": dontcare}


def _read_palette(path: Path, pal, C: int) -> tuple[tuple[int, int, int], ...] | None:
    """The validated 'palette' of `path`: C distinct [r, g, b] colours of ints in 0..255, or None."""
    if pal is None:
        return None
    if not isinstance(pal, list):
        raise DatasetError(f"{path}: 'palette' is {_short(pal)}, not a list. Fix: give one [r, g, b] per class "
                           f"({C} colours), or drop 'palette' for a generated one.")
    if len(pal) != C:
        raise DatasetError(f"{path}: 'palette' must hold one [r, g, b] per class ({C} names), got {len(pal)} "
                           "entries. Fix: give one colour per name.")
    seen: dict[tuple[int, int, int], int] = {}   # colour -> first class id with it
    for i, c in enumerate(pal):
        if not isinstance(c, list) or len(c) != 3:
            raise DatasetError(f"{path}: 'palette'[{i}] (class {i}) is {_short(c)}, not [r, g, b]. Fix: give "
                               "exactly three values per colour.")
        if not all(_is_int(v) and 0 <= v <= 255 for v in c):
            raise DatasetError(f"{path}: 'palette'[{i}] (class {i}) is {_short(c)}; colour values must be integers "
                               "in 0..255. Fix: write 8-bit RGB values, e.g. [255, 0, 0].")
        colour = (c[0], c[1], c[2])
        if colour in seen:
            raise DatasetError(f"{path}: 'palette'[{i}] (class {i}) repeats the colour {list(colour)} of class "
                               f"{seen[colour]}, so an RGB label pixel of that colour has no single class. Fix: give "
                               "every class its own colour.")
        seen[colour] = i
    return tuple((c[0], c[1], c[2]) for c in pal)


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)   # JSON true/false parse as bool, a subclass of int


def _short(v, n: int = 60) -> str:
    text = json.dumps(v)
    return text if len(text) <= n else text[: n - 3] + "..."


def folder_info(root: Path, name: str = "folder", num_classes: int | None = None,
                size=None) -> tuple[DatasetInfo, bool]:
    """DatasetInfo from classes.json (or `num_classes`), and whether a real palette was given."""
    meta = read_classes_json(root)
    if meta is None:
        if num_classes is None:
            raise DatasetError(f"{root} has no classes.json and no num_classes was given. Fix: pass num_classes=... or "
                               "write classes.json with the class names.")
        names = tuple(f"class_{i}" for i in range(num_classes))
        return DatasetInfo(name, num_classes, names, default_palette(num_classes), None, as_hw(size)), False
    names = meta["names"]
    if num_classes is not None and num_classes != len(names):
        raise DatasetError(f"num_classes={num_classes} but {root / 'classes.json'} names {len(names)} classes. "
                           "Fix: drop the num_classes argument or correct classes.json.")
    has_pal = meta["palette"] is not None
    palette = meta["palette"] if has_pal else default_palette(len(names))
    return DatasetInfo(name, len(names), names, palette, meta["dontcare"], as_hw(size)), has_pal


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
        raise DatasetError(f"dataset root {root} does not exist. Fix: check the path (for SynthScenes, generate it "
                           f"with `python -m smis.data.synthetic --out {root}`).")
    train = (split == "train") if train is None else train
    info, has_pal = folder_info(root, name, num_classes, size)
    pairs = pair_files(root / split / "images", root / split / "labels")
    size, load_size = as_hw(size), as_hw(load_size)
    transform = PairTransform(load_size=load_size or size, crop_size=size if load_size else None, flip=flip,
                              train=train)
    palette = np.asarray(info.palette, dtype=np.uint8) if has_pal else None
    return PairedSegmentationDataset(pairs, info, transform, rgb_palette=palette)
