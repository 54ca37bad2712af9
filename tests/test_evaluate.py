"""Tests of smis.evaluate on tiny seeded models: style guidance, the sample iterators, every scorer through
evaluate_prior / evaluate_reconstruction / evaluate_style, and mask fidelity in the evaluation loops. The sampling
path is tested in tests/test_sampling.py, the tables in tests/test_tables.py, the figures in tests/test_viz.py."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from conftest import tiny
from smis import evaluate as ev
from smis import tables
from smis.models import load_segmenter_for
from smis.metrics import LPIPS, FrechetDistance, diversity, per_class_diversity, top1_gt_similarity
from smis.sampling import reconstruct, sample_prior
from smis.segmenter import mask_fidelity



@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny convs: one intra-op thread avoids spin-waiting on a busy 2-core machine."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


class TinyTrunk(nn.Module):
    """Two fixed random conv stages: a cheap, deterministic LPIPS backbone."""

    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.a = nn.Conv2d(3, 6, 3, stride=2, padding=1)
        self.b = nn.Conv2d(6, 8, 3, stride=2, padding=1)
        with torch.no_grad():
            for conv in (self.a, self.b):
                conv.weight.copy_(torch.randn(conv.weight.shape, generator=g) * 0.3)
                conv.bias.zero_()

    def forward(self, x):
        h = torch.relu(self.a(x))
        return [h, torch.relu(self.b(h))]


class TinyPool(nn.Module):
    """Mean colour and spread per channel: a 6-dim Frechet feature."""

    name = "fd_tiny"

    def forward(self, x):
        return torch.cat([x.mean(dim=(2, 3)), x.std(dim=(2, 3))], dim=1)


@pytest.fixture(scope="module")
def metric():
    return LPIPS(TinyTrunk(), device="cpu", name="lpips_tiny")


# ---- style guidance ------------------------------------------------------------------------------

def test_style_guided_with_a_global_code_only_is_the_reconstruction(data):
    nets = tiny("gaugan_vae")
    ds, idx = data
    image, label = ev.load_pairs(ds, idx[:2])
    guided = ev.style_guided(nets, label, image, label, torch.Generator().manual_seed(3))
    assert torch.allclose(guided, reconstruct(nets, image, label), atol=1e-5)


def test_style_guided_takes_shared_class_codes_from_the_reference(clvae, data):
    ds, idx = data
    image, label = ev.load_pairs(ds, idx[:2])
    g = lambda: torch.Generator().manual_seed(5)
    guided = ev.style_guided(clvae, label, image.flip(0), label.flip(0), g())
    prior = sample_prior(clvae, label, 1, g())[:, 0]
    assert guided.shape == prior.shape == (2, 3, 64, 64)
    assert torch.equal(ev.style_guided(clvae, label, image.flip(0), label.flip(0), g()), guided)
    assert (guided - prior).abs().mean() > 1e-3


# ---- sample iterators ----------------------------------------------------------------------------

def test_prior_batches_group_masks_and_seed_each_by_its_index(clvae, data):
    ds, idx = data
    batches = list(ev.prior_batches(clvae, ds, idx, ev.PriorOptions(k=2, seed=3, masks_per_batch=3), progress=False))
    assert [b.indices for b in batches] == [idx[:3], idx[3:]]
    image, label = ev.load_pairs(ds, idx)
    for b, m in zip(batches, (slice(0, 3), slice(3, 4))):
        assert torch.equal(b.image, image[m]) and torch.equal(b.label, label[m])
        want = sample_prior(clvae, label[m], 2, [ev.mask_seed(3, i) for i in idx[m]])   # the same batch: bitwise
        assert b.samples.shape == (len(b.indices), 2, 3, 64, 64) and torch.equal(b.samples, want)
    assert ev.mask_seed(3, 5) == 3 * 1_000_003 + 5
    rec = list(ev.reconstruction_batches(clvae, ds, idx, batch=3, progress=False))
    assert [b.indices for b in rec] == [idx[:3], idx[3:]]
    assert torch.equal(rec[0].samples[:, 0], reconstruct(clvae, image[:3], label[:3], 3))


def test_columns_name_the_scores_and_are_read_back_from_a_table():
    cols = ev.Columns("lpips_tiny", "fd_tiny")
    assert (cols.diversity, cols.top1, cols.gt_similarity, cols.fd) == \
        ("diversity (lpips_tiny)", "top-1 GT-similarity (lpips_tiny)", "GT-similarity (lpips_tiny)", "FD (fd_tiny)")
    assert ev.Columns.ci(cols.top1) == "top-1 GT-similarity (lpips_tiny) ±95%"
    table = pd.DataFrame({cols.diversity: [0.5], ev.Columns.ci(cols.diversity): [0.1], cols.fd: [3.0]})
    assert ev.Columns.of(table) == cols
    assert ev.Columns.of(table.T) == cols                       # paired_comparison: scores are the index
    with pytest.raises(ValueError, match="no diversity"):
        ev.Columns.of(pd.DataFrame({"x": [1]}))


# ---- scoring -------------------------------------------------------------------------------------

def test_evaluate_prior_matches_the_metric_functions(clvae, data, metric):
    ds, idx = data
    fd_real = ev.real_frechet(ds, idx, TinyPool(), progress=False)
    res = ev.evaluate_prior(clvae, ds, idx, metric, ev.PriorOptions(k=4, seed=2, masks_per_batch=3, factors=True),
                            fd_real, progress=False)
    assert list(res.per_image.columns) == ["diversity (lpips_tiny)", "top-1 GT-similarity (lpips_tiny)"]
    assert list(res.per_image.index) == idx
    image, label = ev.load_pairs(ds, idx)
    # the same batches of masks as evaluate_prior (3 + 1), so G runs at the same batch sizes
    # (see BATCH_NOISE in tests/test_sampling.py)
    s = torch.cat([sample_prior(clvae, label[m], 4, [ev.mask_seed(2, i) for i in idx[m]])
                   for m in (slice(0, 3), slice(3, 4))])
    for b in range(len(idx)):
        assert res.per_image.iloc[b, 0] == pytest.approx(diversity(s[b], metric), rel=1e-5)
        assert res.per_image.iloc[b, 1] == pytest.approx(top1_gt_similarity(s[b], image[b], metric), rel=1e-5)
        want = per_class_diversity(s[b], label[b], 10, metric).numpy()
        np.testing.assert_allclose(res.per_class.iloc[b].to_numpy(), want, rtol=1e-5)
    assert res.per_image.iloc[:, 0].min() > 0
    fd = FrechetDistance(TinyPool()).update(s[:, 0]).compute(fd_real)
    assert res.fd == pytest.approx(fd, rel=1e-6) and res.fd_name == "fd_tiny"
    assert set(res.factors.columns) >= {"index", "sample", "class", "colour_in", "texture_in"}
    assert set(res.factors["index"]) <= set(idx) and res.factors["sample"].max() <= 3


def test_gaugan_diversity_is_zero_by_construction(data, metric):
    ds, idx = data
    res = ev.evaluate_prior(tiny("gaugan"), ds, idx[:2], metric, ev.PriorOptions(k=5), progress=False)
    assert res.k == 1 and (res.per_image.iloc[:, 0] == 0).all()
    present = res.per_class.notna().to_numpy()
    assert present.any() and (res.per_class.to_numpy()[present] == 0).all()


def test_evaluate_reconstruction_scores_the_decoded_means(clvae, data, metric):
    ds, idx = data
    fd_real = ev.real_frechet(ds, idx, TinyPool(), progress=False)
    res = ev.evaluate_reconstruction(clvae, ds, idx, metric, fd_real, batch=3, keep=2, progress=False)
    image, label = ev.load_pairs(ds, idx)
    recon = torch.cat([reconstruct(clvae, image[m], label[m]) for m in (slice(0, 3), slice(3, 4))])  # batch=3's batches
    want = metric.distance(recon, image).numpy()
    np.testing.assert_allclose(res.per_image["GT-similarity (lpips_tiny)"].to_numpy(), want, rtol=1e-5)
    assert res.examples.shape == (2, 3, 64, 64)


# ---- factor-aware scores -------------------------------------------------------------------------

def test_evaluate_style_rows_and_chance_baseline(clvae, data):
    ds, idx = data
    guided = ev.evaluate_style(clvae, ds, idx, list(np.roll(idx, 1)), progress=False)
    prior = ev.evaluate_style(clvae, ds, idx, list(np.roll(idx, 1)), guided=False, progress=False)
    assert list(guided.columns) == ["index", "reference", "class", "name", "colour_match", "texture_match"]
    assert (guided["reference"] == guided["index"].map(dict(zip(idx, np.roll(idx, 1))))).all()
    assert list(prior.columns) == list(guided.columns) and len(prior) == len(guided)   # the same regions, unguided


# ---- mask fidelity in the evaluation loops ---------------------------------------------------------

def test_mask_fidelity_columns_match_the_segmenter_on_the_same_images(clvae, data, metric):
    ds, idx = data
    seg = load_segmenter_for("synthscenes")
    assert load_segmenter_for("ade20k") is None and load_segmenter_for("synthscenes", "") is None
    res = ev.evaluate_prior(clvae, ds, idx, metric, ev.PriorOptions(k=3, seed=4, masks_per_batch=2, per_class=False),
                            segmenter=seg, progress=False)
    assert res.confusion.shape == (len(idx), 10, 10)
    assert res.confusion.sum() == len(idx) * 3 * 64 * 64          # every pixel of every sample counted once
    image, label = ev.load_pairs(ds, idx)
    s = torch.cat([sample_prior(clvae, label[m], 3, [ev.mask_seed(4, i) for i in idx[m]])
                   for m in (slice(0, 2), slice(2, 4))])
    want = mask_fidelity(seg, s, label)
    table = tables.diversity_table({"clvae": res})
    assert table.loc["clvae", tables.MIOU] == pytest.approx(want["miou"], abs=1e-9)
    assert table.loc["clvae", f"{tables.MIOU} 95% low"] <= want["miou"] <= table.loc["clvae", f"{tables.MIOU} 95% high"]
    real = ev.real_mask_fidelity(seg, ds, idx, progress=False)
    assert tables.miou_columns(real)[tables.MIOU] == pytest.approx(mask_fidelity(seg, image, label)["miou"])
    real_miou = tables.miou_columns(real)[tables.MIOU]
    assert real_miou > table.loc["clvae", tables.MIOU] + 0.3                 # an untrained G ignores its mask
    rec = ev.evaluate_reconstruction(clvae, ds, idx, metric, batch=4, progress=False, segmenter=seg)
    assert rec.confusion.shape == (len(idx), 10, 10)
    assert tables.MIOU in tables.reconstruction_table({"clvae": rec}).columns
    paired = tables.paired_comparison(res, res)
    assert paired.loc[tables.MIOU, "difference"] == 0 and paired.loc[tables.MIOU, "masks"] == len(idx)
    with pytest.raises(FileNotFoundError, match="train_segmenter"):
        load_segmenter_for("synthscenes", "nowhere/seg.pt")


# ---- one backbone pass per image (issue 26) ------------------------------------------------------

class CountingTrunk(TinyTrunk):
    """TinyTrunk that counts the images it sees."""

    seen = 0

    def forward(self, x):
        self.seen += x.shape[0]
        return super().forward(x)


def test_scorers_share_each_batch_features_and_the_real_images_features(clvae, data):
    ds, idx = data
    trunk = CountingTrunk()
    metric = LPIPS(trunk, device="cpu", name="lpips_tiny")
    options = ev.PriorOptions(k=3, seed=1, masks_per_batch=2, per_class=True)
    res = ev.evaluate_prior(clvae, ds, idx, metric, options, progress=False)
    # K samples of each mask once (diversity and per-class diversity share them), + 2 per mask for Top-1
    assert trunk.seen == len(idx) * (3 + 2)
    image, label = ev.load_pairs(ds, idx)
    for m in (slice(0, 2), slice(2, 4)):                              # same mask batches (BATCH_NOISE)
        s = sample_prior(clvae, label[m], 3, [ev.mask_seed(1, i) for i in idx[m]])
        for b, i in enumerate(range(m.start, m.stop)):
            assert res.per_image.iloc[i, 0] == diversity(s[b], metric)
            np.testing.assert_array_equal(res.per_class.iloc[i].to_numpy(), per_class_diversity(s[b], label[i], 10,
                                                                                               metric).numpy())
    # a second model on the same masks: the ground truths' features come from the cache
    seen = trunk.seen
    ev.evaluate_prior(tiny("gaugan_vae"), ds, idx, metric, options, progress=False)
    assert trunk.seen - seen == len(idx) * (3 + 1)
    # reconstructions of two models: the real images pass the backbone with the first only
    seen = trunk.seen
    rec = ev.evaluate_reconstruction(clvae, ds, idx, metric, batch=4, progress=False)
    assert trunk.seen - seen == 2 * len(idx)
    ev.evaluate_reconstruction(tiny("gaugan_vae"), ds, idx, metric, batch=4, progress=False)
    assert trunk.seen - seen == 3 * len(idx)
    want = metric.distance(reconstruct(clvae, image, label), image)
    np.testing.assert_allclose(rec.per_image.iloc[:, 0].to_numpy(), want.double().numpy(), rtol=1e-6)
