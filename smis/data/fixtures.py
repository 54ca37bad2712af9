"""Tiny generated datasets in the paper's real on-disk layouts, and published-format weights.

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

`write_groupdnet_weights(folder, dataset)` does the same for GroupDNet's published files (SMIS repository).
`write_official_weights(folder, dataset)` writes `latest_net_G.pth` / `latest_net_E.pth` as the
authors published them (plain `torch.save` of the networks' state dicts, their key names and key
order, no DataParallel prefix) from randomly initialised networks, for `smis.official.load_official`.
`write_segmenter_weights(folder, dataset)` does the same for the field's mask-fidelity segmenters
(CSAIL's UperNet-ResNet101 `encoder_epoch_50.pth` / `decoder_epoch_50.pth`, fyu/drn's
`drn-d-105_ms_cityscapes.pth`) for `smis.real_segmenters`.

`shared_dir()` / `samples_dir()` locate the optional `../shared` folder (override: SMIS_SHARED_DIR,
SMIS_SAMPLES), where tests run extra checks on real files when it exists.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections import OrderedDict
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from PIL import Image

from smis.data import ade20k, cityscapes, deepfashion, gta5
from smis.utils import atomic_torch_save, project_root

# Key order of the published files where it differs from ours (see `published_order`): the generator's
# label embedding comes first, and a SPADE residual block lists its convolutions before its norms.
PUBLISHED_FIRST_KEYS = ("embedding.weight",)
PUBLISHED_BLOCK_ORDER = ("conv_0", "conv_1", "conv_s", "norm_0", "norm_1", "norm_s")
WEIGHT_FILES = ("latest_net_G.pth", "latest_net_E.pth")

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


# ---------------------------------------------------------------------------------------------
# Published-format weights


def published_order(state: "OrderedDict[str, torch.Tensor]") -> "OrderedDict[str, torch.Tensor]":
    """`state` (a `state_dict()`) with its keys in the published files' order; its `_metadata` (module
    versions, which `torch.save` stores too) is kept. The values are the same tensors.

    Published order = ours, except that PUBLISHED_FIRST_KEYS come first and, inside each SPADE residual
    block, the submodules come in PUBLISHED_BLOCK_ORDER (the authors' block registers its convolutions
    before its SPADE norms; ours registers each conv beside its norm).
    """
    keys = list(state)
    group: dict[str, int] = {}                                        # top-level module -> first position
    for i, key in enumerate(keys):
        group.setdefault(key.split(".")[0], i)

    def rank(i: int) -> tuple[int, int, int]:
        parts = keys[i].split(".")
        top = -1 if keys[i] in PUBLISHED_FIRST_KEYS else group[parts[0]]
        child = PUBLISHED_BLOCK_ORDER.index(parts[1]) if len(parts) > 2 and parts[1] in PUBLISHED_BLOCK_ORDER else 0
        return top, child, i

    out = OrderedDict((keys[i], state[keys[i]]) for i in sorted(range(len(keys)), key=rank))
    if hasattr(state, "_metadata"):
        out._metadata = state._metadata
    return out


def write_official_weights(folder: Path,        # where latest_net_G.pth and latest_net_E.pth go
                           dataset: str,        # one of smis.official.OFFICIAL_DATASETS
                           seed: int = 0,       # same seed, same weights
                           ) -> tuple[Path, Path]:
    """(generator path, encoder path): the authors' checkpoint files, with random weights.

    Randomly initialised networks of `dataset`'s preset (`build_networks("clvae", ...)`), saved as
    the published files are: plain state dicts (float32 tensors, int64 `num_batches_tracked`) with
    the published key names and order, no wrapper object, no `module.` prefix. About 0.5 GB for
    ade20k / gta5 and 2.2 GB for deepfashion.
    """
    # layering: smis.data sits below smis.networks; only this weights fixture needs them
    from smis.config import get_preset
    from smis.networks import build_networks
    from smis.official import OFFICIAL_DATASETS

    if dataset not in OFFICIAL_DATASETS:
        raise ValueError(f"dataset={dataset!r} has no published checkpoint. Fix: use one of {OFFICIAL_DATASETS}.")
    folder = Path(folder)
    paths = (folder / WEIGHT_FILES[0], folder / WEIGHT_FILES[1])
    with torch.random.fork_rng(devices=[]):                           # the caller's RNG state is left alone
        torch.manual_seed(seed)
        nets = build_networks("clvae", get_preset(dataset), discriminator=False)
    for module, path in zip((nets.G, nets.E), paths):
        state = module.state_dict()                                     # an OrderedDict, as the authors saved
        atomic_torch_save(published_order(state), path)
    return paths


def write_groupdnet_weights(folder: Path,        # where latest_net_G.pth and latest_net_E.pth go
                            dataset: str,        # one of smis.official.GROUPDNET_DATASETS
                            seed: int = 0,       # same seed, same weights
                            ) -> tuple[Path, Path]:
    """(generator path, encoder path): GroupDNet's published files (the SMIS repository), random weights.

    Randomly initialised GroupDNet of the published configuration (`smis.official.groupdnet_preset`),
    saved as their code saves it: plain state dicts with the published key names, in their modules'
    order (ours is the same), no `module.` prefix. About 0.44 GB for deepfashion, more for the others.
    """
    from smis.networks import build_networks
    from smis.official import GROUPDNET_DATASETS, groupdnet_preset

    if dataset not in GROUPDNET_DATASETS:
        raise ValueError(f"dataset={dataset!r} has no published GroupDNet. Fix: use one of {GROUPDNET_DATASETS}.")
    folder = Path(folder)
    paths = (folder / WEIGHT_FILES[0], folder / WEIGHT_FILES[1])
    with torch.random.fork_rng(devices=[]):                           # the caller's RNG state is left alone
        torch.manual_seed(seed)
        nets = build_networks("groupdnet", groupdnet_preset(dataset), discriminator=False)
    for module, path in zip((nets.G, nets.E), paths):
        atomic_torch_save(module.state_dict(), path)
    return paths


# ---------------------------------------------------------------------------------------------
# Published-format segmenter weights (smis.real_segmenters)

SYNC_BN_BUFFERS = ("_tmp_running_mean", "_tmp_running_var", "_running_iter")   # CSAIL's SynchronizedBatchNorm2d


def _with_sync_bn_buffers(state: "OrderedDict[str, torch.Tensor]") -> "OrderedDict[str, torch.Tensor]":
    """`state` with the three buffers CSAIL's SynchronizedBatchNorm2d adds after each BatchNorm's
    num_batches_tracked (its files carry them; eval mode reads none): running sums = the running statistics
    times the iteration count 1."""
    out = OrderedDict()
    for key, value in state.items():
        out[key] = value
        if key.endswith("num_batches_tracked"):
            prefix = key[: -len("num_batches_tracked")]
            out[prefix + "_tmp_running_mean"] = state[prefix + "running_mean"].clone()
            out[prefix + "_tmp_running_var"] = state[prefix + "running_var"].clone()
            out[prefix + "_running_iter"] = torch.ones(1)
    return out


def write_segmenter_weights(folder: Path,             # where the published file(s) go
                            dataset: str,             # a smis.real_segmenters.PROTOCOLS key: ade20k, cityscapes, gta5
                            seed: int = 0,            # same seed, same weights
                            classes: int | None = None,   # classifier outputs; None: the protocol's (150 / 19)
                            ) -> list[Path]:
    """The published segmenter file(s) of `dataset` with random weights (`smis.real_segmenters`):

    - ade20k: `encoder_epoch_50.pth` and `decoder_epoch_50.pth`, CSAIL's UperNet-ResNet101 as
      semantic-segmentation-pytorch saves them (plain state dicts, SynchronizedBatchNorm2d's extra buffers
      included); about 170 MB and 70 MB.
    - cityscapes, gta5: `drn-d-105_ms_cityscapes.pth`, fyu/drn's DRNSeg state dict as its 2017 file holds it
      (no num_batches_tracked, saved before torch 0.4.1 added it); about 220 MB.

    BatchNorm running statistics are drawn near (0, 1) so that the random networks give varied labels.
    `classes` other than the protocol's writes a segmenter of another dataset (for the error tests)."""
    from smis.real_segmenters import PROTOCOLS, DRND105Seg, UPerNetResNet101

    if dataset not in PROTOCOLS:
        raise ValueError(f"dataset={dataset!r} has no published segmenter. Fix: use one of {sorted(PROTOCOLS)}.")
    protocol, folder = PROTOCOLS[dataset], Path(folder)
    n = protocol.classes if classes is None else int(classes)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = UPerNetResNet101(n) if dataset == "ade20k" else DRND105Seg(n)
        for key, value in net.state_dict().items():
            if key.endswith("running_mean"):
                value.normal_(0.0, 0.1)
            elif key.endswith("running_var"):
                value.uniform_(0.5, 1.5)
    if dataset == "ade20k":
        parts = [(net.encoder, "encoder_epoch_50.pth"), (net.decoder, "decoder_epoch_50.pth")]
        return [atomic_torch_save(_with_sync_bn_buffers(m.state_dict()), folder / name) for m, name in parts]
    state = OrderedDict((k, v) for k, v in net.state_dict().items() if not k.endswith("num_batches_tracked"))
    return [atomic_torch_save(state, folder / protocol.files[0])]


__all__ = ["CITIES", "WEIGHT_FILES", "WRITERS", "paint", "published_order", "random_shapes", "samples_dir",
           "shared_dir", "stamp_ids", "write_ade20k", "write_cityscapes", "write_deepfashion", "write_groupdnet_weights",
           "write_gta5", "write_official_weights", "write_segmenter_weights"]
