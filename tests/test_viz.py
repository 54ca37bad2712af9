"""smis.viz: images to uint8, masks through a palette, nearest-neighbour enlarging, grids, labelled figures and
their PNGs (written atomically), and the live loss plot's figure."""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from smis.data import synthetic
from smis.viz import (LiveLossPlot, colorize, example_grid, grid, labelled, per_class_figure, save_figure, save_grid,
                      save_png, show, to_uint8, upscale)


@pytest.fixture
def batch():
    """(label (2, 64, 64), image (2, 3, 64, 64), samples (2, 3, 3, 64, 64)), seeded, images in [-1, 1]."""
    g = torch.Generator().manual_seed(0)
    label = torch.randint(0, 10, (2, 64, 64), generator=g)
    image = torch.rand(2, 3, 64, 64, generator=g) * 2 - 1
    return label, image, torch.rand(2, 3, 3, 64, 64, generator=g) * 2 - 1


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def test_to_uint8_colorize_and_upscale():
    x = torch.tensor([-1.0, -0.5, 0.0, 1.0, 2.0]).view(1, 1, 5).expand(3, 1, 5)
    out = to_uint8(x)
    assert out.dtype == np.uint8 and out.shape == (1, 5, 3)                     # channels last
    assert out[0, :, 0].tolist() == [0, 64, 128, 255, 255]                      # (x + 1) 127.5 rounded, clamped
    assert to_uint8(out) is out                                                 # uint8 arrays pass through
    palette = [(0, 0, 0), (255, 0, 0), (0, 0, 255)]
    mask = colorize(torch.tensor([[0, 1], [2, 7]]), palette)
    assert mask.tolist() == [[[0, 0, 0], [255, 0, 0]], [[0, 0, 255], [0, 0, 255]]]   # an id past the palette: last
    big = upscale(mask, 5)
    assert big.shape == (6, 6, 3) and (big[:3, 3:] == [255, 0, 0]).all()       # factor 3: each pixel a 3x3 block
    assert upscale(mask, 2) is mask


def test_grid_tiles_rows_with_padding():
    a, b = np.zeros((4, 6, 3), np.uint8), np.full((4, 6, 3), 9, np.uint8)
    g = grid([[a, b], [b]], pad=2)
    assert g.shape == (2 * 4 + 2, 2 * 6 + 2, 3)
    assert (g[:4, 8:] == 9).all() and (g[:4, :6] == 0).all() and (g[4:6] == 255).all()    # pad in the fill colour
    assert (g[6:, 8:] == 255).all()                                                          # a short row: empty
    assert grid([[a]], min_tile=8).shape == (8, 12, 3)


def test_example_grid_and_labelled_save_grid(tmp_path, batch):
    label, image, samples = batch
    palette = synthetic.info().palette
    g = example_grid(label, image, [samples, image], palette, min_tile=0)
    assert g.dtype == np.uint8 and g.shape == (2 * 64 + 2, 6 * 64 + 5 * 2, 3)
    assert np.array_equal(g[:64, :64], colorize(label[0], palette))                   # mask | real | samples
    assert np.array_equal(g[66:, 66:130], to_uint8(image[1]))
    assert np.array_equal(g[:64, 3 * 66:3 * 66 + 64], to_uint8(samples[0, 1]))
    big = example_grid(label, image, [samples, image], palette)                       # tiles >= 128 px (issue 14.6)
    assert big.shape == (2 * 128 + 2, 6 * 128 + 5 * 2, 3)
    assert np.array_equal(big[:128:2, :128:2], g[:64, :64])                          # nearest: each pixel 2x2
    assert example_grid(label, None, [samples], palette, min_tile=0).shape == (130, 4 * 64 + 3 * 2, 3)
    fig = save_grid(big, tmp_path / "f.png", ["mask", "real", "s1", "s2", "s3", "real"], ["a", "b"], "title")
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["mask", "real", "s1", "s2", "s3", "real"]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["a", "b"] and ax.get_title() == "title"
    centres = ax.get_xticks()
    assert centres[0] == pytest.approx(63.5, abs=1) and centres[1] == pytest.approx(128 + 2 + 63.5, abs=1)
    assert (tmp_path / "f.png").stat().st_size > 1000 and (tmp_path / "f_raw.png").exists()
    assert np.array_equal(np.asarray(Image.open(tmp_path / "f_raw.png")), big)      # the bare grid, lossless
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.png", "f_raw.png"]      # atomic: no temporary left


def test_labelled_without_names_has_no_ticks_and_figures_save_atomically(tmp_path):
    image = np.zeros((50, 80, 3), np.uint8)
    fig = labelled(image)
    ax = fig.axes[0]
    assert list(ax.get_xticks()) == [] and list(ax.get_yticks()) == [] and ax.get_title() == ""
    assert ax.get_images()[0].get_array().shape == (50, 80, 3)
    out = save_figure(fig, tmp_path / "sub" / "plain.png")
    assert out == tmp_path / "sub" / "plain.png" and Image.open(out).format == "PNG"
    assert save_png(image, tmp_path / "raw.png") == tmp_path / "raw.png"
    assert np.array_equal(np.asarray(Image.open(tmp_path / "raw.png")), image)
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["plain.png", "raw.png", "sub"]
    shown = show(image, title="t", scale=2)
    assert shown.axes[0].get_title() == "t" and shown.get_figwidth() == pytest.approx(1.6)


def test_live_loss_plot_collects_and_draws_one_panel_per_loss():
    plot = LiveLossPlot(keys=("g_gan", "kl"), every=2)
    for step in (1, 2, 3):
        plot(None, step, {"g_gan": float(step), "d_hinge": 0.5})       # outside a notebook: collects only
    assert [h["step"] for h in plot.history] == [1, 2, 3]
    fig = plot.figure()
    assert [ax.get_title() for ax in fig.axes] == ["g_gan", "kl"]
    assert list(fig.axes[0].lines[0].get_ydata()) == [1.0, 2.0, 3.0]
    assert np.isnan(fig.axes[1].lines[0].get_ydata()).all()             # a loss not logged: NaN, not a crash

def test_per_class_figure_draws_one_bar_per_class_and_system_most_held_first(tmp_path):
    table = pd.DataFrame({"a: div": [0.1, 0.2, 0.3, 0.4], "b: div": [0.5, 0.6, 0.7, 0.8], "masks": [1, 9, 3, 9]},
                         index=pd.Index(["sky", "box", "wall", "pole"], name="class"))
    fig = per_class_figure(table, {"a": "a: div", "b": "b: div"}, "diversity (x)", tmp_path / "bars.png", 3)
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["box", "pole", "wall"]   # by masks, stable, at most 3
    assert ax.get_ylabel() == "diversity (x)" and [t.get_text() for t in ax.get_legend().get_texts()] == ["a", "b"]
    heights = [p.get_height() for p in ax.patches]
    assert np.allclose(heights, [0.2, 0.4, 0.3, 0.6, 0.8, 0.7])                       # system a's bars, then b's
    assert Image.open(tmp_path / "bars.png").size[0] > 300
