"""SynthScenes: a procedural dataset whose appearance factors are known.

One mask has many correct images, which is what the method exists to learn. Per image a global
factor (time of day: a tint and a brightness) applies to the whole picture; per class present,
independently: a colour drawn from that class's own multi-modal distribution, a texture kind from
that class's own set (flat, stripes, checker, smooth noise) with its parameters, and a contrast.
Colour (low frequency) and texture (high frequency) are separate factors, so layer-wise editing
can be measured against them.

    pixel = clip(colour[c] * (1 + contrast[c] * pattern[c](x, y)) * tint * brightness, 0, 1)

Opt-in (`object_factor=True`): an object-scale factor, the shading direction. Each class region gets a
smooth brightness ramp across its whole extent, brightest on one side ("top", "bottom", "left" or "right",
drawn per class from that class's own small set, `SHADINGS`), as a further factor
shade[c](x, y) = exp(a g) / mean_region(exp(a g)) with g the pixel's position along the direction in units
of the region's spread: exactly mean-preserving over the region, so colour and texture stay readable. It is
drawn from its own random stream, so the masks and every other factor are those of the default data.
It lives at object scale: average-pooled to 16x16 / 8x8 / 4x4, a 64x64 image keeps 87 / 75 / 54 % of the
shading's log-brightness variance against 63 / 27 / 7 % of the texture's (100 test images), so the coarse
latent layers' grids can carry it.

Everything is deterministic from (seed, split, index). Generation is vectorised over pixels,
instances and classes; `render` re-creates an image exactly from its factor record.

Command line:  python -m smis.data.synthetic --out data/synthscenes --train 2000 --test 200 --size 128
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image

from smis.data.base import DatasetError, DatasetInfo, as_hw
from smis.progress import Progress
from smis.viz import colorize, grid

TEXTURES = ("flat", "stripes", "checker", "noise")
SHAPES = ("disc", "ring", "box", "diamond", "triangle")  # shape formulas used by "thing" classes
SPLIT_IDS = {"train": 0, "test": 1, "val": 2}
FORMAT_VERSION = 1


@dataclass(frozen=True)
class ClassSpec:
    name: str                                         # class name
    kind: str                                         # "stuff" (large regions) or "thing" (objects)
    colour_modes: tuple[tuple[float, float, float], ...]  # RGB means in [0, 1] of the colour modes
    textures: tuple[str, ...]                         # texture kinds this class can take
    shape: str | None = None                          # thing shape formula (SHAPES), None for stuff
    aspect: tuple[float, float] = (1.0, 1.0)          # thing half-extent multipliers (x, y)


CLASSES: tuple[ClassSpec, ...] = (
    ClassSpec("sky", "stuff", ((0.45, 0.65, 0.92), (0.92, 0.55, 0.30), (0.62, 0.62, 0.66)), ("flat", "noise")),
    ClassSpec("ground", "stuff", ((0.30, 0.58, 0.22), (0.80, 0.68, 0.42)), ("noise", "stripes", "flat")),
    ClassSpec("water", "stuff", ((0.12, 0.30, 0.62), (0.10, 0.52, 0.44)), ("stripes", "noise")),
    ClassSpec("wall", "stuff", ((0.68, 0.28, 0.22), (0.86, 0.84, 0.78), (0.40, 0.40, 0.46)),
              ("checker", "flat", "stripes")),
    ClassSpec("disc", "thing", ((0.88, 0.18, 0.18), (0.92, 0.82, 0.18)), ("flat", "stripes", "checker"), "disc"),
    ClassSpec("box", "thing", ((0.80, 0.30, 0.15), (0.18, 0.28, 0.82)), ("checker", "stripes", "flat"), "box",
              (1.0, 0.75)),
    ClassSpec("triangle", "thing", ((0.18, 0.72, 0.30), (0.58, 0.22, 0.72)), ("flat", "noise", "stripes"), "triangle"),
    ClassSpec("pole", "thing", ((0.16, 0.16, 0.16), (0.90, 0.90, 0.90)), ("flat", "stripes"), "box", (0.16, 1.6)),
    ClassSpec("ring", "thing", ((0.18, 0.78, 0.82), (0.82, 0.18, 0.62)), ("flat", "checker"), "ring"),
    ClassSpec("diamond", "thing", ((0.96, 0.55, 0.08), (0.10, 0.14, 0.46)), ("stripes", "noise", "checker"), "diamond"),
)
NUM_CLASSES = len(CLASSES)
STUFF_IDS = np.array([i for i, c in enumerate(CLASSES) if c.kind == "stuff"])
THING_IDS = np.array([i for i, c in enumerate(CLASSES) if c.kind == "thing"])
# Palette for drawing masks (not the appearance colours).
PALETTE = ((70, 130, 230), (60, 160, 60), (30, 60, 160), (150, 110, 90), (230, 40, 40),
           (240, 170, 30), (120, 220, 120), (90, 90, 90), (220, 80, 220), (250, 250, 100))

# Factor ranges.
MIN_CLASSES, MAX_CLASSES = 4, 8
CONTRAST = (0.18, 0.40)            # texture contrast
FREQ = (3.0, 8.0)                  # stripes: cycles across the short image side
CELL = (1 / 10, 1 / 5)             # checker cell, fraction of the short side
NOISE_GRID = (6, 10)               # noise: grid cells across the short side
NOISE_CELLS = 8 * NOISE_GRID[1] + 2  # noise grid cells stored per class: covers the long side of an 8:1 image
BRIGHTNESS = (0.70, 1.08)
WARM, COOL = np.array([1.10, 0.97, 0.82]), np.array([0.86, 0.96, 1.12])
COLOUR_JITTER = 0.035
# Object-scale factor (opt-in): shading direction, brightest side of the region; (x, y) unit vectors, y down.
SHADE_DIRS = {"top": (0.0, -1.0), "bottom": (0.0, 1.0), "left": (-1.0, 0.0), "right": (1.0, 0.0)}
SHADINGS = {"sky": ("top", "bottom"), "ground": ("left", "right"), "water": ("left", "right"),
            "wall": ("top", "left", "right"), "disc": ("top", "bottom", "left", "right"), "box": ("top", "left"),
            "triangle": ("bottom", "right"), "pole": ("top", "bottom"), "ring": ("left", "right", "top"),
            "diamond": ("top", "bottom")}
SHADE_AMPLITUDE = 0.35             # a: log-brightness slope per unit spread (~0.67x .. 1.5x across a region)


def info(size=None) -> DatasetInfo:
    return DatasetInfo("synthscenes", NUM_CLASSES, tuple(c.name for c in CLASSES), PALETTE, None, as_hw(size))


def tint(t: float) -> np.ndarray:
    """The RGB tint (3,) of time of day t in [0, 1]: warm (dawn / dusk) at 0, neutral at 0.5, cool at 1.
    Public: `smis.factors` fits colour modes under every tint."""
    w = np.clip(1 - 2 * t, 0, 1)
    c = np.clip(2 * t - 1, 0, 1)
    return (1 - w - c) * np.ones(3) + w * WARM + c * COOL


# ---------------------------------------------------------------------------------------------
# Layout: which class is where


def _layout(rng: np.random.Generator, H: int, W: int) -> tuple[np.ndarray, list[dict], list[int]]:
    """Stuff bands plus occluding thing instances. Returns label (H, W), instance records, chosen classes."""
    S = min(H, W)
    k = int(rng.integers(MIN_CLASSES, MAX_CLASSES + 1))
    n_stuff = int(rng.integers(max(1, k - len(THING_IDS)), min(len(STUFF_IDS), k - 1) + 1))
    stuff = rng.permutation(STUFF_IDS)[:n_stuff]
    stuff = np.concatenate([stuff[stuff == 0], stuff[stuff != 0]])  # the sky, when present, is on top
    things = rng.permutation(THING_IDS)[: k - n_stuff]

    y = (np.arange(H, dtype=np.float32)[:, None] + 0.5) / H  # (H, 1) in (0, 1)
    x = (np.arange(W, dtype=np.float32)[None, :] + 0.5) / W  # (1, W)
    # n_stuff - 1 wavy horizontal boundaries, at least 0.14 apart
    nb = n_stuff - 1
    gaps = rng.dirichlet(np.ones(nb + 1)) * (1 - 0.14 * (nb + 1)) + 0.14
    cuts = np.cumsum(gaps)[:nb]                                   # (nb,)
    amp = rng.uniform(0.0, 0.035, nb)[:, None, None]
    freq = rng.uniform(0.5, 2.5, nb)[:, None, None]
    phase = rng.uniform(0, 2 * np.pi, nb)[:, None, None]
    bounds = cuts[:, None, None] + amp * np.sin(2 * np.pi * freq * x[None] + phase)  # (nb, 1, W)
    band = (y[None] > bounds).sum(0)                              # (H, W) band index
    label = stuff[band].astype(np.int64)

    # Things: 1-2 instances per class, painted in random order (later ones occlude earlier ones).
    counts = rng.integers(1, 3, len(things))
    inst_cls = rng.permutation(np.repeat(things, counts))
    label, instances = _paint(rng, label, inst_cls, H, W, S, [])
    for _ in range(6):  # re-paint (on top) any thing class that occlusion made (nearly) vanish
        px = np.bincount(label.ravel(), minlength=NUM_CLASSES)
        missing = [c for c in things if px[c] < _min_pixels(H, W)]
        if not missing:
            break
        label, instances = _paint(rng, label, np.array(missing), H, W, S, instances, big=True)
    return label, instances, sorted(int(c) for c in np.concatenate([stuff, things]))


@lru_cache(maxsize=8)
def _grid(H: int, W: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates (H, W) float32, y and x; read-only and cached per size."""
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float32) + 0.5
    yy.flags.writeable = xx.flags.writeable = False
    return yy, xx


def _min_pixels(H: int, W: int) -> int:
    return max(16, int(0.004 * H * W))


def _paint(rng, label, inst_cls, H, W, S, instances, big=False):
    """Draw instances of `inst_cls` over `label`, all at once: the last instance covering a pixel wins."""
    n = len(inst_cls)
    if n == 0:
        return label, instances
    cx = rng.uniform(0.12, 0.88, n) * W
    cy = rng.uniform(0.18, 0.88, n) * H
    r = rng.uniform(0.13, 0.2, n) * S if big else rng.uniform(0.08, 0.19, n) * S
    rot = rng.uniform(0, np.pi, n)
    f32 = lambda a: np.asarray(a, dtype=np.float32)[:, None, None]  # (n, 1, 1)
    spec_aspect = np.array([CLASSES[c].aspect for c in inst_cls], dtype=np.float32)  # (n, 2)
    shape_id = np.array([SHAPES.index(CLASSES[c].shape) for c in inst_cls])      # (n,)
    rot = np.where(np.isin(inst_cls, [7]), rng.uniform(-0.15, 0.15, n), rot)      # poles stand upright
    yy, xx = _grid(H, W)
    dx = (xx[None] - f32(cx)) / f32(r)                                           # (n, H, W)
    dy = (yy[None] - f32(cy)) / f32(r)
    c, s = f32(np.cos(rot)), f32(np.sin(rot))
    u = (c * dx + s * dy) / spec_aspect[:, 0, None, None]
    v = (-s * dx + c * dy) / spec_aspect[:, 1, None, None]
    d2 = u * u + v * v
    inside = np.select(
        [shape_id[:, None, None] == i for i in range(len(SHAPES))],
        [d2 < 1, (d2 < 1) & (d2 > 0.3), np.maximum(np.abs(u), np.abs(v)) < 1, np.abs(u) + np.abs(v) < 1.2,
         (v < 0.75) & (np.abs(u) * 1.6 < v + 1.0)],
    )                                                                             # (n, H, W)
    top = np.where(inside, np.arange(1, n + 1, dtype=np.int16)[:, None, None], 0).max(0)  # (H, W), 0 = none
    label = np.where(top > 0, inst_cls[np.maximum(top - 1, 0)], label)
    instances = instances + [dict(cls=int(k), shape=SHAPES[i], cx=float(a), cy=float(b), r=float(q), rot=float(o))
                             for k, i, a, b, q, o in zip(inst_cls, shape_id, cx, cy, r, rot)]
    return label, instances


# ---------------------------------------------------------------------------------------------
# Appearance factors and rendering


def sample_factors(rng: np.random.Generator, classes: list[int], H: int, W: int) -> dict:
    """Global and per-class appearance factors for the classes present (the image's factor record)."""
    t = float(rng.uniform(0, 1))
    rec = {"global": {"time_of_day": t, "tint": [float(v) for v in tint(t)],
                      "brightness": float(rng.uniform(*BRIGHTNESS))},
           "noise_seed": int(rng.integers(0, 2**31 - 1)), "classes": {}}
    for c in classes:
        spec = CLASSES[c]
        mode = int(rng.integers(len(spec.colour_modes)))
        colour = np.clip(np.array(spec.colour_modes[mode]) + rng.normal(0, COLOUR_JITTER, 3), 0.03, 0.97)
        tex = spec.textures[int(rng.integers(len(spec.textures)))]
        rec["classes"][str(c)] = {
            "name": spec.name, "colour_mode": mode, "colour": [float(v) for v in colour], "texture": tex,
            "contrast": float(rng.uniform(*CONTRAST)), "angle": float(rng.uniform(0, np.pi)),
            "frequency": float(rng.uniform(*FREQ)), "phase": float(rng.uniform(0, 2 * np.pi)),
            "cell": float(rng.uniform(*CELL)), "noise_grid": int(rng.integers(NOISE_GRID[0], NOISE_GRID[1] + 1)),
        }
    return rec


def sample_shading(rng: np.random.Generator, classes: list[int]) -> dict[int, str]:
    """The object-scale factor: per class present, a shading direction from that class's set (SHADINGS)."""
    return {int(c): SHADINGS[CLASSES[c].name][int(rng.integers(len(SHADINGS[CLASSES[c].name])))] for c in classes}


def _shade(k: np.ndarray,          # (H, W) int: each pixel's row into the record's class tables
           dirs: np.ndarray,       # (K, 2) float: per class row, the shading direction (x, y), y down
           amplitude: float,       # a: log-brightness slope per unit of the region's spread
           ) -> np.ndarray:
    """(H, W) float32 brightness factor of the object-scale shading: per class region, exp(a g) divided by
    its region mean, g = the pixel's offset along the direction from the region's centroid over sqrt(3) x the
    region's standard deviation along it (so g spans about [-1, 1]). Vectorised over classes with bincount."""
    yy, xx = _grid(*k.shape)
    K = len(dirs)
    p = (xx * dirs[k, 0] + yy * dirs[k, 1]).astype(np.float64).ravel()          # (H*W,) position along direction
    kk = k.ravel()
    n = np.maximum(np.bincount(kk, minlength=K), 1)                               # (K,)
    mean = np.bincount(kk, p, K) / n
    std = np.sqrt(np.maximum(np.bincount(kk, p * p, K) / n - mean ** 2, 0.0))
    g = (p - mean[kk]) / np.maximum(np.sqrt(3.0) * std[kk], 0.5)                  # (H*W,) about [-1, 1]
    e = np.exp(amplitude * g)
    return (e / (np.bincount(kk, e, K) / n)[kk]).reshape(k.shape).astype(np.float32)


def render(label: np.ndarray, record: dict) -> np.ndarray:
    """(H, W) label + factor record -> (H, W, 3) uint8 image. Vectorised over pixels and classes.
    With the object-scale factor (a "shading" entry per class) the region's shading multiplies it."""
    H, W = label.shape
    S = min(H, W)
    ids = np.array(sorted(int(k) for k in record["classes"]), dtype=np.int64)
    if np.bincount(label.ravel(), minlength=NUM_CLASSES)[np.setdiff1d(np.arange(NUM_CLASSES), ids)].any():
        raise ValueError("the factor record lacks classes that appear in the label map")
    cls = [record["classes"][str(k)] for k in ids]
    table = lambda key: np.array([c[key] for c in cls], dtype=np.float32)  # (K,) or (K, 3)
    lut = np.zeros(NUM_CLASSES, dtype=np.int64)
    lut[ids] = np.arange(len(ids))
    k = lut[label]                                                          # (H, W) row into the tables
    kind = np.array([TEXTURES.index(c["texture"]) for c in cls])[k]         # (H, W)
    yy, xx = _grid(H, W)
    pattern = np.zeros((H, W), np.float32)                                  # flat: 0
    m = kind == 1                                                           # stripes
    ang, freq, phase = table("angle")[k[m]], table("frequency")[k[m]], table("phase")[k[m]]
    pattern[m] = np.sin(2 * np.pi * freq * (xx[m] * np.cos(ang) + yy[m] * np.sin(ang)) / S + phase)
    m = kind == 2                                                           # checker
    cell = table("cell")[k[m]] * S
    pattern[m] = np.sign(np.sin(np.pi * xx[m] / cell + 1e-3) * np.sin(np.pi * yy[m] / cell + 1e-3))
    m = kind == 3                                                           # smooth noise
    pattern[m] = _noise(record["noise_seed"], table("noise_grid")[k[m]], ids[k[m]], xx[m] / S, yy[m] / S)
    colour = table("colour")[k]                                             # (H, W, 3)
    g = record["global"]
    img = (colour * (1 + table("contrast")[k] * pattern)[..., None]
           * (np.asarray(g["tint"], np.float32) * np.float32(g["brightness"])))
    if "shading" in cls[0]:                                                 # object-scale factor (opt-in)
        dirs = np.array([SHADE_DIRS[c["shading"]] for c in cls], dtype=np.float32)  # (K, 2)
        img = img * _shade(k, dirs, record["shading_amplitude"])[..., None]
    return (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8)


def _noise(seed: int, grid: np.ndarray, cls: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Smooth value noise in [-1, 1]: bilinear interpolation of a per-class random grid."""
    values = (np.random.default_rng(seed)
              .uniform(-1, 1, (NUM_CLASSES, NOISE_CELLS + 1, NOISE_CELLS + 1)).astype(np.float32))
    gx, gy = x * grid, y * grid                      # grid coordinates
    x0, y0 = np.floor(gx).astype(np.int64), np.floor(gy).astype(np.int64)
    fx, fy = gx - x0, gy - y0
    fx, fy = fx * fx * (3 - 2 * fx), fy * fy * (3 - 2 * fy)  # smoothstep
    x0, y0 = np.clip(x0, 0, NOISE_CELLS - 1), np.clip(y0, 0, NOISE_CELLS - 1)
    v = lambda a, b: values[cls, b, a]
    top = v(x0, y0) * (1 - fx) + v(x0 + 1, y0) * fx
    bot = v(x0, y0 + 1) * (1 - fx) + v(x0 + 1, y0 + 1) * fx
    n = top * (1 - fy) + bot * fy
    return np.clip(n * 1.6, -1, 1)


def _check_size(H: int, W: int):
    if not (64 <= H <= 512 and 64 <= W <= 512):
        raise ValueError(f"SynthScenes size must be between 64 and 512 on each side, got (H, W) = {(H, W)}. "
                         "Fix: pick a size in 64..512, e.g. size=128 or size=(128, 256).")


def generate(index: int, size=128, seed: int = 0, split: str = "train", object_factor: bool = False
             ) -> tuple[np.ndarray, np.ndarray, dict]:
    """Image (H, W, 3) uint8, label (H, W) int64 and factor record of sample `index`; deterministic.
    `object_factor`: add the object-scale shading factor, drawn from its own stream (same masks and other
    factors as without it)."""
    H, W = as_hw(size)
    _check_size(H, W)
    if split not in SPLIT_IDS:
        raise ValueError(f"unknown split {split!r}; SynthScenes has {sorted(SPLIT_IDS)}")
    rng = np.random.default_rng([seed, SPLIT_IDS[split], index])
    for _ in range(20):  # rejection: every image shows 4 to 8 classes, each at least a few pixels
        label, instances, classes = _layout(rng, H, W)
        px = np.bincount(label.ravel(), minlength=NUM_CLASSES)
        present = np.flatnonzero(px >= _min_pixels(H, W))
        if set(present) == set(classes) and MIN_CLASSES <= len(present) <= MAX_CLASSES:
            break
    else:
        raise RuntimeError(f"SynthScenes could not lay out image {index} at {H}x{W}")
    record = sample_factors(rng, classes, H, W)
    for c in classes:
        record["classes"][str(c)]["pixels"] = int(px[c])
    record.update(index=int(index), seed=int(seed), split=split, size=[H, W], instances=instances)
    if object_factor:
        shading = sample_shading(np.random.default_rng([seed, SPLIT_IDS[split], index, 1]), classes)
        for c in classes:
            record["classes"][str(c)]["shading"] = shading[c]
        record["shading_amplitude"] = SHADE_AMPLITUDE
    return render(label, record), label, record


def factor_draws(index: int = 0,       # the training image whose mask is drawn
                 size=128,             # image side (or (H, W))
                 seed: int = 0,        # dataset seed
                 n: int = 5,           # other draws of the appearance factors
                 draw_seed: int = 1,   # seed of those draws
                 ) -> np.ndarray:
    """One mask, many images: the colour-coded mask of training image `index`, its dataset image, then the same
    layout rendered with `n` other draws of the appearance factors (`sample_factors`, one generator seeded
    `draw_seed`). One uint8 (H', W', 3) grid row (notebook 01's "One mask, many images")."""
    image, label, record = generate(index, size, seed, "train")
    rng = np.random.default_rng(draw_seed)
    classes = sorted(int(k) for k in record["classes"])
    H, W = label.shape
    variants = [render(label, sample_factors(rng, classes, H, W)) for _ in range(n)]
    return grid([[colorize(label, PALETTE), image] + variants])


def synthscenes_arrays(split: str = "train",         # "train", "test" or "val"
                       size: int | Sequence[int] = 64,  # S or (H, W)
                       length: int = 4000,            # images 0..length-1 of the split
                       seed: int = 0,                 # dataset seed
                       progress: bool = True,         # progress bar
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """SynthScenes images (N, 3, H, W) uint8 and labels (N, H, W) uint8, generated in memory (the
    pixels `make_dataset("synthscenes", None, split, size=..., seed=...)` yields, before its [-1, 1]
    scaling: x / 127.5 - 1). uint8 keeps 4000 64x64 images at 65 MB."""
    if int(length) < 1:
        raise ValueError(f"length={length}: ask for at least one image")
    hw = as_hw(size)
    images = torch.empty(length, 3, *hw, dtype=torch.uint8)
    labels = torch.empty(length, *hw, dtype=torch.uint8)
    for i in Progress(range(length), desc=f"SynthScenes {split} {hw[0]}x{hw[1]}", disable=not progress, leave=False):
        img, lab, _ = generate(i, hw, seed, split)                       # per-image generator (numpy, vectorised)
        images[i] = torch.from_numpy(img).permute(2, 0, 1)
        labels[i] = torch.from_numpy(lab.astype(np.uint8))
    return images, labels


# ---------------------------------------------------------------------------------------------
# Factor estimation from pixels (used by tests and by the factor-aware scores, smis.factors)


def estimate_factors(image: np.ndarray,              # (H, W, 3) uint8, or float in [0, 1]
                     label: np.ndarray,              # (H, W) int class ids
                     global_factors: dict | None = None,  # the record's "global" (tint, brightness), if known
                     min_pixels: int = 48,           # smallest interior region estimated
                     object_factor: bool = False,    # also read the object-scale shading (and detrend it)
                     ) -> dict[int, dict]:
    """Per class region: the nearest colour mode and the texture kind, estimated from pixels alone.

    `image` (H, W, 3) uint8 or float in [0, 1]. With `global_factors` (tint, brightness) known the
    global factor is divided out; without it, colours are compared by chromaticity and the texture
    statistics (being ratios) are unaffected. With `object_factor` a plane is fitted to each region's
    log-luminance (least squares over interior pixels): its slope gives the shading direction ("shading",
    the class's allowed direction the slope points to most) and it is divided out before the texture
    statistics. Vectorised over classes with bincount.
    """
    img = image.astype(np.float64) / 255.0 if image.dtype == np.uint8 else image.astype(np.float64)
    clipped = ((img >= 254 / 255) | (img <= 1 / 255)).any(-1).ravel()    # (H*W,) a channel at 0 or 1
    if global_factors is not None:
        img = img / (np.asarray(global_factors["tint"]) * global_factors["brightness"])
    H, W = label.shape
    # interior pixels: the label equals its 4 neighbours, so boundary mixing does not count
    pad = np.pad(label, 1, mode="edge")
    interior = ((pad[1:-1, 1:-1] == pad[:-2, 1:-1]) & (pad[1:-1, 1:-1] == pad[2:, 1:-1])
                & (pad[1:-1, 1:-1] == pad[1:-1, :-2]) & (pad[1:-1, 1:-1] == pad[1:-1, 2:]))
    lab = np.where(interior, label, NUM_CLASSES).ravel()  # NUM_CLASSES = "ignore" bin
    cnt = np.bincount(lab, minlength=NUM_CLASSES + 1)[:NUM_CLASSES]
    safe = np.maximum(cnt, 1)
    mean = np.stack([np.bincount(lab, img[..., ch].ravel(), NUM_CLASSES + 1)[:NUM_CLASSES] for ch in range(3)],
                    -1) / safe[:, None]
    lum = img.mean(-1)
    if object_factor:
        # the shading's ramp pushes bright / dark regions into clipping, which bends it: the texture statistics
        # and the fit use the unclipped interior pixels (the colour mean above keeps them all)
        slope = _shading_slope(lum, lab, safe)          # from every interior pixel: the direction
        lab = np.where(clipped, NUM_CLASSES, lab)
        safe = np.maximum(np.bincount(lab, minlength=NUM_CLASSES + 1)[:NUM_CLASSES], 1)
        lum = _remove_ramp(lum, label, lab, safe)
        mlum = np.bincount(lab, lum.ravel(), NUM_CLASSES + 1)[:NUM_CLASSES] / safe
    else:
        mlum = mean.mean(-1)
    r = (lum / np.maximum(mlum, 1e-3)[np.minimum(label, NUM_CLASSES - 1)] - 1).ravel()  # relative intensity
    s1 = np.bincount(lab, r, NUM_CLASSES + 1)[:NUM_CLASSES] / safe
    s2 = np.bincount(lab, r * r, NUM_CLASSES + 1)[:NUM_CLASSES] / safe
    std = np.sqrt(np.maximum(s2 - s1 ** 2, 0))
    # two-level-ness: variance left within the above-mean and below-mean groups (~0 for a checker)
    hi = r > s1[np.minimum(lab, NUM_CLASSES - 1)]
    grp = np.where(lab < NUM_CLASSES, lab * 2 + hi, 2 * NUM_CLASSES)
    gn = np.maximum(np.bincount(grp, minlength=2 * NUM_CLASSES + 1), 1)
    gm = np.bincount(grp, r, 2 * NUM_CLASSES + 1) / gn
    within = (np.bincount(grp, (r - gm[grp]) ** 2, 2 * NUM_CLASSES + 1)[:2 * NUM_CLASSES]
              .reshape(NUM_CLASSES, 2).sum(1) / safe)
    bimodal = within / np.maximum(std ** 2, 1e-12)
    # structure tensor over interior pixels (central differences stay inside the region)
    R = r.reshape(H, W)
    gy, gx = np.gradient(R)
    jxx = np.bincount(lab, (gx * gx).ravel(), NUM_CLASSES + 1)[:NUM_CLASSES]
    jyy = np.bincount(lab, (gy * gy).ravel(), NUM_CLASSES + 1)[:NUM_CLASSES]
    jxy = np.bincount(lab, (gx * gy).ravel(), NUM_CLASSES + 1)[:NUM_CLASSES]
    coherence = np.sqrt((jxx - jyy) ** 2 + 4 * jxy ** 2) / np.maximum(jxx + jyy, 1e-12)
    texture = np.where(std < 0.035, 0, np.where(bimodal < 0.08, 2, np.where(coherence > 0.9, 1, 3)))
    out = {}
    for c in np.flatnonzero(cnt >= min_pixels):  # assembling the result dict (not a hot path)
        modes = np.asarray(CLASSES[c].colour_modes)
        if global_factors is not None:
            dist = np.linalg.norm(modes - mean[c], axis=1)
        else:
            chroma = lambda v: v / np.maximum(v.sum(-1, keepdims=True), 1e-6)
            dist = (np.linalg.norm(chroma(modes) - chroma(mean[c]), axis=-1)
                    + 0.2 * np.abs(modes.mean(-1) - mean[c].mean()))
        out[int(c)] = {"colour_mode": int(dist.argmin()), "colour": mean[c].tolist(), "texture": TEXTURES[texture[c]],
                       "contrast": float(std[c]), "coherence": float(coherence[c]), "pixels": int(cnt[c])}
        if object_factor:
            allowed = SHADINGS[CLASSES[c].name]
            score = np.asarray([SHADE_DIRS[d] for d in allowed]) @ slope[c]
            out[int(c)].update(shading=allowed[int(score.argmax())], shading_slope=slope[c].tolist())
    return out


def _class_median(v: np.ndarray,     # (H*W,) values
                  lab: np.ndarray,   # (H*W,) class id of interior pixels, NUM_CLASSES elsewhere
                  cnt: np.ndarray,   # (NUM_CLASSES,) interior pixel counts
                  ) -> np.ndarray:
    """(NUM_CLASSES,) lower median of `v` over each class's interior pixels (0 where a class has none);
    one sort for every class."""
    order = np.lexsort((v, lab))
    start = np.concatenate([[0], np.cumsum(cnt)[:-1]])
    return np.where(cnt > 0, v[order][start + np.maximum(cnt - 1, 0) // 2], 0.0)


def _shading_slope(lum: np.ndarray,    # (H, W) luminance
                   lab: np.ndarray,    # (H*W,) class id of the pixels to fit, NUM_CLASSES elsewhere
                   safe: np.ndarray,   # (NUM_CLASSES,) their counts, at least 1
                   ) -> np.ndarray:
    """(NUM_CLASSES, 2) slope of the least-squares plane of each region's log-luminance, in log-brightness per
    pixel along (x, y): the object-scale shading's direction (Eq.: log lum = a + b . (x - cx, y - cy))."""
    yy, xx = _grid(*lum.shape)
    x, y = xx.ravel().astype(np.float64), yy.ravel().astype(np.float64)
    L = np.log(np.maximum(lum, 1e-3)).ravel()
    s = lambda v: np.bincount(lab, v, NUM_CLASSES + 1)[:NUM_CLASSES] / safe
    cx, cy, cl = s(x), s(y), s(L)                                               # (NUM_CLASSES,) centroids
    li = np.minimum(lab, NUM_CLASSES - 1)
    X, Y, D = x - cx[li], y - cy[li], L - cl[li]                                # centred, per pixel
    sxx, syy, sxy, sxl, syl = s(X * X), s(Y * Y), s(X * Y), s(X * D), s(Y * D)   # (NUM_CLASSES,) each
    det = np.maximum(sxx * syy - sxy ** 2, 1e-9)
    return np.stack([(syy * sxl - sxy * syl) / det, (sxx * syl - sxy * sxl) / det], -1)


def _remove_ramp(lum: np.ndarray,       # (H, W) luminance
                 label: np.ndarray,     # (H, W) class ids
                 lab: np.ndarray,       # (H*W,) class id of the pixels to read the ramp from, NUM_CLASSES elsewhere
                 safe: np.ndarray,      # (NUM_CLASSES,) their counts, at least 1
                 ) -> np.ndarray:
    """(H, W) luminance with each region's shading ramp divided out, before the texture statistics. The ramp is
    the median of the per-pixel log-luminance gradients, which a checker's or a stripe's few edges do not pull
    (the least-squares plane's slope does: texture-kind accuracy 86 % with it, 98 % with the median, over
    the 1,602 regions of 300 test images at 64x64). Every
    pixel, boundary ones too, gets its own class's ramp, so texture gradients stay the region's."""
    yy, xx = _grid(*lum.shape)
    x, y = xx.ravel().astype(np.float64), yy.ravel().astype(np.float64)
    logl = np.log(np.maximum(lum, 1e-3))                                        # (H, W)
    gy, gx = np.gradient(logl)                                                  # (H, W) each
    cnt = np.bincount(lab, minlength=NUM_CLASSES + 1)[:NUM_CLASSES]
    ramp = np.stack([_class_median(gx.ravel(), lab, cnt), _class_median(gy.ravel(), lab, cnt)], -1)  # (NC, 2)
    cx = np.bincount(lab, x, NUM_CLASSES + 1)[:NUM_CLASSES] / safe
    cy = np.bincount(lab, y, NUM_CLASSES + 1)[:NUM_CLASSES] / safe
    lc = label.ravel()
    plane = ramp[lc, 0] * (x - cx[lc]) + ramp[lc, 1] * (y - cy[lc])             # each pixel: its class's ramp
    return np.exp(logl.ravel() - plane).reshape(lum.shape)


# ---------------------------------------------------------------------------------------------
# Torch datasets and files on disk


class SynthScenes(torch.utils.data.Dataset):
    """SynthScenes generated on the fly (no files needed), deterministic from (seed, split, index).

    Renders are kept in memory as uint8 (image and label, 16 KiB a 64x64 sample) up to `cache_mb`, so every
    epoch after the first reads them back instead of rendering again: the same tensors (generation is
    deterministic), without its ~0.9 ms per 64x64 image, which is ~3 % of a SynthScenes training step on one CPU
    core (benchmarks/RESULTS.md, issue 26). A training run of the shipped schedule sees each image 16 times.
    The cache is per process: DataLoader workers fill their own, and pickling the dataset leaves it out."""

    def __init__(
        self,
        size=64,              # (H, W) or int, 64..512
        length: int = 1000,   # number of samples in the split
        split: str = "train",  # "train", "test" or "val": disjoint random streams
        seed: int = 0,        # dataset seed
        flip: bool = False,   # random horizontal flip (training augmentation)
        object_factor: bool = False,  # add the object-scale shading factor (opt-in; module docstring)
        cache_mb: float = 256,  # renders kept in memory, MiB (4000 64x64 samples: 62.5); 0: render every time
    ):
        self.size = as_hw(size)
        _check_size(*self.size)
        if split not in SPLIT_IDS:
            raise ValueError(f"unknown split {split!r}; SynthScenes has {sorted(SPLIT_IDS)}")
        if not cache_mb >= 0:
            raise ValueError(f"cache_mb={cache_mb!r}: give the MiB of renders to keep in memory, >= 0 (0: none)")
        self.length, self.split, self.seed, self.flip = int(length), split, int(seed), flip
        self.object_factor = bool(object_factor)
        self.info = info(self.size)
        self.cache_bytes = int(cache_mb * 2**20)
        self._cache: dict[int, tuple[np.ndarray, np.ndarray]] = {}    # index -> (image (H, W, 3), label (H, W)) uint8
        self._cached_bytes = 0

    def __len__(self) -> int:
        return self.length

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_cache": {}, "_cached_bytes": 0}     # workers fill their own

    def factors(self, index: int) -> dict:
        return generate(index, self.size, self.seed, self.split, self.object_factor)[2]

    def _render(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """(image (H, W, 3), label (H, W)) uint8 of `index`, from the cache or rendered (and kept if it fits)."""
        hit = self._cache.get(index)
        if hit is not None:
            return hit
        img, label, _ = generate(index, self.size, self.seed, self.split, self.object_factor)
        pair = (img, label.astype(np.uint8))                           # NUM_CLASSES < 256: exact
        size = img.nbytes + pair[1].nbytes
        if self._cached_bytes + size <= self.cache_bytes:
            for a in pair:
                a.flags.writeable = False                               # callers get copies (below)
            self._cache[index] = pair
            self._cached_bytes += size
        return pair

    def __getitem__(self, index: int) -> dict:
        if not 0 <= index < self.length:
            raise IndexError(index)
        img, label = self._render(index)
        image = torch.from_numpy(img.transpose(2, 0, 1).astype(np.float32)).div_(127.5).sub_(1.0)  # (3, H, W)
        lbl = torch.from_numpy(label.astype(np.int64))                                            # (H, W), a copy
        if self.flip and bool(torch.rand(()) < 0.5):
            image, lbl = image.flip(-1), lbl.flip(-1)
        return {"image": image, "label": lbl, "index": index, "path": f"synthscenes://{self.split}/{index:06d}"}


def write_synthscenes(
    out,                       # dataset root to create
    n_train: int = 2000,       # training images
    n_test: int = 200,         # test images
    size=128,                  # (H, W) or int
    seed: int = 0,             # dataset seed
    overwrite: bool = False,   # replace an existing dataset with different settings
    progress: bool = True,     # progress bar
    object_factor: bool = False,  # add the object-scale shading factor (recorded in meta.json when on)
) -> Path:
    """Write SynthScenes in the `folder` layout, atomically: a finished dataset or nothing.

    Layout: classes.json, meta.json, <split>/images/%06d.png, <split>/labels/%06d.png,
    <split>/factors.jsonl (one factor record per line, in index order).
    A second call with the same settings finds the dataset complete and returns at once.
    """
    out = Path(out)
    H, W = as_hw(size)
    _check_size(H, W)
    meta = {"format": "synthscenes", "version": FORMAT_VERSION, "seed": int(seed), "size": [H, W],
            "splits": {"train": int(n_train), "test": int(n_test)}}
    if object_factor:      # only when on: a default dataset's meta.json stays as before
        meta["object_factor"] = True
    if (out / "meta.json").exists():
        old = json.loads((out / "meta.json").read_text())
        if old == meta:
            return out
        if not overwrite:
            raise FileExistsError(f"{out} holds a SynthScenes dataset with other settings ({old}). Fix: pass "
                                  "overwrite=True (--overwrite) or choose another --out.")
    elif out.exists() and any(out.iterdir()) and not overwrite:
        raise FileExistsError(f"{out} exists and is not a SynthScenes dataset. Fix: choose an empty --out.")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        (tmp / "classes.json").write_text(json.dumps({"names": [c.name for c in CLASSES],
                                                      "palette": [list(p) for p in PALETTE],
                                                      "dontcare": None}, indent=1))
        for split, n in meta["splits"].items():
            (tmp / split / "images").mkdir(parents=True)
            (tmp / split / "labels").mkdir(parents=True)
            with open(tmp / split / "factors.jsonl", "w") as f:
                for i in Progress(range(n), desc=f"SynthScenes {split}", disable=not progress):
                    img, label, rec = generate(i, (H, W), seed, split, object_factor)
                    Image.fromarray(img).save(tmp / split / "images" / f"{i:06d}.png", compress_level=1)
                    Image.fromarray(label.astype(np.uint8), mode="L").save(tmp / split / "labels" / f"{i:06d}.png",
                                                                           compress_level=1)
                    f.write(json.dumps(rec) + "\n")
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2))
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def read_factors(root, split: str = "train") -> list[dict]:
    """The factor records of a SynthScenes split on disk, in index order."""
    path = Path(root) / split / "factors.jsonl"
    if not path.exists():
        raise DatasetError(f"{path} does not exist. Fix: generate the dataset with "
                           f"`python -m smis.data.synthetic --out {root}`.")
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def factor_recovery(root,                  # a SynthScenes folder written by write_synthscenes
                    split: str = "test",
                    ) -> pd.DataFrame:
    """How often `estimate_factors` reads a class region's colour mode and texture kind back from the
    written pixels (given the image's global factor): the share right, columns "colour ok" and "texture ok",
    per class name and over every region ("all"), rounded to 3 decimals. On data with the object-scale
    factor (records with "shading") a "shading ok" column and a "regions" column (regions scored) are added."""
    root = Path(root)
    records = read_factors(root, split)
    shaded = bool(records) and "shading_amplitude" in records[0]
    cols = ["colour ok", "texture ok"] + (["shading ok"] if shaded else [])
    rows = []
    for rec in records:   # one image at a time: decoding and estimating, not a hot path
        name = f"{rec['index']:06d}.png"
        image = np.asarray(Image.open(root / split / "images" / name))
        label = np.asarray(Image.open(root / split / "labels" / name))
        for c, est in estimate_factors(image, label, rec["global"], object_factor=shaded).items():
            truth = rec["classes"][str(c)]
            rows.append({"class": truth["name"], "colour ok": est["colour_mode"] == truth["colour_mode"],
                         "texture ok": est["texture"] == truth["texture"],
                         **({"shading ok": est["shading"] == truth["shading"]} if shaded else {})})
    regions = pd.DataFrame(rows, columns=["class", *cols])
    summary = regions.groupby("class")[cols].mean().round(3)
    summary.loc["all"] = regions[cols].mean().round(3)
    if shaded:
        summary["regions"] = [*regions.groupby("class").size().reindex(summary.index[:-1]), len(regions)]
    return summary


def generation_speed(n: int = 200, size=128, seed: int = 0) -> float:
    """Images per second generated in memory on this process's core (no PNG encoding)."""
    generate(0, size, seed)
    t0 = time.perf_counter()
    for i in range(n):
        generate(i, size, seed)
    return n / (time.perf_counter() - t0)


def main(argv=None):
    p = argparse.ArgumentParser(description="Generate the SynthScenes dataset in the folder layout.")
    p.add_argument("--out", default="data/synthscenes", help="dataset root to write")
    p.add_argument("--train", type=int, default=2000, help="number of training images")
    p.add_argument("--test", type=int, default=200, help="number of test images")
    p.add_argument("--size", type=int, nargs="+", default=[128], help="S or H W (64..512)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--object-factor", action="store_true",
                   help="add the object-scale factor (per-class shading direction across each region)")
    p.add_argument("--speed", action="store_true", help="only measure in-memory generation speed and exit")
    a = p.parse_args(argv)
    size = a.size[0] if len(a.size) == 1 else tuple(a.size)
    if a.speed:
        torch.set_num_threads(1)
        print(f"SynthScenes generation at {as_hw(size)}: {generation_speed(200, size, a.seed):.0f} images/s (one core)")
        return
    out = write_synthscenes(a.out, a.train, a.test, size, a.seed, a.overwrite, object_factor=a.object_factor)
    print(f"SynthScenes ready at {out}")


if __name__ == "__main__":
    main()
