"""Tests of smis.evaluate on tiny seeded models: sampling, reconstruction, scoring, tables, factor scores."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from smis import evaluate as ev
from smis.config import get_preset
from smis.data import synthetic
from smis.metrics import LPIPS, FrechetDistance, diversity, per_class_diversity, top1_gt_similarity
from smis.networks import Latents, build_networks

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
    s = ev.sample_prior(clvae, label, 5, seeds, chunk=4)
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
        ev.sample_prior(clvae, lab, 5, sd, chunk=chunk)
        return list(fed)

    try:
        by4, by64, one = codes_fed(label, seeds, 4), codes_fed(label, seeds, 64), codes_fed(label[1:2], seeds[1:2], 64)
    finally:
        hook.remove()
    assert len(by4) == 4 and len(by64) == 1                             # 15 codes in chunks of 4, or at once
    drawn = ev.prior_latents(clvae, label, 5, seeds)
    for got, want in ((Latents.cat(by4), drawn), (by64[0], drawn), (one[0], drawn[5:10])):   # one: mask 1 alone
        assert torch.equal(got.z, want.z) and torch.equal(got.zc, want.zc) and torch.equal(got.present, want.present)
    # so the images differ by the batch-size float noise only (not bitwise: see BATCH_NOISE)
    torch.testing.assert_close(ev.sample_prior(clvae, label, 5, seeds, chunk=64), s, atol=BATCH_NOISE, rtol=0)
    alone = ev.sample_prior(clvae, label[1:2], 5, seeds[1:2])
    torch.testing.assert_close(alone[0], s[1], atol=BATCH_NOISE, rtol=0)
    assert not torch.allclose(ev.sample_prior(clvae, label[:1], 5, [seeds[0] + 1])[0], s[0])


def test_gaugan_gives_one_image_per_mask(data):
    ds, idx = data
    _, label = ev.load_pairs(ds, idx[:2])
    s = ev.sample_prior(tiny("gaugan"), label, 7, [0, 1])
    assert s.shape == (2, 1, 3, 64, 64)


def test_reconstruction_decodes_the_encoder_means(clvae, data):
    ds, idx = data
    image, label = ev.load_pairs(ds, idx[:3])
    rec = ev.reconstruct(clvae, image, label, chunk=2)
    with torch.no_grad():
        mu, logvar = clvae.E(image, label)
        torch.testing.assert_close(rec, clvae.G(label, mu), atol=BATCH_NOISE, rtol=0)   # chunk 2 vs batch 3
        sampled = clvae.G(label, Latents.reparameterize(mu, logvar, torch.Generator().manual_seed(0)))
    assert not torch.allclose(rec, sampled, atol=1e-3)
    with pytest.raises(ValueError, match="no encoder"):
        ev.reconstruct(tiny("gaugan"), image, label)


def test_style_guided_with_a_global_code_only_is_the_reconstruction(data):
    nets = tiny("gaugan_vae")
    ds, idx = data
    image, label = ev.load_pairs(ds, idx[:2])
    guided = ev.style_guided(nets, label, image, label, torch.Generator().manual_seed(3))
    assert torch.allclose(guided, ev.reconstruct(nets, image, label), atol=1e-5)


def test_style_guided_takes_shared_class_codes_from_the_reference(clvae, data):
    ds, idx = data
    image, label = ev.load_pairs(ds, idx[:2])
    g = lambda: torch.Generator().manual_seed(5)
    guided = ev.style_guided(clvae, label, image.flip(0), label.flip(0), g())
    prior = ev.sample_prior(clvae, label, 1, g())[:, 0]
    assert guided.shape == prior.shape == (2, 3, 64, 64)
    assert torch.equal(ev.style_guided(clvae, label, image.flip(0), label.flip(0), g()), guided)
    assert (guided - prior).abs().mean() > 1e-3


# ---- scoring -------------------------------------------------------------------------------------

def test_evaluate_prior_matches_the_metric_functions_and_tables_name_the_metric(clvae, data, metric):
    ds, idx = data
    fd_real = ev.real_frechet(ds, idx, TinyPool(), progress=False)
    res = ev.evaluate_prior(clvae, ds, idx, 4, metric, seed=2, fd_real=fd_real, masks_per_batch=3, factors=True,
                            progress=False)
    assert list(res.per_image.columns) == ["diversity (lpips_tiny)", "top-1 GT-similarity (lpips_tiny)"]
    assert list(res.per_image.index) == idx
    image, label = ev.load_pairs(ds, idx)
    # the same batches of masks as evaluate_prior (3 + 1), so G runs at the same batch sizes (see BATCH_NOISE)
    s = torch.cat([ev.sample_prior(clvae, label[m], 4, [ev.mask_seed(2, i) for i in idx[m]])
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

    table = ev.diversity_table({"clvae": res, "again": res})
    assert list(table.columns) == ["diversity (lpips_tiny)", "diversity (lpips_tiny) std", "diversity (lpips_tiny) ±95%",
                                   "top-1 GT-similarity (lpips_tiny)", "top-1 GT-similarity (lpips_tiny) std",
                                   "top-1 GT-similarity (lpips_tiny) ±95%", "FD (fd_tiny)", "masks", "samples per mask"]
    d = res.per_image.iloc[:, 0]
    assert table.loc["clvae", "diversity (lpips_tiny) ±95%"] == pytest.approx(1.96 * d.std(ddof=1) / len(d) ** 0.5, rel=1e-3)
    assert table.loc["clvae", "samples per mask"] == 4 and table.loc["clvae", "masks"] == len(idx)
    assert table.loc["clvae", "diversity (lpips_tiny)"] == pytest.approx(res.per_image.iloc[:, 0].mean())
    per_class = ev.per_class_table({"clvae": res})
    assert list(per_class.columns) == ["clvae: diversity (lpips_tiny)", "masks"]
    assert list(per_class.index) == list(synthetic.info().class_names)
    assert per_class["masks"].sum() == res.per_class.notna().to_numpy().sum()
    paired = ev.paired_comparison(res, res)
    assert (paired["difference"] == 0).all()
    assert list(paired.index) == list(res.per_image.columns) + ["colour in class modes (%)", "texture in class set (%)"]


def test_gaugan_diversity_is_zero_by_construction(data, metric):
    ds, idx = data
    res = ev.evaluate_prior(tiny("gaugan"), ds, idx[:2], 5, metric, progress=False)
    assert res.k == 1 and (res.per_image.iloc[:, 0] == 0).all()
    present = res.per_class.notna().to_numpy()
    assert present.any() and (res.per_class.to_numpy()[present] == 0).all()


def test_reconstruction_table(clvae, data, metric):
    ds, idx = data
    fd_real = ev.real_frechet(ds, idx, TinyPool(), progress=False)
    res = ev.evaluate_reconstruction(clvae, ds, idx, metric, fd_real, batch=3, keep=2, progress=False)
    image, label = ev.load_pairs(ds, idx)
    recon = torch.cat([ev.reconstruct(clvae, image[m], label[m]) for m in (slice(0, 3), slice(3, 4))])  # batch=3's batches
    want = metric.distance(recon, image).numpy()
    np.testing.assert_allclose(res.per_image["GT-similarity (lpips_tiny)"].to_numpy(), want, rtol=1e-5)
    assert res.examples.shape == (2, 3, 64, 64)
    table = ev.reconstruction_table({"clvae": res})
    assert list(table.columns) == ["GT-similarity (lpips_tiny)", "GT-similarity (lpips_tiny) std",
                                   "GT-similarity (lpips_tiny) ±95%", "FD (fd_tiny)", "images"]
    other = ev.ReconEval("x", "lpips_other", res.per_image)
    with pytest.raises(ValueError, match="different metrics"):
        ev.reconstruction_table({"clvae": res, "x": other})


# ---- factor-aware scores -------------------------------------------------------------------------

def test_real_synthscenes_images_are_in_distribution():
    items = [synthetic.generate(i, 64, 0, "test") for i in range(12)]
    images = np.stack([im for im, _, _ in items])
    labels = np.stack([lab for _, lab, _ in items])
    rows = ev.factor_rows(images, labels)
    assert len(rows) > 40
    assert rows["colour_in"].mean() >= 0.95 and rows["texture_in"].mean() >= 0.95
    truth = np.array([items[i][2]["classes"][str(c)]["colour_mode"] for i, c in zip(rows["image"], rows["class"])])
    assert (rows["colour_mode"].to_numpy() == truth).mean() >= 0.95
    # uniform noise is not a SynthScenes image
    noise = np.random.default_rng(0).integers(0, 256, images.shape, dtype=np.uint8)
    assert ev.factor_rows(noise, labels)["colour_in"].mean() < 0.5


def test_fit_colour_modes_sees_through_tint_and_brightness():
    modes = [(c, m) for c, spec in enumerate(synthetic.CLASSES) for m in range(len(spec.colour_modes))]
    cls = np.array([c for c, _ in modes])
    base = np.array([synthetic.CLASSES[c].colour_modes[m] for c, m in modes])
    tinted = base * synthetic._tint(0.1) * 0.8
    mode, dist = ev.fit_colour_modes(tinted, cls)
    assert (mode == np.array([m for _, m in modes])).all() and dist.max() < 0.02
    mode, dist = ev.fit_colour_modes(np.full_like(base, 0.5) + [0.4, -0.4, 0.0], cls)  # magenta-green: nobody's
    assert (dist > ev.COLOUR_TOLERANCE).mean() > 0.8


def test_style_match_ignores_the_global_factor_and_sees_other_factors():
    image, label, rec = synthetic.generate(3, 64, 0, "test")
    relit = dict(rec, **{"global": {"time_of_day": 0.9, "tint": list(synthetic._tint(0.9)), "brightness": 0.75},
                         "noise_seed": rec["noise_seed"] + 1})
    m = ev.style_match(synthetic.render(label, relit)[None], label[None], image[None], label[None])
    assert len(m) >= 4 and m["colour_match"].all() and m["texture_match"].mean() >= 0.75
    other = synthetic.sample_factors(np.random.default_rng(7), sorted(int(k) for k in rec["classes"]), 64, 64)
    swapped = {c: dict(o, colour_mode=(rec["classes"][c]["colour_mode"] + 1) % len(synthetic.CLASSES[int(c)].colour_modes),
                       colour=list(synthetic.CLASSES[int(c)].colour_modes[(rec["classes"][c]["colour_mode"] + 1)
                                                                          % len(synthetic.CLASSES[int(c)].colour_modes)]))
               for c, o in other["classes"].items()}
    changed = synthetic.render(label, dict(rec, classes=swapped))
    assert ev.style_match(changed[None], label[None], image[None], label[None])["colour_match"].mean() <= 0.2


def test_evaluate_style_rows_and_chance_baseline(clvae, data):
    ds, idx = data
    guided = ev.evaluate_style(clvae, ds, idx, list(np.roll(idx, 1)), progress=False)
    prior = ev.evaluate_style(clvae, ds, idx, list(np.roll(idx, 1)), guided=False, progress=False)
    assert list(guided.columns) == ["index", "reference", "class", "name", "colour_match", "texture_match"]
    assert (guided["reference"] == guided["index"].map(dict(zip(idx, np.roll(idx, 1))))).all()
    table = ev.style_table({"guided": guided, "prior": prior})
    assert list(table.columns) == ["colour mode = reference (%)", "texture = reference (%)", "both (%)", "regions"]
    assert 0 <= table.loc["guided", "both (%)"] <= 100


# ---- loading, parsing, writing -------------------------------------------------------------------

def test_parse_models_and_load_errors(tmp_path):
    assert ev.parse_models("clvae:a.pt, gaugan_vae:official:ade20k:dir,skip:") == \
        {"clvae": "a.pt", "gaugan_vae": "official:ade20k:dir"}
    with pytest.raises(ValueError, match="NAME:SOURCE"):
        ev.parse_models("clvae=a.pt")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        ev.load_networks(tmp_path / "nope.pt")
    (tmp_path / "run").mkdir()
    with pytest.raises(FileNotFoundError, match="no checkpoints"):
        ev.load_networks(tmp_path / "run")


def test_load_networks_from_a_run_folder_and_an_export(tmp_path):
    from smis.train import Trainer, TrainConfig, export_model

    cfg = TrainConfig(run_dir=str(tmp_path / "run"), variant="clvae", preset_overrides=TINY, steps=1, batch_size=2,
                      perceptual="none", data_length=4, device="cpu", tensorboard=False, progress=False)
    trainer = Trainer(cfg)
    trainer.fit()
    nets = ev.load_networks(tmp_path / "run")
    assert nets.variant == "clvae" and not nets.training and nets.meta["step"] == 1
    for a, b in zip(nets.G.state_dict().values(), trainer.nets.G.state_dict().values()):
        assert torch.equal(a, b.cpu())
    export = export_model(sorted((tmp_path / "run" / "checkpoints").glob("*.pt"))[-1], tmp_path / "m.pt", half=False)
    again = ev.load_networks(export)
    assert all(torch.equal(a, b) for a, b in zip(again.G.state_dict().values(), nets.G.state_dict().values()))


def test_write_table_and_example_grid(tmp_path, clvae, data):
    table = pd.DataFrame({"diversity (lpips_tiny)": [0.5, 0.25]}, index=pd.Index(["a", "b"], name="variant"))
    md = ev.write_table(table, tmp_path, "t", "A caption.")
    assert md.read_text().startswith("A caption.\n\n| variant | diversity (lpips_tiny) |")
    assert pd.read_csv(tmp_path / "t.csv", index_col=0).loc["b"].iloc[0] == 0.25
    ds, idx = data
    image, label = ev.load_pairs(ds, idx[:2])
    samples = ev.sample_prior(clvae, label, 3, [0, 1])
    g = ev.example_grid(label, image, [samples, image], ds.info.palette, min_tile=0)
    assert g.dtype == np.uint8 and g.shape == (2 * 64 + 2, 6 * 64 + 5 * 2, 3)
    big = ev.example_grid(label, image, [samples, image], ds.info.palette)          # tiles >= 128 px (issue 14.6)
    assert big.shape == (2 * 128 + 2, 6 * 128 + 5 * 2, 3)
    assert np.array_equal(big[:128:2, :128:2], g[:64, :64])                          # nearest: each pixel 2x2
    from smis.viz import save_grid
    fig = save_grid(big, tmp_path / "f.png", ["mask", "real", "s1", "s2", "s3", "real"], ["a", "b"], "title")
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["mask", "real", "s1", "s2", "s3", "real"]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["a", "b"] and ax.get_title() == "title"
    centres = ax.get_xticks()
    assert centres[0] == pytest.approx(63.5, abs=1) and centres[1] == pytest.approx(128 + 2 + 63.5, abs=1)
    assert (tmp_path / "f.png").stat().st_size > 1000 and (tmp_path / "f_raw.png").exists()


# ---- mask fidelity in the evaluation loops ---------------------------------------------------------

def test_mask_fidelity_columns_match_the_segmenter_on_the_same_images(clvae, data, metric):
    from smis.segmenter import mask_fidelity

    ds, idx = data
    seg = ev.load_segmenter_for("synthscenes")
    assert ev.load_segmenter_for("ade20k") is None and ev.load_segmenter_for("synthscenes", "") is None
    res = ev.evaluate_prior(clvae, ds, idx, 3, metric, seed=4, masks_per_batch=2, per_class=False, progress=False,
                            segmenter=seg)
    assert res.confusion.shape == (len(idx), 10, 10)
    assert res.confusion.sum() == len(idx) * 3 * 64 * 64          # every pixel of every sample counted once
    image, label = ev.load_pairs(ds, idx)
    s = torch.cat([ev.sample_prior(clvae, label[m], 3, [ev.mask_seed(4, i) for i in idx[m]]) for m in (slice(0, 2), slice(2, 4))])
    want = mask_fidelity(seg, s, label)
    table = ev.diversity_table({"clvae": res})
    assert table.loc["clvae", ev.MIOU] == pytest.approx(want["miou"], abs=1e-9)
    assert table.loc["clvae", f"{ev.MIOU} 95% low"] <= want["miou"] <= table.loc["clvae", f"{ev.MIOU} 95% high"]
    real = ev.real_mask_fidelity(seg, ds, idx, progress=False)
    assert ev.miou_columns(real)[ev.MIOU] == pytest.approx(mask_fidelity(seg, image, label)["miou"])
    assert ev.miou_columns(real)[ev.MIOU] > table.loc["clvae", ev.MIOU] + 0.3      # an untrained G ignores its mask
    rec = ev.evaluate_reconstruction(clvae, ds, idx, metric, batch=4, progress=False, segmenter=seg)
    assert rec.confusion.shape == (len(idx), 10, 10) and ev.MIOU in ev.reconstruction_table({"clvae": rec}).columns
    paired = ev.paired_comparison(res, res)
    assert paired.loc[ev.MIOU, "difference"] == 0 and paired.loc[ev.MIOU, "masks"] == len(idx)
    with pytest.raises(FileNotFoundError, match="train_segmenter"):
        ev.load_segmenter_for("synthscenes", "nowhere/seg.pt")
