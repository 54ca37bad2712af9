"""Scan a dataset on disk before training on it: every file is opened, decoded and checked once.

Findings (`Problem.kind`): a split folder that is missing or empty, unpaired images or labels,
files that cannot be decoded, class ids out of range, image/label size mismatches, and no pair
checked at all. A folder dataset's classes.json is validated first
(`smis.data.folder.read_classes_json`). Alongside: counts per split, image sizes and the class
pixel histogram (total and per image, as arrays).

    python -m smis.data.check /data/ADEChallengeData2016 --format ade20k --workers 2 --figure hist.png

exits 0 when the dataset is clean, 1 when it has problems (the report says which files, why and the
fix), 2 when it cannot be scanned at all (no root, a broken classes.json, bad arguments such as
--max-files 0). From Python / a notebook cell:

    report = check_dataset(root, "ade20k", num_workers=2)
    print(report.to_markdown()); report.ok; report.problems; report.histogram("train")
"""
from __future__ import annotations

import argparse
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from tqdm.auto import tqdm

from smis.data import ade20k, cityscapes, deepfashion, gta5, synthetic
from smis.data.base import (DatasetError, DatasetInfo, files_by_stem, read_image, read_label_ids,
                            require_dirs)
from smis.data.folder import folder_info
from smis.utils import atomic_path, atomic_write_json
from smis.viz import colorize, grid, to_uint8

PROBLEM_KINDS = ("missing_split", "empty_split", "unpaired", "unreadable", "id_out_of_range", "size_mismatch",
                 "nothing_checked")


@dataclass(frozen=True)
class Format:
    """How to list and read one on-disk dataset format."""
    name: str                                    # format name, e.g. "ade20k"
    info: DatasetInfo                            # classes (num_classes bounds the ids)
    splits: tuple[str, ...]                      # splits a complete copy has
    list_split: Callable                         # (root, split) -> (images, labels, image_dir, label_dir)
    lut: np.ndarray | None = None                # raw id -> class id, None = ids as stored
    rgb_palette: np.ndarray | None = None        # to read RGB label images, None = id PNGs


def _list_folder_split(root, split: str):
    """The generic folder format: <root>/<split>/images/* and <root>/<split>/labels/*.png."""
    image_dir, label_dir = Path(root) / split / "images", Path(root) / split / "labels"
    require_dirs((image_dir, label_dir), "the folder format needs <root>/<split>/images and <root>/<split>/labels.")
    return files_by_stem(image_dir, label_dir)


def get_format(fmt: str, root, num_classes: int | None = None) -> Format:
    """The `Format` for `fmt` (one of FORMATS); `num_classes` is for a folder without classes.json."""
    root = Path(root)
    if fmt == "ade20k":
        return Format(fmt, ade20k.info(), ade20k.SPLITS, ade20k.list_split, ade20k.LUT)
    if fmt == "deepfashion":
        return Format(fmt, deepfashion.info(None, root), deepfashion.SPLITS, deepfashion.list_split)
    if fmt == "gta5":
        return Format(fmt, gta5.info(None), gta5.SPLITS, gta5.list_split, gta5.LUT)
    if fmt == "cityscapes":
        return Format(fmt, cityscapes.info(None), cityscapes.SPLITS, cityscapes.list_split, cityscapes.LUT)
    if fmt == "synthscenes":
        if (root / "classes.json").exists():  # read like the loader does: through the validated classes.json
            info, has_pal = folder_info(root, "synthscenes", num_classes)
            return Format(fmt, info, ("train", "test"), _list_folder_split,
                          rgb_palette=info.palette_array() if has_pal else None)
        return Format(fmt, synthetic.info(), ("train", "test"), _list_folder_split)
    if fmt == "folder":
        info, has_pal = folder_info(root, "folder", num_classes)
        splits = tuple(sorted(p.name for p in root.iterdir() if (p / "images").is_dir())) if root.is_dir() else ()
        return Format(fmt, info, splits or ("train",), _list_folder_split,
                      rgb_palette=info.palette_array() if has_pal else None)
    raise ValueError(f"unknown format {fmt!r}. Fix: use one of {FORMATS}.")


FORMATS = ("ade20k", "deepfashion", "gta5", "cityscapes", "folder", "synthscenes")


# ---------------------------------------------------------------------------------------------
# Checking one pair (runs in DataLoader workers)


class PairChecker(torch.utils.data.Dataset):
    """Item i = the findings for pair i: problems, native (H, W) and class pixel counts."""

    def __init__(self, pairs, num_classes: int, lut: np.ndarray | None = None, rgb_palette: np.ndarray | None = None):
        self.pairs, self.num_classes, self.lut, self.rgb_palette = list(pairs), num_classes, lut, rgb_palette

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, i: int) -> dict:
        ipath, lpath = self.pairs[i]
        out = {"index": i, "problems": [], "size": None, "hist": None}
        try:
            image = read_image(ipath)
            out["size"] = (image.size[1], image.size[0])
        except DatasetError as e:
            out["problems"].append(("unreadable", str(ipath), str(e)))
        try:
            raw = read_label_ids(lpath, self.rgb_palette)
        except DatasetError as e:
            out["problems"].append(("unreadable", str(lpath), str(e)))
            return out
        if out["size"] is not None and raw.shape[:2] != out["size"]:
            out["problems"].append(("size_mismatch", str(lpath), f"size mismatch: image {ipath} is "
                                    f"{out['size'][0]}x{out['size'][1]} (HxW) but label {lpath} is {raw.shape[0]}x"
                                    f"{raw.shape[1]}. Fix: regenerate the label at the image's size."))
        ids = raw
        if self.lut is not None:
            bad = np.unique(raw[(raw < 0) | (raw >= len(self.lut))])
            if len(bad):
                out["problems"].append(("id_out_of_range", str(lpath), f"label {lpath} holds raw id(s) "
                                        f"{bad[:5].tolist()} outside 0..{len(self.lut) - 1} of this format. Fix: check "
                                        "that these are the format's label files, or remove this one."))
                return out
            ids = self.lut[raw]
        bad = np.unique(ids[(ids < 0) | (ids >= self.num_classes)])
        if len(bad):
            out["problems"].append(("id_out_of_range", str(lpath),
                                    f"label {lpath} holds class id(s) {bad[:5].tolist()} outside "
                                    f"0..{self.num_classes - 1}. Fix: check the format / num_classes, or remove "
                                    "this file."))
            return out
        out["hist"] = np.bincount(ids.ravel(), minlength=self.num_classes).astype(np.int64)
        return out


def _as_list(batch: list) -> list:
    return batch


# ---------------------------------------------------------------------------------------------
# Reports


@dataclass(frozen=True)
class Problem:
    kind: str      # one of PROBLEM_KINDS
    split: str     # split it was found in
    path: str      # the file (or folder) at fault
    message: str   # what is wrong and the fix


@dataclass
class SplitReport:
    split: str
    n_images: int = 0                 # image files found
    n_labels: int = 0                 # label files found
    n_pairs: int = 0                  # images with a label
    n_checked: int = 0                # pairs opened (all unless max_files)
    # (n_checked, C) class pixel counts, rows in dataset order (zeros if unreadable)
    per_image: np.ndarray | None = None
    sizes: Counter = field(default_factory=Counter)  # (H, W) of the images -> count

    def histogram(self) -> np.ndarray:
        """(C,) pixels of each class over the checked pairs."""
        return self.per_image.sum(0)


@dataclass
class CheckReport:
    root: str
    format: str
    info: DatasetInfo
    splits: dict[str, SplitReport]
    problems: list[Problem]

    @property
    def ok(self) -> bool:
        return not self.problems

    def counts(self) -> dict[str, int]:
        """Problems per kind."""
        return dict(Counter(p.kind for p in self.problems))

    def histogram(self, split: str | None = None) -> np.ndarray:
        """(C,) class pixel counts of one split, or of all splits when None."""
        reports = [self.splits[split]] if split is not None else list(self.splits.values())
        return sum((r.histogram() for r in reports), np.zeros(self.info.num_classes, dtype=np.int64))

    def per_image_histograms(self, split: str) -> np.ndarray:
        """(N, C) class pixel counts per image, e.g. for `smis.data.gta5.rarity_weights`."""
        return self.splits[split].per_image

    def to_markdown(self, max_listed: int = 10) -> str:
        lines = [f"# Dataset check: `{self.format}` at `{self.root}`", "",
                 "**OK: no problems found.**" if self.ok else
                 f"**{len(self.problems)} problem(s)**: " + ", ".join(f"{k} {n}" for k, n in self.counts().items()), "",
                 "| split | images | labels | pairs | checked | image sizes (HxW) |", "|---|---|---|---|---|---|"]
        for r in self.splits.values():
            lines.append(f"| {r.split} | {r.n_images} | {r.n_labels} | {r.n_pairs} | {r.n_checked} "
                         f"| {_sizes(r.sizes)} |")
        for kind in PROBLEM_KINDS:
            found = [p for p in self.problems if p.kind == kind]
            if found:
                lines += ["", f"## {kind} ({len(found)})", ""]
                lines += [f"- [{p.split}] {p.message}" for p in found[:max_listed]]
                if len(found) > max_listed:
                    lines.append(f"- ... and {len(found) - max_listed} more (all in `report.problems`)")
        hist = self.histogram()
        if hist.sum() > 0:
            names, share = self.info.class_names, hist / hist.sum()
            order = np.argsort(-share, kind="stable")
            lines += ["", f"## Classes ({self.info.num_classes})", "",
                      "most pixels: " + ", ".join(f"{names[i]} {share[i]:.1%}" for i in order[:5]),
                      "",
                      "fewest pixels: " + ", ".join(f"{names[i]} {100 * share[i]:.2g}%"
                                                    for i in order[hist[order] > 0][-5:])]
            unseen = [names[i] for i in np.flatnonzero(hist == 0)]
            if unseen:
                lines += ["", f"never seen ({len(unseen)}): " + ", ".join(unseen[:30])
                          + (" ..." if len(unseen) > 30 else "")]
        return "\n".join(lines) + "\n"

    def to_dict(self) -> dict:
        return {"root": self.root, "format": self.format, "ok": self.ok, "counts": self.counts(),
                "class_names": list(self.info.class_names),
                "splits": {s: {"images": r.n_images, "labels": r.n_labels, "pairs": r.n_pairs, "checked": r.n_checked,
                               "sizes": {f"{h}x{w}": n for (h, w), n in r.sizes.most_common()},
                               "class_pixels": r.histogram().tolist()} for s, r in self.splits.items()},
                "problems": [vars(p) for p in self.problems]}

    def save_json(self, path) -> Path:
        return atomic_write_json(self.to_dict(), path)


def _sizes(sizes: Counter) -> str:
    if not sizes:
        return "-"
    common = ", ".join(f"{h}x{w} ({n})" for (h, w), n in sizes.most_common(2))
    hs, ws = [h for h, _ in sizes], [w for _, w in sizes]
    more = f"; {len(sizes)} sizes, H {min(hs)}..{max(hs)}, W {min(ws)}..{max(ws)}" if len(sizes) > 2 else ""
    return common + more


# ---------------------------------------------------------------------------------------------
# The scan


def check_dataset(
    root,                          # dataset root
    fmt: str,                      # one of FORMATS
    splits=None,                   # splits to scan; None = the format's usual ones
    num_workers: int = 0,          # DataLoader workers decoding files in parallel
    max_files: int | None = None,  # per split, open only the first N >= 1 pairs (quick look); None = all
    num_classes: int | None = None,  # folder format without classes.json
    progress: bool = True,         # tqdm bars on stderr
) -> CheckReport:
    """Scan `root` as format `fmt` and collect every finding (never stops at the first)."""
    root = Path(root)
    if max_files is not None and (isinstance(max_files, bool) or not isinstance(max_files, int) or max_files < 1):
        raise ValueError(f"max_files={max_files!r} would check no pair (or slice from the end). Fix: pass an int >= 1, "
                         "or None to check every pair.")
    if not root.is_dir():
        raise DatasetError(f"dataset root {root} does not exist or is not a folder. Fix: check the path.")
    spec = get_format(fmt, root, num_classes)
    C = spec.info.num_classes
    problems: list[Problem] = []
    reports: dict[str, SplitReport] = {}
    splits = [splits] if isinstance(splits, str) else (splits or spec.splits)
    for split in splits:
        rep = reports[split] = SplitReport(split, per_image=np.zeros((0, C), dtype=np.int64))
        try:
            images, labels, image_dir, label_dir = spec.list_split(root, split)
        except DatasetError as e:
            problems.append(Problem("missing_split", split, str(root), str(e)))
            continue
        rep.n_images, rep.n_labels = len(images), len(labels)
        if not images and not labels:
            problems.append(Problem("empty_split", split, str(image_dir),
                                    f"empty split: no images in {image_dir} and no labels in {label_dir}. "
                                    "Fix: check the dataset root and split name."))
            continue
        for key in sorted(set(images) - set(labels)):
            problems.append(Problem("unpaired", split, str(images[key]), f"image {images[key]} has no label in "
                                    f"{label_dir}. Fix: add its label or remove the image."))
        for key in sorted(set(labels) - set(images)):
            problems.append(Problem("unpaired", split, str(labels[key]), f"label {labels[key]} has no image in "
                                    f"{image_dir}. Fix: add its image or remove the label."))
        keys = sorted(set(images) & set(labels))
        rep.n_pairs = len(keys)
        pairs = [(images[k], labels[k]) for k in keys][:max_files]
        rep.n_checked = len(pairs)
        rep.per_image = np.zeros((len(pairs), C), dtype=np.int64)
        if not pairs:
            continue
        loader = torch.utils.data.DataLoader(PairChecker(pairs, C, spec.lut, spec.rgb_palette), batch_size=8,
                                             num_workers=num_workers, collate_fn=_as_list)
        with tqdm(total=len(pairs), desc=f"{fmt} {split}", disable=not progress, unit="file") as bar:
            for batch in loader:
                for item in batch:
                    problems += [Problem(kind, split, path, msg) for kind, path, msg in item["problems"]]
                    if item["size"] is not None:
                        rep.sizes[item["size"]] += 1
                    if item["hist"] is not None:
                        rep.per_image[item["index"]] = item["hist"]
                bar.update(len(batch))
    if sum(r.n_checked for r in reports.values()) == 0:   # "OK" must never mean "looked at nothing"
        problems.append(Problem("nothing_checked", ", ".join(splits), str(root), f"no image/label pair was opened in "
                                f"{root} (splits: {', '.join(splits)}; format {fmt}). Fix: point at the dataset root, "
                                "pick splits that hold pairs (--splits), or fix the findings above."))
    return CheckReport(str(root), fmt, spec.info, reports, problems)


# ---------------------------------------------------------------------------------------------
# Figures


def _save(fig, path) -> None:
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format=path.suffix.lstrip(".") or "png", dpi=110, bbox_inches="tight")


def plot_class_histogram(report: CheckReport, split: str | None = None, path=None):
    """Bar chart of each class's share of pixels (log scale); written to `path` when given."""
    import matplotlib.pyplot as plt

    hist = report.histogram(split)
    share = hist / max(hist.sum(), 1)
    C = len(share)
    fig, ax = plt.subplots(figsize=(min(2 + 0.12 * C, 22) if C > 40 else 2 + 0.3 * C, 3.2))
    ax.bar(np.arange(C), np.where(share > 0, share, np.nan), color=np.asarray(report.info.palette[:C]) / 255,
           edgecolor="0.3", linewidth=0.3)
    ax.set_yscale("log")
    step = max(1, C // 40)
    ax.set_xticks(np.arange(0, C, step), [report.info.class_names[i] for i in range(0, C, step)], rotation=90,
                  fontsize=7)
    ax.set_ylabel("share of pixels")
    ax.set_title(f"{report.format}: class pixel histogram ({split or 'all splits'})")
    fig.tight_layout()
    if path is not None:
        _save(fig, path)
    return fig


def plot_samples(dataset, n: int = 6, path=None, seed: int = 0):
    """Images over their colour-coded label maps for `n` random samples of `dataset`."""
    import matplotlib.pyplot as plt

    g = torch.Generator().manual_seed(seed)
    idx = torch.randperm(len(dataset), generator=g)[:n].tolist()
    samples = [dataset[i] for i in idx]
    H, W = samples[0]["label"].shape
    fig, axes = plt.subplots(2, len(samples), figsize=(1.2 + 2.2 * len(samples) * W / max(H, W), 4.6 * H / max(H, W)),
                             squeeze=False)
    for j, s in enumerate(samples):
        img = ((s["image"].permute(1, 2, 0) + 1) * 127.5).round().clamp(0, 255).byte().numpy()  # (H, W, 3)
        axes[0, j].imshow(img)
        axes[1, j].imshow(dataset.info.colorize(s["label"]))
        axes[0, j].set_title(Path(s["path"]).stem[-24:], fontsize=7)
    for ax in axes.ravel():
        ax.axis("off")
    fig.tight_layout()
    if path is not None:
        _save(fig, path)
    return fig


def sample_pairs(dataset,            # a smis.data dataset (sample dicts with "image" and "label")
                 n: int = 8,         # its first n samples
                 per_row: int = 2,   # image | mask pairs side by side in a row
                 seed: int = 0,      # torch's generator for a training split's random flips and crops
                 ) -> np.ndarray:
    """The first `n` samples as image | colour-coded mask pairs (the dataset's palette), `per_row` pairs a row:
    one uint8 (H', W', 3) grid (notebook 01's "Masks and images"; `smis.viz.save_png` / `show` it). A training
    split's augmentation draws from torch's global generator: it is seeded with `seed` in a fork of it, so the
    figure is the same in every run and the caller's random state is left as it was."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        pairs = [[to_uint8(s["image"]), colorize(s["label"], dataset.info.palette)]
                 for s in (dataset[i] for i in range(n))]
    return grid([sum(pairs[i:i + per_row], []) for i in range(0, n, per_row)])


# ---------------------------------------------------------------------------------------------
# Command line


def _at_least_one(text: str) -> int:
    """argparse type of --max-files: an int >= 1 (0 would check nothing and still say OK)."""
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer. Fix: give a count >= 1, or leave --max-files "
                                         "out to check every pair.") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"{n} would check no pair. Fix: give a count >= 1, or leave --max-files out "
                                         "to check every pair.")
    return n


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m smis.data.check", description=__doc__.split("\n\n")[0])
    p.add_argument("root", help="dataset root folder")
    p.add_argument("--format", required=True, choices=FORMATS, help="on-disk layout of the dataset")
    p.add_argument("--splits", nargs="+", help="splits to scan (default: the format's usual ones)")
    p.add_argument("--workers", type=int, default=0, help="DataLoader workers decoding files in parallel")
    p.add_argument("--max-files", type=_at_least_one, help="open only the first N (>= 1) pairs of each split")
    p.add_argument("--num-classes", type=int, help="class count for a folder dataset without classes.json")
    p.add_argument("--json", help="also write the report as JSON here")
    p.add_argument("--figure", help="also write the class pixel histogram figure here (.png / .pdf)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    a = p.parse_args(argv)
    try:
        report = check_dataset(a.root, a.format, a.splits, a.workers, a.max_files, a.num_classes, not a.quiet)
    except DatasetError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(report.to_markdown())
    if a.json:
        report.save_json(a.json)
    if a.figure:
        import matplotlib

        matplotlib.use("Agg")
        plot_class_histogram(report, path=a.figure)
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
