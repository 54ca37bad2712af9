"""smis.comparison on constructed inputs whose answers are known: the class co-change rate on drawn images,
the class-count trend on diversities with a planted slope, the statements' verdicts and the table of every
system against clvae."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from conftest import EVAL_TINY
from smis import comparison as cmp
from smis import tables
from smis.data.synthetic import CLASSES, tint
from smis.evaluate import Columns, PriorEval
from smis.factors import factor_rows

STRIPE_CLASSES = (0, 2, 4, 6)          # sky, water, disc, triangle: one 16-px column each, two colour modes each
METRIC = "lpips_test"
COLS = Columns(METRIC, "fd_test")


def stripes(modes, t=None) -> np.ndarray:
    """A 64x64 uint8 image: class STRIPE_CLASSES[i] in colour mode modes[i], flat, under tint t (None: none)."""
    im = np.zeros((64, 64, 3))
    for i, c in enumerate(STRIPE_CLASSES):
        im[:, 16 * i:16 * i + 16] = np.array(CLASSES[c].colour_modes[modes[i]]) * (1 if t is None else tint(t))
    return (np.clip(im, 0, 1) * 255).round().astype(np.uint8)


def stripe_label() -> np.ndarray:
    lab = np.zeros((64, 64), np.int64)
    for i, c in enumerate(STRIPE_CLASSES):
        lab[:, 16 * i:16 * i + 16] = c
    return lab


def factors_of(masks: dict[int, list[np.ndarray]]) -> pd.DataFrame:
    """Factor rows (smis.factors.factor_rows) of the K images of each mask, with "index" and "sample" columns
    as smis.evaluate.SampleFactors writes them."""
    parts = []
    for index, images in masks.items():
        f = factor_rows(np.stack(images), np.stack([stripe_label()] * len(images)))
        f.insert(0, "sample", f.pop("image"))
        f.insert(0, "index", index)
        parts.append(f)
    return pd.concat(parts, ignore_index=True)


def test_co_change_is_one_for_global_changes_and_zero_for_one_class_changes():
    factors = factors_of({
        0: [stripes([0, 0, 0, 0]), stripes([1, 1, 1, 1])],          # every class changes mode together
        1: [stripes([0, 0, 0, 0]), stripes([1, 0, 0, 0])],          # one class changes alone
        2: [stripes([0, 0, 0, 0], 0.0), stripes([0, 0, 0, 0], 1.0)],   # a global tint only: no mode changes
        3: [stripes([0, 0, 0, 0]), stripes([1, 1, 0, 0]), stripes([1, 1, 0, 0])],
    })
    r = cmp.co_change_rates(factors)
    assert r.loc[0, cmp.CO_CHANGE] == 1.0 and r.loc[0, "trigger pairs"] == 4 * 3
    assert r.loc[1, cmp.CO_CHANGE] == 0.0 and r.loc[1, "trigger pairs"] == 3
    assert np.isnan(r.loc[2, cmp.CO_CHANGE]) and r.loc[2, "trigger pairs"] == 0
    # pairs (0,1), (0,2): 2 of 4 classes change -> 2 co-changes of 2 x 3 each; pair (1,2): nothing changes
    assert r.loc[3, cmp.CO_CHANGE] == pytest.approx(4 / 12)


def test_co_change_counts_only_classes_found_in_both_samples():
    f = pd.DataFrame({"index": [5] * 5, "sample": [0, 0, 0, 1, 1], "class": [0, 1, 2, 0, 1],
                      "colour_mode": [0, 0, 0, 1, 1]})
    r = cmp.co_change_rates(f)                     # class 2 missing in sample 1: v = 2, n = 2 -> 2 / 2
    assert r.loc[5, cmp.CO_CHANGE] == 1.0 and r.loc[5, "trigger pairs"] == 2


def prior_eval(variant, diversity, top1=None, factors=None, fd=None, k=4, confusion=None) -> PriorEval:
    idx = pd.Index(range(len(diversity)), name="index")
    per = pd.DataFrame({COLS.diversity: diversity, COLS.top1: diversity if top1 is None else top1}, index=idx)
    return PriorEval(variant, METRIC, k, per, factors=factors, fd=fd, fd_name="fd_test", confusion=confusion)


def test_class_count_trend_recovers_a_planted_slope_relative_to_the_reference():
    rng = np.random.default_rng(0)
    n = pd.Series(rng.integers(2, 8, 300), index=pd.Index(range(300), name="index"))
    ref = rng.uniform(0.2, 0.4, 300) * np.exp(-0.05 * n.to_numpy())       # the reference falls too
    falls = ref * np.exp(-0.1 * n.to_numpy() + rng.normal(0, 0.05, 300))
    bins, t = cmp.class_count_trend(prior_eval("groupdnet", falls), prior_eval("clvae", ref), n, replicates=500)
    assert t["CI low"] < -0.1 < t["CI high"] < 0 and t["masks"] == 300 and t["classes"] == list(range(2, 8))
    assert list(bins.index) == list(range(2, 8)) and bins["masks"].sum() == 300
    assert (bins["difference"] < 0).all() and bins["difference"].is_monotonic_decreasing   # the gap widens
    _, flat = cmp.class_count_trend(prior_eval("groupdnet", 0.5 * ref), prior_eval("clvae", ref), n, replicates=200)
    assert flat["slope"] == pytest.approx(0, abs=1e-9)      # a uniform factor is no trend


def test_statements_read_their_verdicts_from_the_intervals():
    rng = np.random.default_rng(1)
    M = 40
    n = pd.Series(rng.integers(2, 8, M), index=pd.Index(range(M), name="index"))
    base = rng.uniform(0.2, 0.4, M)
    glob = factors_of({i: [stripes([0] * 4), stripes([1] * 4), stripes([0] * 4)] for i in range(M)})
    local = factors_of({i: [stripes([0] * 4), stripes([1, 0, 0, 0]), stripes([0, 1, 0, 0])] for i in range(M)})
    results = {"clvae": prior_eval("clvae", base, factors=local, k=3),
               "cimle": prior_eval("cimle", base, factors=glob, k=3),
               "groupdnet": prior_eval("groupdnet", base * np.exp(-0.2 * n.to_numpy()), k=3),
               "gaugan_vae": prior_eval("gaugan_vae", base, top1=base, fd=10.0),
               "gaugan_vae_lowkl": prior_eval("gaugan_vae_lowkl", base - 0.05 + rng.normal(0, 0.01, M),
                                              top1=base + 0.1 + rng.normal(0, 0.01, M), fd=12.0)}
    s = cmp.statements(results, n).set_index(["statement", "part"])
    assert s.loc[(cmp.CIMLE_GLOBAL, "co-change above clvae's"), "verdict"] == cmp.HOLDS
    # cimle: every change is global (1); clvae: pairs (0,1), (0,2) one class alone (0 of 3 each), pair (1,2) two of
    # four classes (2 of 6): 2 / 12
    assert s.loc[(cmp.CIMLE_GLOBAL, "co-change above clvae's"), "value"] == pytest.approx(1 - 2 / 12)
    g = s.xs(cmp.GROUPDNET_CLASSES, level=0).iloc[0]
    assert g["verdict"] == cmp.HOLDS and g["value"] == pytest.approx(-0.2)
    low = s.xs(cmp.LOWKL_TRADE, level=0)
    assert low.loc["more diverse", "verdict"].startswith(cmp.FAILS + " (the opposite")
    assert low.loc["worse top-1 GT-similarity (higher)", "verdict"] == cmp.HOLDS
    assert low.loc["worse FD (higher)", "value"] == 2.0 and np.isnan(low.loc["worse FD (higher)", "CI low"])
    assert low.loc["all parts with an interval", "verdict"] == cmp.FAILS
    text = cmp.findings(cmp.statements(results, n))
    assert len(text) == 3 and all("**" in t for t in text) and "-0.200" in text[1]
    assert text[2].startswith("*GauGAN-VAE\\* is more diverse")       # Markdown: the star is not emphasis
    # a system that was not evaluated: its statement is left out, not guessed
    assert cmp.statements({"clvae": results["clvae"]}, n).empty


def test_every_system_against_clvae_is_the_paired_comparison_of_each():
    rng = np.random.default_rng(2)
    conf = rng.integers(0, 50, (20, 3, 3)).astype(np.float64)
    a = prior_eval("clvae", rng.uniform(0.2, 0.4, 20), fd=5.0, confusion=conf)
    b = prior_eval("groupdnet", rng.uniform(0.1, 0.3, 20), fd=7.5, confusion=conf[::-1].copy())
    c = prior_eval("gaugan", np.zeros(20), k=1, fd=9.0)
    t = cmp.systems_vs_reference({"clvae": a, "groupdnet": b, "gaugan": c})
    assert list(t.index.get_level_values("system").unique()) == ["groupdnet", "gaugan"]
    p = tables.paired_comparison(b, a)
    for score in (COLS.diversity, COLS.top1, tables.MIOU):
        row = t.loc[("groupdnet", score)]
        assert row["difference"] == pytest.approx(p.loc[score, "difference"])
        assert row["CI low"] == pytest.approx(p.loc[score, "CI low"])
        assert row["clvae"] == pytest.approx(p.loc[score, "clvae"])
    assert t.loc[("groupdnet", COLS.fd), "difference"] == 2.5 and np.isnan(t.loc[("groupdnet", COLS.fd), "CI low"])
    assert tables.MIOU not in t.loc["gaugan"].index                  # gaugan was scored without a segmenter
    with pytest.raises(ValueError, match="no 'clvae' among"):
        cmp.systems_vs_reference({"groupdnet": b})


# ---- notebook 04 with every system ------------------------------------------------------------------------



def write_tiny_model(variant: str, path) -> str:
    """A seeded, untrained tiny model of `variant` in the exported-model format (smis.checkpoint.load_model)."""
    from dataclasses import asdict

    import torch

    from smis.checkpoint import MODEL_FORMAT
    from smis.config import get_preset
    from smis.networks import build_networks
    from smis.utils import atomic_torch_save, plain_data

    torch.manual_seed(0)
    preset = get_preset("synthscenes", **EVAL_TINY)
    nets = build_networks(variant, preset, discriminator=False)
    atomic_torch_save({"format": MODEL_FORMAT, "variant": variant, "preset": plain_data(asdict(preset)), "step": 0,
                       "G": nets.G.state_dict(), "E": None if nets.E is None else nets.E.state_dict(),
                       "train_config": {}, "perceptual": None}, path)
    return f"{variant}:{path}"


@pytest.mark.slow
def test_notebook_04_smoke_with_every_system(tmp_path):
    """Notebook 04 (SMOKE) with clvae, gaugan_vae, GauGAN-VAE*, GroupDNet and cIMLE: a row per system in Table 2 and
    in the table against clvae, the statements table, the all-systems figure; cIMLE (no encoder) is skipped in
    style-guided synthesis with its reason, not a crash."""
    import json

    from smis.reproduce.cli import main

    models = ",".join(write_tiny_model(v, tmp_path / f"{v}.pt")
                      for v in ("clvae", "gaugan_vae", "gaugan_vae_lowkl", "groupdnet", "cimle"))
    main(["--profile", "smoke", "--only", "04", "--out", str(tmp_path / "run"),
          "--set", f"MODELS={json.dumps(models)}"])
    out = tmp_path / "run" / "smoke" / "04_diversity_rq2"
    t2 = pd.read_csv(out / "table2_diversity_top1.csv", index_col=0)
    assert list(t2.index[:5]) == ["clvae", "gaugan_vae", "gaugan_vae_lowkl", "groupdnet", "cimle"]
    versus = pd.read_csv(out / "systems_vs_clvae.csv", index_col=[0, 1])
    assert set(versus.index.get_level_values(0)) == {"gaugan_vae", "gaugan_vae_lowkl", "groupdnet", "cimle"}
    assert versus.index.get_level_values(1).str.startswith("FD (").any()
    found = pd.read_csv(out / "statements.csv", index_col=[0, 1])
    assert set(found.index.get_level_values(0)) == {cmp.CIMLE_GLOBAL, cmp.GROUPDNET_CLASSES, cmp.LOWKL_TRADE}
    assert found["verdict"].str.startswith((cmp.HOLDS, cmp.FAILS)).all()
    assert "cimle: guided" not in pd.read_csv(out / "style_guided_factors.csv", index_col=0).index
    assert (out / "class_independence.csv").exists() and (out / "groupdnet_diversity_by_classes.csv").exists()
    from PIL import Image
    w, h = Image.open(out / "fig_all_systems_raw.png").size
    assert w >= 128 * (2 + 5 * 2) and h >= 128 * 2                  # mask, real, 2 samples x 5 systems; 2 masks
    nb = (tmp_path / "run" / "smoke" / "04_diversity_rq2.ipynb").read_text()
    assert "cimle: skipped: cIMLE (variant 'cimle') cannot do style-guided synthesis" in nb


def test_demo_results_renders_every_system_and_the_statements(tmp_path):
    """scripts/demo_results.py reads the tables notebook 04 writes (as it writes them) and renders a row per
    system against clvae and the statements' sentences; a run without them renders nothing extra."""
    import importlib.util

    from smis.utils import project_root

    spec = importlib.util.spec_from_file_location("demo_results", project_root() / "scripts" / "demo_results.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    rng = np.random.default_rng(3)
    M = 12
    n = pd.Series(rng.integers(2, 6, M), index=pd.Index(range(M), name="index"))
    f = factors_of({i: [stripes([0] * 4), stripes([1, 0, 0, 0]), stripes([1] * 4)] for i in range(M)})
    results = {v: prior_eval(v, rng.uniform(0.1, 0.4, M), factors=f, k=3, fd=float(i))
               for i, v in enumerate(("clvae", "gaugan_vae", "gaugan_vae_lowkl", "groupdnet", "cimle"))}
    found = cmp.statements(results, n)
    tables.write_table(cmp.systems_vs_reference(results), tmp_path, "systems_vs_clvae")
    tables.write_table(found.set_index(["statement", "part"]), tmp_path, "statements")
    tables.write_table(cmp.class_independence_table(results), tmp_path, "class_independence")
    tables.write_table(cmp.class_count_trend(results["groupdnet"], results["clvae"], n)[0], tmp_path,
                       "groupdnet_diversity_by_classes")
    d = mod.collect_systems(tmp_path)
    lines = mod.systems(d, COLS)
    text = "\n".join(lines)
    for v in ("gaugan_vae", "gaugan_vae_lowkl", "groupdnet", "cimle"):
        assert sum(line.startswith(f"| {v} | ") for line in lines) == 1, v
    fd_cell = f"{results['cimle'].fd - results['clvae'].fd:+.2f} (no interval)"
    assert fd_cell in next(line for line in lines if line.startswith("| cimle | "))
    for t in cmp.findings(found):
        assert "- " + t in lines
    assert f"clvae {cmp.class_independence_table(results).iloc[0, 0]:.3f}" in text
    assert mod.systems(mod.collect_systems(tmp_path / "none"), COLS) == []


def test_adding_systems_leaves_the_existing_rows_unchanged():
    """A model's scores depend on its masks and per-mask seeds only (smis.evaluate.mask_seed), not on which
    systems were evaluated before it nor on the global RNG: clvae alone and clvae after groupdnet and cimle give
    the same numbers (same process, same batch sizes)."""
    import torch
    from torch import nn

    from smis import evaluate as ev
    from smis.config import get_preset
    from smis.metrics import LPIPS
    from smis.networks import build_networks

    class Trunk(nn.Module):
        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.a, self.b = nn.Conv2d(3, 6, 3, 2, 1), nn.Conv2d(6, 8, 3, 2, 1)

        def forward(self, x):
            h = torch.relu(self.a(x))
            return [h, torch.relu(self.b(h))]

    def tiny(v):
        torch.manual_seed(0)
        return build_networks(v, get_preset("synthscenes", **EVAL_TINY), discriminator=False).eval()

    data, indices = ev.test_set("synthscenes", "", "test", 64, 3)
    metric = LPIPS(Trunk(), device="cpu", name="lpips_tiny")
    options = ev.PriorOptions(k=3, masks_per_batch=2, chunk=8, factors=True)
    alone = ev.evaluate_prior(tiny("clvae"), data, indices, metric, options, progress=False)
    for v in ("groupdnet", "cimle"):
        ev.evaluate_prior(tiny(v), data, indices, metric, options, progress=False)
    torch.manual_seed(123)                                  # the global RNG moved on: no effect either
    after = ev.evaluate_prior(tiny("clvae"), data, indices, metric, options, progress=False)
    pd.testing.assert_frame_equal(alone.per_image, after.per_image)
    pd.testing.assert_frame_equal(alone.factors, after.factors)
    assert torch.equal(alone.examples, after.examples)


def test_paired_fd_interval_matches_the_fd_and_resolves_a_shift():
    from smis.metrics import frechet_distance

    rng = np.random.default_rng(4)
    real = rng.normal(size=(200, 16))
    stats = (real.mean(0), np.cov(real, rowvar=False))
    a = rng.normal(size=(40, 16))
    r = cmp.fd_paired_interval(a, a + 0.8, stats)                    # b: every feature shifted, FD much higher
    assert r["a"] == pytest.approx(frechet_distance(a.mean(0), np.cov(a, rowvar=False), *stats), rel=1e-6)
    assert r["b"] == pytest.approx(frechet_distance((a + 0.8).mean(0), np.cov(a, rowvar=False), *stats), rel=1e-6)
    assert r["CI low"] <= r["difference"] <= r["CI high"] < 0 and r["masks"] == 40
    same = cmp.fd_paired_interval(a, a.copy(), stats)
    assert same["difference"] == 0 and same["CI low"] == pytest.approx(0, abs=1e-9)
    noise = cmp.fd_paired_interval(a, rng.normal(size=(40, 16)), stats)        # two draws of one distribution
    assert noise["CI low"] < 0 < noise["CI high"]
    # resampling weights: an integer resample of the masks is the FD of the resampled features
    idx = rng.integers(0, 40, 40)
    w = np.bincount(idx, minlength=40)[None].astype(float)
    assert cmp._fd_replicates(a, w, *stats)[0] == pytest.approx(
        frechet_distance(a[idx].mean(0), np.cov(a[idx], rowvar=False), *stats), rel=1e-6)
    with pytest.raises(ValueError, match="same >= 3 masks"):
        cmp.fd_paired_interval(a, a[:10], stats)
    # through the table and the statement: the FD row gets the interval when fd_real is given
    e = {v: prior_eval(v, rng.uniform(0.2, 0.3, 40), fd=f) for v, f in (("clvae", r["a"]), ("gaugan_vae", r["a"]))}
    e["gaugan_vae_lowkl"] = prior_eval("gaugan_vae_lowkl", rng.uniform(0.2, 0.3, 40), fd=r["b"])
    e["clvae"].fd_features = e["gaugan_vae"].fd_features = a
    e["gaugan_vae_lowkl"].fd_features = a + 0.8
    row = cmp.systems_vs_reference(e, fd_real=stats).loc[("gaugan_vae_lowkl", COLS.fd)]
    assert row["CI high"] == pytest.approx(-r["CI low"]) and row["difference"] == pytest.approx(-r["difference"])
    s = cmp.statements(e, fd_real=stats).set_index("part")
    assert s.loc["worse FD (higher)", "verdict"] == cmp.HOLDS


def test_generator_chunk_is_capped_for_memory_bound_families_on_the_cpu_only():
    """GroupDNet and cIMLE generate 16 and 8 images a pass on a CPU (faster there), others keep the asked chunk (their
    numbers unchanged); the codes never depend on it and the images only in the last float bits."""
    import torch

    from smis import evaluate as ev
    from smis.config import get_preset
    from smis.networks import build_networks
    from smis.sampling import sample_prior

    torch.manual_seed(0)
    nets = {v: build_networks(v, get_preset("synthscenes", **EVAL_TINY), discriminator=False).eval()
            for v in ("clvae", "groupdnet", "cimle")}
    assert [ev.generator_chunk(n, 64) for n in nets.values()] == [64, 16, 8]
    assert ev.generator_chunk(nets["groupdnet"], 8) == 8
    data, indices = ev.test_set("synthscenes", "", "test", 64, 2)
    _, label = ev.load_pairs(data, indices)
    for v in ("groupdnet", "cimle"):
        a = sample_prior(nets[v], label, 20, [0, 1], 64)
        b = sample_prior(nets[v], label, 20, [0, 1], 16)
        assert (a - b).abs().max() < 2e-5                     # BATCH_NOISE of tests/test_sampling.py


def test_evaluation_layout_puts_only_the_listed_families_in_channels_last_and_keeps_their_images():
    """GroupDNet's and cIMLE's generators evaluate in channels_last on a CPU (faster there); clvae stays NCHW (its
    numbers unchanged); the images move only in the last float bits."""
    import torch

    from smis import evaluate as ev
    from smis.config import get_preset
    from smis.networks import build_networks
    from smis.sampling import sample_prior

    data, indices = ev.test_set("synthscenes", "", "test", 64, 2)
    _, label = ev.load_pairs(data, indices)
    for v in ("clvae", "groupdnet", "cimle"):
        torch.manual_seed(0)
        nets = build_networks(v, get_preset("synthscenes", **EVAL_TINY), discriminator=False).eval()
        before = sample_prior(nets, label, 4, [0, 1], 8)
        assert ev.evaluation_layout(nets) is nets
        weights = [p for p in nets.G.parameters() if p.dim() == 4]
        last = [w.is_contiguous(memory_format=torch.channels_last) and not w.is_contiguous() for w in weights]
        assert weights and (any(last) if v != "clvae" else not any(last)), v
        after = sample_prior(nets, label, 4, [0, 1], 8)
        assert (after - before).abs().max() < 2e-5, v
