"""smis.eval_figures: the evaluation figures of notebooks 03-05 from a tiny study's results (rows, columns, titles,
the files written and the text returned)."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from smis import eval_figures
from smis import evaluate as ev
from smis.viz import to_uint8, upscale


@pytest.fixture(scope="module")
def prior(tiny_study):
    return tiny_study.evaluate_prior(ev.PriorOptions(k=3, seed=0, chunk=3, keep=2))


def ticks(fig):
    ax = fig.axes[0]
    return [t.get_text() for t in ax.get_xticklabels()], [t.get_text() for t in ax.get_yticklabels()], ax.get_title()


def test_prior_samples_figures_one_per_model_with_its_own_sample_count(tiny_study, prior, tmp_path):
    paths = eval_figures.prior_samples_figures(tiny_study, prior, 2, 2, tmp_path)
    assert paths == {v: tmp_path / f"fig7_samples_{v}.png" for v in ("clvae", "gaugan", "clvae_L3")}
    for v, cols in (("clvae", 4), ("gaugan", 3)):             # mask, real + 2 samples; gaugan draws one
        raw = np.asarray(Image.open(tmp_path / f"fig7_samples_{v}_raw.png"))
        assert raw.shape[:2] == (2 * 128 + 2, cols * 128 + (cols - 1) * 2)     # 64 px tiles doubled, 2 px padding
        assert paths[v].is_file()
    raw = np.asarray(Image.open(tmp_path / "fig7_samples_clvae_raw.png"))
    real = upscale(to_uint8(ev.load_pairs(tiny_study.dataset, [0])[0][0]), 128)
    assert np.array_equal(raw[:128, 130:258], real)               # row 0, column "real": the first test image


def test_all_systems_figure_names_every_models_columns(tiny_study, prior, tmp_path):
    fig = eval_figures.all_systems_figure(tiny_study, prior, 2, 2, 3, tmp_path / "all.png")
    columns, rows, title = ticks(fig)
    assert columns == ["mask", "real", "clvae 1", "clvae 2", "gaugan 1", "clvae_L3 1", "clvae_L3 2"]
    assert rows == ["test mask 0", "test mask 1"]
    assert title == "Every system on the same masks and seeds (2 prior samples each)"
    assert (tmp_path / "all.png").is_file() and (tmp_path / "all_raw.png").is_file()


def test_ablation_samples_figure_one_row_per_variant_on_the_first_mask(tiny_study, prior, tmp_path):
    fig = eval_figures.ablation_samples_figure(tiny_study, prior, ["clvae_L3", "clvae"], 2, tmp_path / "f11.png")
    columns, rows, title = ticks(fig)
    assert columns == ["mask", "real", "sample 1", "sample 2"] and rows == ["L = 3", "full (L = 6)"]
    assert title == "test mask 0: the same prior seeds through every variant"
    raw = np.asarray(Image.open(tmp_path / "f11_raw.png"))
    assert np.array_equal(raw[:128, :260], raw[130:258, :260])     # the same mask and real image in every row
    assert not np.array_equal(raw[:128, 260:], raw[130:258, 260:])  # different variants' samples


def test_reconstruction_figure_and_histogram(tiny_study, tmp_path):
    recon = tiny_study.evaluate_reconstruction(keep=2)
    columns, rows, title = ticks(eval_figures.reconstruction_figure(tiny_study, recon, 2, tmp_path / "f6.png"))
    assert columns == ["mask", "real", "clvae recon.", "clvae_L3 recon."] and rows == ["test pair 0", "test pair 1"]
    assert title == "reconstructions G(M, E(M, I)) with the encoder's means"
    col = tiny_study.columns.gt_similarity
    text = eval_figures.reconstruction_histogram(recon, col, tmp_path / "hist.png").splitlines()
    s = recon["clvae_L3"].per_image[col]
    assert text[1] == f"clvae_L3: median {s.median():.3f}, worst image {s.idxmax()} ({s.max():.3f})"
    assert len(text) == 2 and (tmp_path / "hist.png").is_file()


def test_score_histograms_write_one_figure_per_score_and_return_the_medians(tiny_study, prior, tmp_path):
    cols = tiny_study.columns
    text = eval_figures.score_histograms(prior, {cols.diversity: tmp_path / "div.png", cols.top1: tmp_path / "t.png"})
    first, second = text.splitlines()
    assert first.startswith("div {'clvae': ") and "'gaugan': 0.0" in first     # no latents: diversity 0
    assert second == "t " + str({k: round(float(r.per_image[cols.top1].median()), 3) for k, r in prior.items()})
    assert (tmp_path / "div.png").is_file() and (tmp_path / "t.png").is_file()


def test_training_samples_figures_this_run_then_the_shipped_model_or_say_why_not(tiny_study, tmp_path, capsys):
    from smis.evaluate import load_pairs
    from smis.utils import resolve
    nets = tiny_study.models["clvae"]
    image, label = load_pairs(tiny_study.dataset, tiny_study.indices[:2])
    palette = tiny_study.dataset.info.palette
    paths = eval_figures.training_samples_figures(nets, "clvae", 7, label, image, [0, 1], palette, tmp_path,
                                                  shipped="", preset="synthscenes")
    assert list(paths) == ["clvae after 7 steps (this run)"] and "no shipped model at ''" in capsys.readouterr().out
    raw = np.asarray(Image.open(tmp_path / "samples_this_run_raw.png"))
    assert raw.shape[:2] == (2 * 128 + 2, 6 * 128 + 5 * 2)            # 2 masks x (mask, real, 4 samples)
    shipped = "checkpoints/synthscenes_gaugan.pt"
    assert resolve(shipped).is_file()
    paths = eval_figures.training_samples_figures(nets, "clvae", 7, label, image, [0, 1], palette, tmp_path,
                                                  shipped=shipped)
    assert list(paths)[1].startswith("shipped gaugan, ") and capsys.readouterr().out == ""
    raw = np.asarray(Image.open(tmp_path / "samples_demo_model_raw.png"))
    assert raw.shape[:2] == (2 * 128 + 2, 3 * 128 + 2 * 2)            # gaugan: one sample per mask
    eval_figures.training_samples_figures(nets, "clvae", 7, label, image, [0, 1], palette, tmp_path,
                                          shipped=shipped, preset="ade20k")
    assert "(or another preset)" in capsys.readouterr().out
