"""Shared dataset machinery: metadata, paired image/label reading, validation and transforms.

Every dataset in `smis.data` yields dicts
    {"image": (3, H, W) float in [-1, 1], "label": (H, W) long, "index": int, "path": str}
and carries a `DatasetInfo` (class count, names, palette, dontcare id).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from PIL import Image

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


class DatasetError(ValueError):
    """A dataset on disk is not what its format promises; the message names the file and the fix."""


@dataclass(frozen=True)
class DatasetInfo:
    name: str                           # registry name, e.g. "synthscenes", "ade20k"
    num_classes: int                    # C, including the dontcare class when there is one
    class_names: tuple[str, ...]        # C names, index = class id
    palette: tuple[tuple[int, int, int], ...]  # C RGB colours for drawing masks
    dontcare: int | None = None         # id of the unknown / dontcare class, None if every id is real
    size: tuple[int, int] | None = None  # (H, W) of the samples the dataset yields, None = native

    def __post_init__(self):
        if len(self.class_names) != self.num_classes:
            raise ValueError(f"{self.name}: {len(self.class_names)} class names for {self.num_classes} classes")
        if len(self.palette) < self.num_classes:
            raise ValueError(f"{self.name}: palette has {len(self.palette)} colours for {self.num_classes} classes")

    def palette_array(self) -> np.ndarray:
        return np.asarray(self.palette, dtype=np.uint8)  # (C, 3)

    def colorize(self, label: torch.Tensor | np.ndarray) -> np.ndarray:
        """(..., H, W) ids -> (..., H, W, 3) uint8 colours."""
        label = label.cpu().numpy() if isinstance(label, torch.Tensor) else np.asarray(label)
        return self.palette_array()[np.clip(label, 0, self.num_classes - 1)]


def default_palette(n: int, seed: int = 7) -> tuple[tuple[int, int, int], ...]:
    """A deterministic palette of `n` well-spread colours (golden-ratio hues)."""
    rng = np.random.default_rng(seed)
    hues = (np.arange(n) * 0.618033988749895) % 1.0
    sat = 0.55 + 0.4 * rng.random(n)
    val = 0.6 + 0.4 * rng.random(n)
    rgb = _hsv_to_rgb(hues, sat, val)
    return tuple(tuple(int(c) for c in row) for row in (rgb * 255).round().astype(np.uint8))


def _hsv_to_rgb(h: np.ndarray, s: np.ndarray, v: np.ndarray) -> np.ndarray:
    i = np.floor(h * 6).astype(int) % 6
    f = h * 6 - np.floor(h * 6)
    p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
    table = np.stack([np.stack(x, -1) for x in ((v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q))])
    return table[i, np.arange(len(h))]


# ---------------------------------------------------------------------------------------------
# Reading files


def read_image(path: Path) -> Image.Image:
    try:
        with Image.open(path) as im:
            im.load()
            return im.convert("RGB")
    except Exception as e:  # PIL raises many types
        raise DatasetError(f"cannot read image {path}: {e}. Fix: re-extract or delete this file.") from e


def read_label_ids(path: Path, palette: np.ndarray | None = None, lut: np.ndarray | None = None) -> np.ndarray:
    """A label PNG as (H, W) int64 ids.

    Single-channel (L, P, I) PNGs hold ids directly; an RGB label image needs `palette` (C, 3) to be
    mapped back to ids. `lut` (optional, indexed by raw id) remaps raw ids, e.g. ADE20K's shift.
    """
    try:
        with Image.open(path) as im:
            im.load()
            mode = im.mode
            if mode == "P":
                arr = np.asarray(im)  # palette images store the index itself
            elif mode in ("L", "I", "I;16", "I;16B", "I;16L"):
                arr = np.asarray(im).astype(np.int64)
            elif mode in ("RGB", "RGBA"):
                arr = np.asarray(im.convert("RGB"))
            else:
                raise DatasetError(f"label {path} has unsupported PNG mode {mode!r}. Fix: save labels as "
                                   "8-bit single-channel PNGs of class ids.")
    except DatasetError:
        raise
    except Exception as e:
        raise DatasetError(f"cannot read label {path}: {e}. Fix: re-extract or delete this file.") from e
    if arr.ndim == 3:
        if palette is None:
            raise DatasetError(f"label {path} is an RGB image but the dataset has no palette. Fix: save labels as "
                               "single-channel id PNGs, or give a palette (classes.json 'palette' for the folder "
                               "format).")
        arr = rgb_to_ids(arr, palette, path)
    arr = arr.astype(np.int64)
    if lut is not None:
        if arr.max(initial=0) >= len(lut) or arr.min(initial=0) < 0:
            bad = int(arr.max())
            raise DatasetError(f"label {path} has raw id {bad}, outside 0..{len(lut) - 1}. Fix: check the dataset "
                               "format or remove this file.")
        arr = lut[arr]
    return arr


def rgb_to_ids(rgb: np.ndarray, palette: np.ndarray, path: Path | str = "<array>") -> np.ndarray:
    """(H, W, 3) uint8 colours -> (H, W) ids through `palette` (C, 3); unknown colours are an error."""
    codes = (rgb[..., 0].astype(np.int64) << 16) | (rgb[..., 1].astype(np.int64) << 8) | rgb[..., 2]
    pal = np.asarray(palette, dtype=np.int64)
    pcodes = (pal[:, 0] << 16) | (pal[:, 1] << 8) | pal[:, 2]
    order = np.argsort(pcodes, kind="stable")
    sorted_codes = pcodes[order]
    pos = np.clip(np.searchsorted(sorted_codes, codes), 0, len(sorted_codes) - 1)
    ok = sorted_codes[pos] == codes
    if not ok.all():
        y, x = np.argwhere(~ok)[0]
        raise DatasetError(f"label {path} has colour {tuple(int(c) for c in rgb[y, x])} at (y={y}, x={x}) that is not "
                           "in the palette. Fix: add it to the palette or repaint the label with palette colours.")
    return order[pos]


def require_dirs(folders, fix: str, name: str = "") -> None:
    """A DatasetError naming the first of `folders` that is not a directory, and `fix`."""
    for folder in folders:
        if not Path(folder).is_dir():
            raise DatasetError(f"{name + ' ' if name else ''}folder {folder} does not exist. Fix: {fix}")


def files_by_stem(image_dir: Path, label_dir: Path) -> tuple[dict[str, Path], dict[str, Path], Path, Path]:
    """(images by stem, label PNGs by stem, image_dir, label_dir) of two flat folders, unpaired."""
    images = {p.stem: p for p in sorted(image_dir.iterdir()) if p.suffix.lower() in IMAGE_EXTENSIONS}
    labels = {p.stem: p for p in sorted(label_dir.iterdir()) if p.suffix.lower() == ".png"}
    return images, labels, image_dir, label_dir


def pair_files(image_dir: Path, label_dir: Path, label_suffix: str = ".png",
               image_stem_fn: Callable[[Path], str] | None = None,
               label_stem_fn: Callable[[Path], str] | None = None) -> list[tuple[Path, Path]]:
    """Match images and labels by stem; unpaired files or an empty split are errors naming the files."""
    require_dirs((image_dir, label_dir), "check the dataset root and split name.")
    image_stem_fn = image_stem_fn or (lambda p: p.stem)
    label_stem_fn = label_stem_fn or (lambda p: p.stem)
    images = {image_stem_fn(p): p for p in sorted(image_dir.iterdir()) if p.suffix.lower() in IMAGE_EXTENSIONS}
    labels = {label_stem_fn(p): p for p in sorted(label_dir.iterdir()) if p.name.endswith(label_suffix)}
    return match_pairs(images, labels, image_dir, label_dir)


def match_pairs(images: dict[str, Path], labels: dict[str, Path], image_dir: Path,
                label_dir: Path) -> list[tuple[Path, Path]]:
    only_img = sorted(set(images) - set(labels))
    only_lab = sorted(set(labels) - set(images))
    if only_img or only_lab:
        parts = []
        if only_img:
            parts.append(f"{len(only_img)} image(s) without a label, e.g. {images[only_img[0]]}")
        if only_lab:
            parts.append(f"{len(only_lab)} label(s) without an image, e.g. {labels[only_lab[0]]}")
        raise DatasetError("unpaired files in " + f"{image_dir} / {label_dir}: " + "; ".join(parts)
                           + ". Fix: add the missing files or remove the unpaired ones.")
    if not images:
        raise DatasetError(f"empty split: no images in {image_dir}. Fix: check the dataset root and split name.")
    return [(images[k], labels[k]) for k in sorted(images)]


# ---------------------------------------------------------------------------------------------
# Transforms (image and label together; labels always nearest-neighbour)


@dataclass(frozen=True)
class PairTransform:
    """Paired resize / pad / crop / flip, random only when `train` is True."""
    load_size: tuple[int, int] | None = None   # (H, W) to resize to first; None keeps the file's size
    crop_size: tuple[int, int] | None = None   # (H, W) crop; random when training, centre otherwise
    flip: bool = False                         # random horizontal flip (training only)
    train: bool = False                        # randomness on/off
    pad_square: bool = False                   # pad left/right to a square before resizing (DeepFashion)
    pad_fill: tuple[int, int, int] = (255, 255, 255)  # image fill colour for the padding
    pad_label: int = 0                         # label id for the padding

    @property
    def random_crops(self) -> bool:
        """Whether training draws the crop's position at random: a crop smaller than the resized image (a crop
        equal to load_size has one position; without load_size the file's own size is unknown here)."""
        return (self.train and self.crop_size is not None
                and (self.load_size is None or tuple(self.load_size) != tuple(self.crop_size)))

    def __call__(self, image: Image.Image, label: np.ndarray, generator: torch.Generator | None = None
                 ) -> tuple[torch.Tensor, torch.Tensor]:
        lab = Image.fromarray(label.astype(np.int32), mode="I")
        if self.pad_square:
            image, lab = pad_to_square(image, lab, self.pad_fill, self.pad_label)
        if self.load_size is not None:
            h, w = self.load_size
            if image.size != (w, h):
                image = image.resize((w, h), Image.BICUBIC)
                lab = lab.resize((w, h), Image.NEAREST)
        if self.crop_size is not None:
            ch, cw = self.crop_size
            W, H = image.size
            if ch > H or cw > W:
                raise DatasetError(f"crop {self.crop_size} is larger than the resized image {(H, W)}. "
                                   "Fix: raise load_size.")
            if self.train:
                top = int(torch.randint(0, H - ch + 1, (1,), generator=generator))
                left = int(torch.randint(0, W - cw + 1, (1,), generator=generator))
            else:
                top, left = (H - ch) // 2, (W - cw) // 2
            image = image.crop((left, top, left + cw, top + ch))
            lab = lab.crop((left, top, left + cw, top + ch))
        arr, lbl = np.asarray(image, dtype=np.uint8), np.asarray(lab, dtype=np.int64)  # (H, W, 3), (H, W)
        if self.flip and self.train and bool(torch.rand((), generator=generator) < 0.5):
            arr, lbl = arr[:, ::-1], lbl[:, ::-1]
        # numpy, not torch ops: torch's intra-op threads are slow on a busy CPU for such small ops
        # (benchmarks/RESULTS.md, "Measurements formerly in comments")
        img = np.ascontiguousarray(arr.transpose(2, 0, 1), dtype=np.float32)
        img /= np.float32(127.5)
        img -= np.float32(1.0)
        return torch.from_numpy(img), torch.from_numpy(np.ascontiguousarray(lbl))  # (3, H, W) in [-1, 1], (H, W) long


def pad_to_square(image: Image.Image, label: Image.Image, fill=(255, 255, 255), label_fill: int = 0):
    """Pad left and right (or top and bottom) so the picture is square, centred."""
    W, H = image.size
    if W == H:
        return image, label
    S = max(W, H)
    left, top = (S - W) // 2, (S - H) // 2
    canvas = Image.new("RGB", (S, S), tuple(fill))
    canvas.paste(image, (left, top))
    lcanvas = Image.new("I", (S, S), int(label_fill))
    lcanvas.paste(label, (left, top))
    return canvas, lcanvas


def as_hw(size: int | Sequence[int] | None) -> tuple[int, int] | None:
    """64 -> (64, 64); (H, W) stays."""
    if size is None:
        return None
    if isinstance(size, int):
        return (size, size)
    if len(size) != 2:
        raise ValueError(f"size must be an int or (H, W), got {size!r}")
    return (int(size[0]), int(size[1]))


# ---------------------------------------------------------------------------------------------
# The dataset


def distinct_training_images(dataset: torch.utils.data.Dataset,   # a training set
                             flip: bool,                          # random horizontal flips on
                             ) -> float:
    """How many distinct images a training run over `dataset` can show: its length, twice that with flips, and
    math.inf where its PairTransform crops at random positions (the real data sets at the paper's load / crop
    sizes), where images rarely repeat. Caches of per-image results size themselves by it."""
    transform = getattr(dataset, "transform", None)
    if isinstance(transform, PairTransform) and transform.random_crops:
        return math.inf
    return len(dataset) * (2 if flip else 1)


class PairedSegmentationDataset(torch.utils.data.Dataset):
    """Image + label-id pairs read from disk, validated per sample, transformed together."""

    def __init__(
        self,
        pairs: Sequence[tuple[Path, Path]],     # (image path, label path) per sample
        info: DatasetInfo,                      # classes, names, palette, dontcare
        transform: PairTransform,               # paired resize / crop / flip
        lut: np.ndarray | None = None,          # raw label id -> class id, e.g. ADE20K's shift
        rgb_palette: np.ndarray | None = None,  # (C, 3) to read RGB label images, None = id PNGs only
        check_size: bool = True,                # image and label must have the same size on disk
    ):
        if len(pairs) == 0:
            raise DatasetError(f"{info.name}: empty split (no image/label pairs). Fix: check the dataset root.")
        self.pairs = list(pairs)
        self.info = info
        self.transform = transform
        self.lut = lut
        self.rgb_palette = rgb_palette
        self.check_size = check_size

    def __len__(self) -> int:
        return len(self.pairs)

    def load_raw(self, index: int) -> tuple[Image.Image, np.ndarray]:
        """The pair as read from disk (after the id mapping), validated."""
        ipath, lpath = self.pairs[index]
        image = read_image(ipath)
        label = read_label_ids(lpath, self.rgb_palette, self.lut)
        if self.check_size and (label.shape[0], label.shape[1]) != (image.size[1], image.size[0]):
            raise DatasetError(f"size mismatch: image {ipath} is {image.size[1]}x{image.size[0]} (HxW) but label "
                               f"{lpath} is {label.shape[0]}x{label.shape[1]}. Fix: regenerate the label at the "
                               "image's size.")
        lo, hi = int(label.min(initial=0)), int(label.max(initial=0))
        if lo < 0 or hi >= self.info.num_classes:
            bad = hi if hi >= self.info.num_classes else lo
            raise DatasetError(f"label {lpath} has class id {bad}, outside 0..{self.info.num_classes - 1} for "
                               f"{self.info.name} ({self.info.num_classes} classes). Fix: check num_classes / the "
                               "label format, or remove this file.")
        return image, label

    def __getitem__(self, index: int) -> dict:
        image, label = self.load_raw(index)
        img, lbl = self.transform(image, label)
        return {"image": img, "label": lbl, "index": index, "path": str(self.pairs[index][0])}


def collate(batch: list[dict]) -> dict:
    """Default collate that keeps paths as a list."""
    out = {"image": torch.stack([b["image"] for b in batch]), "label": torch.stack([b["label"] for b in batch]),
           "index": torch.tensor([b["index"] for b in batch])}
    if "path" in batch[0]:
        out["path"] = [b["path"] for b in batch]
    return out
