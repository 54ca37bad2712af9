"""Figures: image / mask grids and small plots, saved as PNG under outputs/."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from smis.utils import atomic_path


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


def grid(rows: Sequence[Sequence[np.ndarray]], pad: int = 2, fill: int = 255) -> np.ndarray:
    """Tile a list of rows of (H, W, 3) uint8 images (equal sizes) into one image."""
    H, W = rows[0][0].shape[:2]
    ncol = max(len(r) for r in rows)
    out = np.full((len(rows) * (H + pad) - pad, ncol * (W + pad) - pad, 3), fill, np.uint8)
    for i, row in enumerate(rows):  # figure assembly, not a hot path
        for j, im in enumerate(row):
            out[i * (H + pad): i * (H + pad) + H, j * (W + pad): j * (W + pad) + W] = im
    return out


def save_png(image: np.ndarray, path: str | Path) -> Path:
    from PIL import Image

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


def show(image: np.ndarray, title: str | None = None, scale: float = 1.0):
    """Display an image inline (matplotlib), sized by its pixels."""
    import matplotlib.pyplot as plt

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
        import matplotlib.pyplot as plt

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
            from IPython import get_ipython
            from IPython.display import display
        except ImportError:
            return
        if get_ipython() is None or not self.history:
            return
        import matplotlib.pyplot as plt

        fig = self.figure()
        if self._handle is None:
            self._handle = display(fig, display_id=True)
        else:
            self._handle.update(fig)
        plt.close(fig)
