"""Label statistics over a dataset: per-image class pixel counts, vectorised with bincount."""
from __future__ import annotations

import numpy as np
import torch
from tqdm.auto import tqdm

from smis.viz import save_figure


def label_histograms(dataset, indices=None, progress: bool = False) -> np.ndarray:
    """(N, C) pixel count of each class in each sample's label map."""
    C = dataset.info.num_classes
    idx = range(len(dataset)) if indices is None else indices
    rows = [torch.bincount(dataset[i]["label"].flatten(), minlength=C)[:C] for i in tqdm(idx, disable=not progress,
                                                                                          desc="label histograms")]
    return torch.stack(rows).numpy()


def plot_label_statistics(hist: np.ndarray, class_names, path=None):
    """Per-class pixel frequency and classes-per-image, side by side."""
    import matplotlib.pyplot as plt

    freq = hist.sum(0) / max(hist.sum(), 1)
    per_image = (hist > 0).sum(1)
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 3.4))
    a.bar(range(len(freq)), freq, color="tab:blue")
    a.set_xticks(range(len(freq)), class_names, rotation=45, ha="right")
    a.set_ylabel("share of pixels")
    a.set_title("class pixel frequency")
    lo, hi = per_image.min(), per_image.max()
    b.hist(per_image, bins=np.arange(lo - 0.5, hi + 1.5), rwidth=0.85, color="tab:orange")
    b.set_xlabel("classes per image")
    b.set_ylabel("images")
    b.set_title("classes per image")
    fig.tight_layout()
    if path is not None:
        save_figure(fig, path)
    return fig


def classes_per_image(hist: np.ndarray,      # (N, C) label_histograms(dataset)
                      ) -> str:
    """The line notebook 01 prints under the label statistics: the minimum, mean and maximum count of classes
    present in an image ("classes per image: min 4, mean 5.61, max 8")."""
    per_image = (hist > 0).sum(1)
    return f"classes per image: min {per_image.min()}, mean {per_image.mean():.2f}, max {per_image.max()}"
