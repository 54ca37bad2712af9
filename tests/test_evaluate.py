"""Tests of smis.evaluate on tiny seeded models: the sample iterators, every scorer through evaluate_prior /
evaluate_reconstruction / evaluate_style, and the tables (smis.tables) and figures (smis.viz) made from them."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from smis import evaluate as ev
from smis import tables
from smis.models import load_segmenter_for
from smis.config import get_preset
from smis.data import synthetic
from smis.metrics import LPIPS, FrechetDistance, diversity, per_class_diversity, top1_gt_similarity
from smis.networks import Latents, build_networks
from smis.sampling import prior_latents, reconstruct, sample_prior
from smis.segmenter import mask_fidelity
from smis.viz import example_grid, save_grid

TINY = dict(ngf=4, nef=4, ndf=4, spade_hidden=8, z_dim=8, z_dim_local=4, norm_G="instance")

# Float-noise floor of the TINY nets on a CPU. The same inputs through G (or E then G) at another batch
# size pick other oneDNN/MKL kernels, so images agree only up to the last bits. Measured on an AMD EPYC
# (`lscpu`: "AMD EPYC", AVX512; torch 2.14.1) with 1 and 2 intra-op threads: max |diff| 1.6e-6 for G at
# batch 1 vs 4/8/64 (5.4e-7 for the chunk 4 vs 64 of the test below), 1.9e-6 for E then G at chunk 1/2
# vs 3; 0 between 1 and 2 threads at the same batch. Distinct prior samples of one mask differ by >= 0.30.
# So images computed at different batch sizes are compared with atol BATCH_NOISE (~10x the floor,
# ~15000x below the gap between samples); codes and same-batch results stay bitwise.
BATCH_NOISE = 2e-5


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny convs: one intra-op thread avoids spin-waiting on a busy 2-core machine."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def tiny(variant: str):
    torch.manual_seed(0)
    return build_networks(variant, get_preset("synthscenes", **TINY), discriminator=False).eval()


@pytest.fixture(scope="module")
def clvae():
    return tiny("clvae")


@pytest.fixture(scope="module")
def data():
    return ev.test_set("synthscenes", "", "test", 64, 4)


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


# ---- sampling ------------------------------------------------------------------------------------

def test_k_prior_samples_differ_and_are_reproducible_per_mask(clvae, data):
    ds, idx = data
    _, label = ev.load_pairs(ds, idx[:3])
    seeds = [ev.mask_seed(0, i) for i in idx[:3]]
    s = sample_prior(clvae, label, 5, seeds, chunk=4)
    assert s.shape == (3, 5, 3, 64, 64)
    flat = s.flatten(2)
    gaps = (flat[:, :, None] - flat[:, None]).abs().amax(-1)            # (B, K, K)
    off = ~torch.eye(5, dtype=torch.bool)
    assert (gaps[:, off] > 1000 * BATCH_NOISE).all(), "two of the K samples of a mask are (nearly) identical"
    # the codes G sees are drawn per mask before chunking: bitwise the same whatever the chunk or batch
    fed = []
    hook = clvae.G.register_forward_hook(lambda module, args, out: fed.append(args[1]))

    def codes_fed(lab, sd, chunk):
        fed.clear()
        sample_prior(clvae, lab, 5, sd, chunk=chunk)
        return list(fed)

    try:
        by4, by64, one = codes_fed(label, seeds, 4), codes_fed(label, seeds, 64), codes_fed(label[1:2], seeds[1:2], 64)
    finally:
        hook.remove()
    assert len(by4) == 4 and len(by64) == 1                             # 15 codes in chunks of 4, or at once
    drawn = prior_latents(clvae, label, 5, seeds)
    for got, want in ((Latents.cat(by4), drawn), (by64[0], drawn), (one[0], drawn[5:10])):   # one: mask 1 alone
        assert torch.equal(got.z, want.z) and torch.equal(got.zc, want.zc) and torch.equal(got.present, want.present)
    # so the images differ by the batch-size float noise only (not bitwise: see BATCH_NOISE)
    torch.testing.assert_close(sample_prior(clvae, label, 5, seeds, chunk=64), s, atol=BATCH_NOISE, rtol=0)
    alone = sample_prior(clvae, label[1:2], 5, seeds[1:2])
    torch.testing.assert_close(alone[0], s[1], atol=BATCH_NOISE, rtol=0)
    assert not torch.allclose(sample_prior(clvae, label[:1], 5, [seeds[0] + 1])[0], s[0])


def test_gaugan_gives_one_image_per_mask(data):
    ds, idx = data
    _, label = ev.load_pairs(ds, idx[:2])
    s = sample_prior(tiny("gaugan"), label, 7, [0, 1])
    assert s.shape == (2, 1, 3, 64, 64)


def test_reconstruction_decodes_the_encoder_means(clvae, data):
    ds, idx = data
    image, label = ev.load_pairs(ds, idx[:3])
    rec = reconstruct(clvae, image, label, chunk=2)
    with torch.no_grad():
        mu, logvar = clvae.E(image, label)
        torch.testing.assert_close(rec, clvae.G(label, mu), atol=BATCH_NOISE, rtol=0)   # chunk 2 vs batch 3
        sampled = clvae.G(label, Latents.reparameterize(mu, logvar, torch.Generator().manual_seed(0)))
    assert not torch.allclose(rec, sampled, atol=1e-3)
    with pytest.raises(ValueError, match="no encoder"):
        reconstruct(tiny("gaugan"), image, label)


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


def test_columns_name_the_scores_and_are_read_back_from_a_table(clvae, data, metric):
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

def test_evaluate_prior_matches_the_metric_functions_and_tables_name_the_metric(clvae, data, metric):
    ds, idx = data
    fd_real = ev.real_frechet(ds, idx, TinyPool(), progress=False)
    res = ev.evaluate_prior(clvae, ds, idx, metric, ev.PriorOptions(k=4, seed=2, masks_per_batch=3, factors=True),
                            fd_real, progress=False)
    assert list(res.per_image.columns) == ["diversity (lpips_tiny)", "top-1 GT-similarity (lpips_tiny)"]
    assert list(res.per_image.index) == idx
    image, label = ev.load_pairs(ds, idx)
    # the same batches of masks as evaluate_prior (3 + 1), so G runs at the same batch sizes (see BATCH_NOISE)
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

    table = tables.diversity_table({"clvae": res, "again": res})
    assert list(table.columns) == ["diversity (lpips_tiny)", "diversity (lpips_tiny) std",
                                   "diversity (lpips_tiny) ±95%", "top-1 GT-similarity (lpips_tiny)",
                                   "top-1 GT-similarity (lpips_tiny) std",
                                   "top-1 GT-similarity (lpips_tiny) ±95%", "FD (fd_tiny)", "masks", "samples per mask"]
    d = res.per_image.iloc[:, 0]
    half_width = 1.96 * d.std(ddof=1) / len(d) ** 0.5
    assert table.loc["clvae", "diversity (lpips_tiny) ±95%"] == pytest.approx(half_width, rel=1e-3)
    assert table.loc["clvae", "samples per mask"] == 4 and table.loc["clvae", "masks"] == len(idx)
    assert table.loc["clvae", "diversity (lpips_tiny)"] == pytest.approx(res.per_image.iloc[:, 0].mean())
    per_class = tables.per_class_table({"clvae": res})
    assert list(per_class.columns) == ["clvae: diversity (lpips_tiny)", "masks"]
    assert list(per_class.index) == list(synthetic.info().class_names)
    assert per_class["masks"].sum() == res.per_class.notna().to_numpy().sum()
    paired = tables.paired_comparison(res, res)
    assert (paired["difference"] == 0).all()
    assert list(paired.index) == list(res.per_image.columns) + ["colour in class modes (%)", "texture in class set (%)"]


def test_gaugan_diversity_is_zero_by_construction(data, metric):
    ds, idx = data
    res = ev.evaluate_prior(tiny("gaugan"), ds, idx[:2], metric, ev.PriorOptions(k=5), progress=False)
    assert res.k == 1 and (res.per_image.iloc[:, 0] == 0).all()
    present = res.per_class.notna().to_numpy()
    assert present.any() and (res.per_class.to_numpy()[present] == 0).all()


def test_reconstruction_table(clvae, data, metric):
    ds, idx = data
    fd_real = ev.real_frechet(ds, idx, TinyPool(), progress=False)
    res = ev.evaluate_reconstruction(clvae, ds, idx, metric, fd_real, batch=3, keep=2, progress=False)
    image, label = ev.load_pairs(ds, idx)
    recon = torch.cat([reconstruct(clvae, image[m], label[m]) for m in (slice(0, 3), slice(3, 4))])  # batch=3's batches
    want = metric.distance(recon, image).numpy()
    np.testing.assert_allclose(res.per_image["GT-similarity (lpips_tiny)"].to_numpy(), want, rtol=1e-5)
    assert res.examples.shape == (2, 3, 64, 64)
    table = tables.reconstruction_table({"clvae": res})
    assert list(table.columns) == ["GT-similarity (lpips_tiny)", "GT-similarity (lpips_tiny) std",
                                   "GT-similarity (lpips_tiny) ±95%", "FD (fd_tiny)", "images"]
    other = ev.ReconEval("x", "lpips_other", res.per_image)
    with pytest.raises(ValueError, match="different metrics"):
        tables.reconstruction_table({"clvae": res, "x": other})


# ---- factor-aware scores -------------------------------------------------------------------------

def test_evaluate_style_rows_and_chance_baseline(clvae, data):
    ds, idx = data
    guided = ev.evaluate_style(clvae, ds, idx, list(np.roll(idx, 1)), progress=False)
    prior = ev.evaluate_style(clvae, ds, idx, list(np.roll(idx, 1)), guided=False, progress=False)
    assert list(guided.columns) == ["index", "reference", "class", "name", "colour_match", "texture_match"]
    assert (guided["reference"] == guided["index"].map(dict(zip(idx, np.roll(idx, 1))))).all()
    table = tables.style_table({"guided": guided, "prior": prior})
    assert list(table.columns) == ["colour mode = reference (%)", "texture = reference (%)", "both (%)", "regions"]
    assert 0 <= table.loc["guided", "both (%)"] <= 100


# ---- loading, parsing, writing -------------------------------------------------------------------

def test_write_table_and_example_grid(tmp_path, clvae, data):
    table = pd.DataFrame({"diversity (lpips_tiny)": [0.5, 0.25]}, index=pd.Index(["a", "b"], name="variant"))
    md = tables.write_table(table, tmp_path, "t", "A caption.")
    assert md.read_text().startswith("A caption.\n\n| variant | diversity (lpips_tiny) |")
    assert pd.read_csv(tmp_path / "t.csv", index_col=0).loc["b"].iloc[0] == 0.25
    ds, idx = data
    image, label = ev.load_pairs(ds, idx[:2])
    samples = sample_prior(clvae, label, 3, [0, 1])
    g = example_grid(label, image, [samples, image], ds.info.palette, min_tile=0)
    assert g.dtype == np.uint8 and g.shape == (2 * 64 + 2, 6 * 64 + 5 * 2, 3)
    big = example_grid(label, image, [samples, image], ds.info.palette)          # tiles >= 128 px (issue 14.6)
    assert big.shape == (2 * 128 + 2, 6 * 128 + 5 * 2, 3)
    assert np.array_equal(big[:128:2, :128:2], g[:64, :64])                          # nearest: each pixel 2x2
    fig = save_grid(big, tmp_path / "f.png", ["mask", "real", "s1", "s2", "s3", "real"], ["a", "b"], "title")
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["mask", "real", "s1", "s2", "s3", "real"]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["a", "b"] and ax.get_title() == "title"
    centres = ax.get_xticks()
    assert centres[0] == pytest.approx(63.5, abs=1) and centres[1] == pytest.approx(128 + 2 + 63.5, abs=1)
    assert (tmp_path / "f.png").stat().st_size > 1000 and (tmp_path / "f_raw.png").exists()


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
    for m in (slice(0, 2), slice(2, 4)):                              # the same batches of masks (BATCH_NOISE)
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
