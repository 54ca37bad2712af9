"""Tests of smis.edit_measures: the locality / factor measurements against generators whose answer is known,
the editing report as the composition of its steps, the layer table, split and experiment, the findings."""
from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch

from smis import diagnostics, edit_measures, editing, sampling, stats
from smis.networks import Latents, cse_map
from test_editing import C, stripes, tiny_clvae


@pytest.fixture(scope="module")
def nets():
    return tiny_clvae()


# -- measurements against generators whose answer is known ------------------------------------------

def fake_nets(kind: str, L: int = 2, K: int = C, N: int = 3):
    """A stand-in generator: 'local' paints each class from its own codes only (a perfectly local edit);
    'global' adds the mean of all codes everywhere; 'factors' uses layer 1 as colour, layer 0 as the
    amplitude of a fine checker (texture)."""
    spec = SimpleNamespace(num_classes=K, layers=tuple(range(1, L + 1)), z_dim=4, z_dim_local=N, has_class_codes=True,
                           code_classes=K, classwise=True,
                           presence=lambda lab: torch.ones(lab.shape[0], L, K, dtype=torch.bool))

    def G(label, z):
        if kind == "local":
            return torch.tanh(cse_map(z.zc.sum(1), label))                 # (B, 3, H, W) with N = 3
        if kind == "global":
            return z.zc.mean((1, 2, 3))[:, None, None, None] + label[:, None].float().expand(-1, 3, -1, -1) / 10
        colour = torch.sigmoid(cse_map(z.zc[:, 1], label))                  # (B, 3, H, W)
        amp = 0.3 * torch.sigmoid(cse_map(z.zc[:, 0], label)[:, :1])
        H, W = label.shape[-2:]
        checker = ((torch.arange(H)[:, None] + torch.arange(W)[None]) % 2 * 2 - 1).float()
        return (colour * (1 + amp * checker)).clamp(0, 1) * 2 - 1
    return SimpleNamespace(G=G, spec=spec)


def fake_latents(B, L=2, K=C, N=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return Latents(torch.randn(B, 4, generator=g), torch.randn(B, L, K, N, generator=g),
                   torch.ones(B, L, K, dtype=torch.bool))


def test_edit_locality_is_one_for_a_local_generator_and_area_for_a_global_one():
    label = stripes(4, [[0, 1, 2, 3], [1, 2, 3, 4], [4, 5, 6, 7], [7, 8, 9, 0]])
    lat = fake_latents(4)
    cls = torch.tensor([1, 2, 5, 0])
    r = edit_measures.edit_locality(fake_nets("local"), label, lat, cls, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(r["inside"], torch.ones(4)) and torch.allclose(r["near"], torch.ones(4))
    assert torch.allclose(r["area"], torch.full((4,), 0.25)) and (r["change"] > 0).all()
    r = edit_measures.edit_locality(fake_nets("global"), label, lat, cls, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(r["inside"], torch.full((4,), 0.25), atol=1e-5)     # spread evenly: the area share
    assert (r["near"] > r["inside"]).all()
    # editing only layer 0 of the local generator: still inside; and the right codes were changed
    r0 = edit_measures.edit_locality(fake_nets("local"), label, lat, cls, layers=[0],
                               generator=torch.Generator().manual_seed(0))
    assert torch.allclose(r0["inside"], torch.ones(4))


def test_layer_factor_effects_separate_colour_and_texture_layers():
    label = stripes(6, [[0, 1]] * 6)
    lat = fake_latents(6)
    cls = torch.tensor([0, 1, 0, 1, 0, 1])
    g = torch.Generator().manual_seed(0)
    calls = []

    def estimate(image, lab):                                             # colour mode: which channel is largest
        calls.append(image.dtype)
        reg = lab == 0
        return {0: {"colour_mode": int(image[reg].mean(0).argmax()), "texture": "flat"}}
    fine, coarse = torch.zeros(6, dtype=torch.long), torch.ones(6, dtype=torch.long)
    texture = edit_measures.layer_factor_effects(fake_nets("factors"), label, lat, cls, fine, g, estimate)
    colour = edit_measures.layer_factor_effects(fake_nets("factors"), label, lat, cls, coarse, g, estimate)
    assert np.allclose(texture["colour_shift"], 0, atol=0.05) and (colour["colour_shift"] > 0.05).mean() > 0.8
    assert (texture["hf_change"] > 0.05).mean() > 0.8
    assert colour["colour_shift"].mean() > 5 * texture["colour_shift"].mean()
    assert texture["texture_changed"][cls.numpy() == 0].tolist() == [0.0, 0.0, 0.0]
    assert np.isnan(texture["mode_changed"][cls.numpy() == 1]).all()      # class 1 not estimated
    assert set(calls) == {np.dtype(np.uint8)}


def test_editing_report_on_a_tiny_model(nets):
    from smis.data import make_dataset
    ds = make_dataset("synthscenes", None, "test", size=64, length=4)
    images, labels, mu = editing.encode_dataset(nets, ds, batch_size=3)
    assert images.shape == (4, 3, 64, 64) and mu.zc.shape[:3] == (4, 5, C)
    rep = edit_measures.editing_report(nets, labels, mu, torch.Generator().manual_seed(0), batch_size=64)
    samples, classes = edit_measures.edit_cases(labels, C)
    assert rep["cases"] == len(samples) >= 16 and rep["images"] == 4
    assert 0 <= rep["locality"]["inside"] <= rep["locality"]["near"] <= 1
    assert [r["layer"] for r in rep["layers"]] == list(range(5))
    assert rep["layers"][0]["cases"] == len(samples)                     # every class is visible at the finest scale
    assert rep["layers"][4]["cases"] < len(samples)                      # small objects vanish at 1/32
    post = diagnostics.layer_posteriors(nets, images, labels, batch_size=3)
    mu_all, logvar = nets.E(images, labels)                              # by hand: Eq. 18's class term per layer
    per = -0.5 * (1 + logvar.zc - mu_all.zc ** 2 - logvar.zc.exp()).sum(-1)            # (M, L, K)
    p = mu_all.present.float()
    want = ((per * p).sum(-1) / p.sum(-1).clamp(min=1)).mean(0)
    np.testing.assert_allclose(post["kl"], want.detach().numpy(), rtol=1e-4)
    table = edit_measures.layer_table(nets, rep, post)
    assert list(table.index) == list(range(5)) and list(table["encoder layer"]) == [1, 2, 3, 4, 5]
    assert list(table["generator blocks"]) == ["up_2", "up_1", "up_0", "G_middle_0, G_middle_1", "head_0"]
    assert np.allclose(table["KL"], post["kl"]) and (table["mean |mu|"] >= 0).all()
    # the report is the composition of its named steps, drawing from one generator in this order
    g = torch.Generator().manual_seed(0)
    s, c = edit_measures.editable_cases(labels, mu, C)
    assert torch.equal(s, samples) and torch.equal(c, classes)            # every class of these masks is coded
    assert edit_measures.locality_summary(nets, labels, mu, s, c, g, batch_size=64) == rep["locality"]
    assert edit_measures.layer_effects(nets, labels, mu, s, c, g, batch_size=64) == rep["layers"]
    i, cc, ll = edit_measures.layer_cases(nets, labels, s, c)
    per_layer = torch.tensor([r["cases"] for r in rep["layers"]])
    assert len(i) == len(cc) == per_layer.sum() and torch.equal(torch.bincount(ll, minlength=5), per_layer)
    # notebook 06's tables and "What we learnt" lines come from the library
    loc = edit_measures.locality_table({"clvae": rep})
    assert list(loc.columns) == ["cases", "inside", "near", "area", "change", "inside_median"]
    assert loc.loc["clvae", "cases"] == rep["cases"] and loc.loc["clvae", "inside"] == rep["locality"]["inside"]
    lines = edit_measures.findings({"clvae": rep}, table.round(3), editor_ms=41.6, threads=2)
    assert len(lines) == 4 and all(line.startswith("- ") for line in lines)
    assert f"{100 * rep['locality']['inside']:.0f} % of the pixel change inside" in lines[0]
    assert "baseline" not in lines[0] and "median 42 ms per slider update here (2 thread(s))" in lines[3]
    assert len(edit_measures.findings({"clvae": rep, "gaugan_vae": rep}, table.round(3))) == 3
    both = {"clvae": rep, "gaugan_vae": rep}
    assert "the baseline without class codes puts" in edit_measures.findings(both, table)[0]
    with pytest.raises(ValueError, match="no class covers 10000 pixels"):
        edit_measures.editing_report(nets, labels, mu, g, min_pixels=10000)


def test_findings_say_whether_the_papers_split_appears():
    rep = {"locality": {"inside": 0.8, "near": 0.9, "area": 0.2}}
    layers = pd.DataFrame({"encoder layer": [1, 5], "generator blocks": ["up_2", "head_0"],
                           "colour mode changed": [0.1, 0.6], "texture kind changed": [0.5, 0.2], "KL": [0.2, 0.01]})
    lines = edit_measures.findings({"clvae": rep}, layers)
    assert lines[0].startswith("- Object edits are local: resampling one class's codes puts 80 % of the pixel change")
    assert "colour mode changed in 60 % of edits, texture kind in 20 %, KL 0.010" in lines[1]
    assert "**appears** here. Latent layers [1] have collapsed to the prior (KL < 0.05)" in lines[2]
    layers["texture kind changed"] = [0.1, 0.2]
    layers["KL"] = [0.2, 0.3]
    assert "**does not appear** here. No latent layer has collapsed (every KL >= 0.05)." in edit_measures.findings(
        {"clvae": rep}, layers)[2]


def test_editing_report_generates_each_unedited_photo_once_with_the_same_numbers():
    """The unedited image of a photo is generated once (`reconstructions`), not once per edited class and
    layer; the report's numbers are those of generating it with every case (the stand-in G is exact per image)."""
    nets = fake_nets("factors", L=3)
    images_made = []
    G = nets.G
    nets.G = lambda label, z: (images_made.append(label.shape[0]), G(label, z))[1]
    label = stripes(5, [[0, 1, 2, 3], [1, 4, 5, 6], [0, 7, 8, 2], [3, 9, 1, 5], [6, 2, 8, 4]])
    lat = fake_latents(5, L=3)
    rep = edit_measures.editing_report(nets, label, lat, torch.Generator().manual_seed(0), batch_size=4)
    samples, classes = edit_measures.editable_cases(label, lat, C)
    cases_i, cases_c, cases_l = edit_measures.layer_cases(nets, label, samples, classes)
    assert len(samples) == 20 and len(cases_i) == 60
    assert sum(images_made) == 5 + len(samples) + len(cases_i)           # was 2 x (20 + 60)
    # the same cases, each generated together with its unedited image (edit_locality / layer_factor_effects
    # without `before`), drawing from the same generator in the same order
    g = torch.Generator().manual_seed(0)
    loc = [edit_measures.edit_locality(nets, label[samples[s]], lat[samples[s]], classes[s], generator=g)
           for s in sampling.chunks(len(samples), 4)]
    loc = {k: torch.cat([r[k] for r in loc]) for k in loc[0]}
    ok = loc["change"] > 0
    for k in ("inside", "near", "area", "change"):
        assert rep["locality"][k] == float(loc[k][ok].mean())
    eff = [edit_measures.layer_factor_effects(nets, label[cases_i[s]], lat[cases_i[s]], cases_c[s], cases_l[s], g)
           for s in sampling.chunks(len(cases_i), 4)]
    eff = {k: np.concatenate([r[k] for r in eff]) for k in eff[0]}
    for row in rep["layers"]:
        m = cases_l.numpy() == row["layer"]
        assert row["cases"] == int(m.sum())
        for k in ("colour_shift", "hf_change", "mode_changed", "texture_changed"):
            np.testing.assert_array_equal(row[k], np.nanmean(eff[k][m]))
    with pytest.raises(ValueError, match="one unedited image"):
        edit_measures.edit_locality(nets, label[:2], lat[:2], torch.tensor([0, 1]),
                                    before=torch.zeros(3, 3, 64, 64))


def _layer_rows(shares):
    """A layer table's records from {layer: (colour, texture, shading)} shares of 200 edits each, with the
    Wilson intervals the editing report gives them."""
    rows = []
    for l, vals in shares.items():
        row = {"layer": l}
        for f, v in zip(("colour mode", "texture kind", "shading"), vals):
            lo, hi = stats.wilson_interval(np.array([round(200 * v)]), np.array([200]))
            row.update({f"{f} changed": v, f"{f} changed lo": float(lo[0]), f"{f} changed hi": float(hi[0])})
        rows.append(row)
    return pd.DataFrame(rows)


def test_layer_split_needs_separated_intervals_at_both_ends():
    from smis.edit_measures import layer_split
    paper_like = {0: (0.05, 0.40, 0.03), 1: (0.1, 0.1, 0.1), 2: (0.1, 0.05, 0.1), 3: (0.30, 0.02, 0.25),
                  4: (0.0, 0.0, 0.0)}
    split = layer_split(_layer_rows(paper_like))
    assert split["appears"] and split["coarse_layers"] == [3, 4] and "appears" in split["sentence"]
    fine_colour = {**paper_like, 0: (0.35, 0.02, 0.2)}          # layer 0 moves colour, not texture: no split
    split = layer_split(_layer_rows(fine_colour))
    assert not split["appears"] and split["coarse_moves_appearance"] and not split["fine_moves_texture"]
    assert "colour mode most (35 %)" in split["sentence"]
    dead_coarse = {**paper_like, 3: (0.0, 0.0, 0.0)}            # only dead coarse layers
    split = layer_split(_layer_rows(dead_coarse))
    assert not split["coarse_moves_appearance"] and "none of their edits" in split["sentence"]
    close = {**paper_like, 3: (0.04, 0.02, 0.03)}               # 8 vs 4 of 200: the intervals overlap
    assert not layer_split(_layer_rows(close))["coarse_moves_appearance"]


def test_layer_experiment_counts_only_losses_whose_interval_is_off_zero():
    import importlib.util

    from smis.utils import project_root
    spec = importlib.util.spec_from_file_location("layer_experiment", project_root() / "scripts/layer_experiment.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    rows = pd.DataFrame({"CI low": [-0.5, 0.1, -0.2, -0.3], "CI high": [-0.1, 0.3, 0.1, -0.05]},
                        index=["diversity (lpips_effnet)", "top-1 GT-similarity (lpips_effnet)", "mask mIoU",
                               "colour in class modes (%)"])
    assert mod.worse(rows) == ["diversity (lpips_effnet)", "top-1 GT-similarity (lpips_effnet)"]
    rows.loc["mask mIoU"] = [-0.2, -0.01]
    rows.loc["top-1 GT-similarity (lpips_effnet)"] = [-0.1, 0.3]
    assert mod.worse(rows) == ["diversity (lpips_effnet)", "mask mIoU"]


def test_experiment_lines_name_each_models_options_split_and_verdict():
    exp = edit_measures.read_layer_experiment(Path(__file__).resolve().parents[1] / "docs" / "layer_experiment.json")
    lines = edit_measures.experiment_lines(exp).splitlines()
    names = list(exp["models"])
    assert lines[0].startswith(f"{names[0]}: {exp['models'][names[0]]['model']} (step ")
    assert lines[1] == "  " + exp["splits"][names[0]]["sentence"]
    compared = [n for n, m in exp["models"].items() if "verdict" in m]
    assert len(lines) == 2 * len(names) + len(compared)
    m = exp["models"][compared[0]]
    assert lines[-1].startswith(f"  minus {m['versus']['reference']}: worse on ")
    assert lines[-1].endswith("-> shipped" if m["verdict"]["ship"] else "-> not shipped")
    for name, m in exp["models"].items():                          # its options, or the paper's objective
        line = next(line for line in lines if line.startswith(f"{name}: "))
        assert (" ".join(m.get("options") or []) or "the paper's objective") in line


def test_read_layer_experiment_gives_tables_splits_and_paired_rows(tmp_path):
    paper = _layer_rows({0: (0.35, 0.02, 0.2), 1: (0, 0, 0), 2: (0, 0, 0), 3: (0, 0, 0), 4: (0, 0, 0)})
    option = _layer_rows({0: (0.05, 0.40, 0.03), 1: (0.1, 0.1, 0.1), 2: (0.1, 0.05, 0.1), 3: (0.30, 0.02, 0.25),
                          4: (0.0, 0.0, 0.0)})
    for t, kl in ((paper, [1.0, 0, 0, 0, 0]), (option, [1.0, 0.9, 0.8, 0.7, 0.3])):
        t["KL"], t["active units"], t["units"] = kl, [int(70 * (k > 0)) for k in kl], 80
    versus = [{"score": "mask mIoU", "paper": 0.5, "system": 0.45, "difference": -0.05, "CI low": -0.08,
               "CI high": -0.02, "masks": 100}]
    data = {"command": "python scripts/layer_experiment.py ...", "cpu": "AMD EPYC", "models": {
        "freebits": {"inactive_layers": [], "layers": option.to_dict("records"),
                     "versus": {"reference": "paper", "rows": versus}},
        "paper": {"inactive_layers": [1, 2, 3, 4], "layers": paper.to_dict("records")}}}
    path = tmp_path / "exp.json"
    path.write_text(json.dumps(data))
    exp = edit_measures.read_layer_experiment(path)
    assert not exp["splits"]["paper"]["appears"] and exp["splits"]["freebits"]["appears"]
    assert list(exp["versus"]) == ["freebits"] and exp["versus"]["freebits"].loc["mask mIoU", "CI high"] == -0.02
    assert list(exp["versus"]["freebits"].columns[:2]) == ["paper", "system"]
    assert list(exp["models"]) == ["paper", "freebits"]                  # the reference first, as written or not
    summary = edit_measures.experiment_summary(exp)
    assert summary.loc[("paper", 1), "active units"] == "0 / 80"
    assert summary.loc[("freebits", 0), "texture kind changed (%)"].startswith("40 [")
    table = edit_measures.experiment_markdown(exp).splitlines()
    assert table[0] == "| layer (blocks) | paper | freebits |" and len(table) == 2 + 5
    assert table[2].startswith("| 0 | KL 1.00, 70 / 80 AU; colour 35 [") and "texture 40 [" in table[2]
    with pytest.raises(FileNotFoundError, match="scripts/layer_experiment.py"):
        edit_measures.read_layer_experiment(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text('{"models": {"x": {}}}')
    with pytest.raises(ValueError, match="bad.json.*write it again"):
        edit_measures.read_layer_experiment(tmp_path / "bad.json")


def test_measurements_refuse_float_labels_and_classes_absent_from_the_mask():
    label = stripes(3, [[0, 1, 2, 3], [1, 4, 5, 6], [0, 7, 8, 2]])
    with pytest.raises(TypeError, match="integer class ids, got dtype torch.float32; use label.long"):
        edit_measures.edit_cases(label.float(), C)
    with pytest.raises(ValueError, match=r"\[0, 10\), found \[0, 12\]"):
        edit_measures.edit_cases(label + (label == 8).long() * 4, C)
    # the locality measurement: NaN before, an error naming the sample now
    four = stripes(2, [[0, 1, 2, 3], [4, 5, 6, 7]])
    with pytest.raises(ValueError, match=r"edit_locality: class 1 is absent from the mask of sample 1 "
                                         r"\(it has classes \[4, 5, 6, 7\]\)"):
        edit_measures.edit_locality(fake_nets("local"), four, fake_latents(2), torch.tensor([1, 1]))
    with pytest.raises(ValueError, match=r"layer_factor_effects: class 0 is absent from the mask of sample 1"):
        edit_measures.layer_factor_effects(fake_nets("factors"), four, fake_latents(2), torch.tensor([0, 0]),
                                           torch.tensor([0, 1]))


def test_measure_edits_is_notebook_06s_reports_and_tables(nets):
    from smis.data import make_dataset
    ds = make_dataset("synthscenes", None, "test", size=64, length=5)
    images, labels, mu = editing.encode_dataset(nets, ds, batch_size=5)
    post = diagnostics.layer_posteriors(nets, images, labels, batch_size=5)
    diag = diagnostics.layer_diagnostics(nets, images, labels)
    report, locality, layers = edit_measures.measure_edits(nets, ds, labels, mu, 3, 0, post, diag, baseline=nets)
    alone = edit_measures.editing_report(nets, labels[:3], mu[:3], torch.Generator().manual_seed(0))
    assert list(report) == ["clvae", "gaugan_vae"] and report["clvae"] == alone and report["gaugan_vae"]["images"] == 3
    pd.testing.assert_frame_equal(locality, edit_measures.locality_table(report).round(3))
    want = edit_measures.layer_table(nets, alone, post).join(diag.table()[["active units", "units",
                                                                           "classes visible"]]).round(3)
    pd.testing.assert_frame_equal(layers, want)
    report, _, _ = edit_measures.measure_edits(nets, ds, labels, mu, 50, 0, post, diag)   # at most the photos given
    assert list(report) == ["clvae"] and report["clvae"]["images"] == 5
    assert edit_measures.locality_caption(report).startswith("Edit locality over every class of 5 test photos: ")
    assert "mean |mu| over 200 encoded test photos" in edit_measures.layer_effects_caption(200)
