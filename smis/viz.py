"""Figures: image / mask grids and small plots, saved as PNG under outputs/.

    figure = example_grid(label, image, [samples], dataset.info.palette)   # mask | real | samples, per row
    save_grid(figure, "outputs/fig.png", ["mask", "real", "s1"], ["mask 0"], "title")
    per_class_figure(per_class, {"clvae": "clvae: diversity (lpips_alex)"}, "diversity (lpips_alex)", "out.png")
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Mapping, Sequence

import numpy as np
import torch
from PIL import Image

from smis.utils import atomic_path

if TYPE_CHECKING:                      # annotations only
    import pandas as pd


def to_uint8(image: torch.Tensor | np.ndarray) -> np.ndarray:
    """(3, H, W) or (B, 3, H, W) tensor in [-1, 1] -> (..., H, W, 3) uint8; uint8 arrays pass through."""
    if isinstance(image, np.ndarray) and image.dtype == np.uint8:
        return image
    t = torch.as_tensor(image).detach().float().cpu()
    t = ((t.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return t.movedim(-3, -1).numpy()


def colorize(label: torch.Tensor | np.ndarray, palette: Sequence[Sequence[int]]) -> np.ndarray:
    """(..., H, W) ids -> (..., H, W, 3) uint8 through a palette (C, 3)."""
    lab = label.cpu().numpy() if isinstance(label, torch.Tensor) else np.asarray(label)
    pal = np.asarray(palette, dtype=np.uint8)
    return pal[np.clip(lab, 0, len(pal) - 1)]


def upscale(image: np.ndarray, min_side: int) -> np.ndarray:
    """(..., H, W, C) uint8 enlarged by the smallest integer factor that makes min(H, W) >= min_side
    (nearest neighbour: pixels stay pixels, masks stay crisp)."""
    f = max(1, -(-int(min_side) // min(image.shape[-3:-1])))
    return image if f == 1 else image.repeat(f, axis=-3).repeat(f, axis=-2)


def grid(rows: Sequence[Sequence[np.ndarray]], pad: int = 2, fill: int = 255, min_tile: int = 0) -> np.ndarray:
    """Tile a list of rows of (H, W, 3) uint8 images (equal sizes) into one image; `min_tile`: enlarge
    every tile (`upscale`) to at least that many pixels a side first."""
    if min_tile:
        rows = [[upscale(im, min_tile) for im in row] for row in rows]
    H, W = rows[0][0].shape[:2]
    ncol = max(len(r) for r in rows)
    out = np.full((len(rows) * (H + pad) - pad, ncol * (W + pad) - pad, 3), fill, np.uint8)
    for i, row in enumerate(rows):  # figure assembly, not a hot path
        for j, im in enumerate(row):
            out[i * (H + pad): i * (H + pad) + H, j * (W + pad): j * (W + pad) + W] = im
    return out


def example_grid(label: torch.Tensor,                     # (B, H, W) masks, one row each
                 image: torch.Tensor | None,               # (B, 3, H, W) ground truth in [-1, 1], or None
                 columns: Sequence[torch.Tensor],          # each (B, 3, H, W) or (B, n, 3, H, W): n columns
                 palette: Sequence[Sequence[int]],         # (C, 3) mask colours (dataset.info.palette)
                 min_tile: int = 128,                      # tiles enlarged to >= this many pixels a side
                 ) -> np.ndarray:
    """One row per mask: the mask, the ground truth (if given), then every image of `columns`.
    uint8 (H', W', 3); `save_grid` names its rows and columns."""
    masks = colorize(label, palette)
    parts = [c if c.dim() == 5 else c[:, None] for c in columns]
    rows = []
    for b in range(label.shape[0]):                        # figure assembly
        row = [masks[b]] + ([to_uint8(image[b])] if image is not None else [])
        row += [to_uint8(im) for p in parts for im in p[b]]
        rows.append(row)
    return grid(rows, min_tile=min_tile)


def save_png(image: np.ndarray, path: str | Path) -> Path:
    path = Path(path)
    with atomic_path(path) as tmp:
        Image.fromarray(image).save(tmp, format="PNG")
    return path


def save_figure(fig, path: str | Path, dpi: int = 110) -> Path:
    """Save a matplotlib figure atomically as PNG."""
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi, bbox_inches="tight")
    return path


def labelled(image: np.ndarray,                        # a `grid` of equal tiles
             columns: Sequence[str] | None = None,      # one label per tile column (top)
             rows: Sequence[str] | None = None,         # one label per tile row (left)
             title: str | None = None,
             pad: int = 2):
    """The grid as a matplotlib figure at its pixel size, each column and row named, so a saved PNG reads
    without the notebook. Returns the figure (`save_figure` writes it)."""
    import matplotlib.pyplot as plt          # optional heavy dependency: only for figures

    h, w = image.shape[:2]
    left = 0.0 if not rows else 0.12 * max(len(r) for r in rows)
    fig = plt.figure(figsize=(w / 100 + left, h / 100 + 0.35 + (0.3 if title else 0) + (0.25 if columns else 0)))
    ax = fig.add_axes([left / (w / 100 + left), 0, 1 - left / (w / 100 + left), h / 100 / fig.get_figheight()])
    ax.imshow(image, interpolation="nearest")
    for spine in ax.spines.values():
        spine.set_visible(False)
    centres = lambda n, size: [(i + 0.5) * (size + pad) / n - pad / 2 for i in range(n)]
    if columns:
        ax.set_xticks(centres(len(columns), w), list(columns), fontsize=8)
        ax.xaxis.tick_top()
    else:
        ax.set_xticks([])
    if rows:
        ax.set_yticks(centres(len(rows), h), list(rows), fontsize=8)
    else:
        ax.set_yticks([])
    ax.tick_params(length=0)
    if title:
        ax.set_title(title, fontsize=9, pad=18 if columns else 6)
    return fig


def save_grid(image: np.ndarray, path: str | Path, columns: Sequence[str] | None = None,
              rows: Sequence[str] | None = None, title: str | None = None):
    """`labelled(image, ...)` saved as a PNG at `path` (and the bare grid as `<stem>_raw.png`); returns the figure."""
    path = Path(path)
    save_png(image, path.with_name(path.stem + "_raw.png"))
    fig = labelled(image, columns, rows, title)
    save_figure(fig, path, dpi=100)
    return fig


def per_class_figure(per_class: pd.DataFrame,          # rows: classes (named by the index), a "masks" column
                     columns: Mapping[str, str],         # legend label -> the table's column of one bar per class
                     ylabel: str,                        # what the bars measure, e.g. "diversity (lpips_alex)"
                     path: str | Path,                   # PNG written (atomically)
                     max_classes: int = 30,              # the classes held by the most masks, at most this many
                     ):
    """Grouped bars, one group per class (x: the class names), one bar per legend entry: the per-class table of
    notebook 04 (`smis.tables.per_class_table`), its classes held by the most masks first (stable). Returns the
    matplotlib figure, saved at `path`."""
    from matplotlib.figure import Figure        # optional heavy dependency: only for figures

    shown = per_class.sort_values("masks", ascending=False, kind="stable").head(max_classes)
    fig = Figure(figsize=(max(7, 0.3 * len(shown)), 3.2), dpi=110)
    ax = fig.add_subplot()
    width = 0.8 / len(columns)
    for i, (label, col) in enumerate(columns.items()):
        ax.bar(np.arange(len(shown)) + i * width, shown[col], width, label=label)
    ax.set_xticks(np.arange(len(shown)) + 0.4 - width / 2, shown.index, rotation=45, ha="right")
    ax.set_ylabel(ylabel)
    ax.legend(frameon=False)
    save_figure(fig, path)
    return fig


def show(image: np.ndarray, title: str | None = None, scale: float = 1.0):
    """Display an image inline (matplotlib), sized by its pixels."""
    import matplotlib.pyplot as plt          # optional heavy dependency: only for figures

    h, w = image.shape[:2]
    fig, ax = plt.subplots(figsize=(scale * w / 100, scale * h / 100 + (0.3 if title else 0)))
    ax.imshow(image, interpolation="nearest")
    ax.set_axis_off()
    if title:
        ax.set_title(title)
    return fig


class LiveLossPlot:
    """A training callback: redraws the loss curves in place in a notebook (or only collects them)."""

    def __init__(self, keys=("g_gan", "g_fm", "g_perceptual", "kl", "d_hinge"), every: int = 1):
        self.keys, self.every, self.history, self._handle = tuple(keys), every, [], None

    def __call__(self, trainer, step: int, losses: dict):
        self.history.append({"step": step, **losses})
        if len(self.history) % self.every == 0:
            self.draw()

    def figure(self):
        import matplotlib.pyplot as plt          # optional heavy dependency: only for figures

        fig, axes = plt.subplots(1, len(self.keys), figsize=(3.2 * len(self.keys), 2.6))
        steps = [h["step"] for h in self.history]
        for ax, k in zip(axes, self.keys):
            ax.plot(steps, [h.get(k, float("nan")) for h in self.history], lw=1.2)
            ax.set_title(k)
            ax.set_xlabel("step")
        fig.tight_layout()
        return fig

    def draw(self):
        try:
            from IPython import get_ipython          # optional: only inside a notebook
            from IPython.display import display
        except ImportError:
            return
        if get_ipython() is None or not self.history:
            return
        import matplotlib.pyplot as plt          # optional heavy dependency: only for figures

        fig = self.figure()
        if self._handle is None:
            self._handle = display(fig, display_id=True)
        else:
            self._handle.update(fig)
        plt.close(fig)
