"""smis.study.load_study on the shipped SynthScenes models: one call sets up what notebooks 03-05 compare."""
from __future__ import annotations

from types import SimpleNamespace

import pandas as pd
import pytest
import torch

from smis import evaluate as ev
from smis import tables
from smis.models import load_networks, load_segmenter_for
from smis.study import STAND_IN_NOTE, Study, load_study

MODELS = "clvae:checkpoints/synthscenes_clvae.pt,gaugan:checkpoints/synthscenes_gaugan.pt"


@pytest.fixture(scope="module")
def study():
    return load_study(MODELS, "synthscenes", "", "test", n_test=3, lpips="effnet", fd="effnet", device="cpu", batch=2)


def test_load_study_builds_the_models_test_set_and_metrics(study):
    assert list(study.models) == ["clvae", "gaugan"] and study.indices == [0, 1, 2]
    clvae = load_networks("checkpoints/synthscenes_clvae.pt")
    assert all(torch.equal(a, b) for a, b in zip(study.models["clvae"].G.state_dict().values(),
                                                 clvae.G.state_dict().values()))
    test, indices = ev.test_set("synthscenes", "", "test", clvae.preset.image_size, 3)
    assert indices == study.indices and torch.equal(test[2]["image"], study.dataset[2]["image"])
    real = ev.real_frechet(test, indices, "effnet", "cpu", 2, progress=False)
    assert study.fd_real.compute(real) == pytest.approx(0.0, abs=1e-3)          # the same statistics
    assert study.columns == ev.Columns("lpips_effnet", "fd_effnet") and study.stand_ins
    assert study.trained("clvae") == f"{clvae.meta['step']} steps"
    assert study.models_caption(["gaugan"]) == f"gaugan ({study.trained('gaugan')})"
    assert "clvae: variant clvae" in study.summary() and "no latents" in study.summary()


def test_ceiling_row_is_the_segmenter_on_the_real_images(study):
    seg = load_segmenter_for("synthscenes")
    want = tables.miou_columns(ev.real_mask_fidelity(seg, study.dataset, study.indices, progress=False))
    table = study.add_ceiling(pd.DataFrame({tables.MIOU: [0.5]}, index=["clvae"]))
    assert table.loc[tables.CEILING, tables.MIOU] == pytest.approx(want[tables.MIOU])
    assert list(table.index) == ["clvae", tables.CEILING]
    none = load_study(MODELS.split(",")[0], "synthscenes", "", "test", 2, lpips="effnet", fd="effnet",
                      segmenter="", device="cpu")
    assert none.segmenter is None and none.ceiling() == {}
    assert list(none.add_ceiling(pd.DataFrame({"x": [1]})).index) == [0]


def test_load_study_refuses_models_of_different_sizes_and_empty_specs(monkeypatch):
    with pytest.raises(ValueError, match="no models"):
        load_study("clvae:", "synthscenes", "", "test", 2)
    fake = {src: SimpleNamespace(preset=SimpleNamespace(image_size=size)) for src, size in (("a", (64, 64)),
                                                                                            ("b", (32, 32)))}
    monkeypatch.setattr("smis.study.load_networks", lambda src, device: fake[src])
    with pytest.raises(ValueError, match="different sizes"):
        load_study({"clvae": "a", "gaugan": "b"}, "synthscenes", "", "test", 2)


def test_metrics_note_is_the_caption_part_shared_by_notebooks_03_to_05():
    names = lambda metric, fd: (SimpleNamespace(name=metric), SimpleNamespace(name=fd))
    assert Study({}, None, [], *names("lpips_effnet", "fd_effnet"), None, "cpu").metrics_note() == STAND_IN_NOTE + " "
    assert Study({}, None, [], *names("lpips_alex", "fid"), None, "cpu").metrics_note() == ""
    noted = Study({}, None, [], *names("lpips_effnet", "fd_effnet"), None, "cpu", fidelity_note="not measured (x)")
    assert noted.metrics_note() == "Mask mIoU not measured (x). " + STAND_IN_NOTE + " "


# ---- the study's evaluation loops and tables (notebooks 03-05), on tiny untrained models ----

def test_evaluate_prior_and_reconstruction_loop_over_the_models_and_print_each(tiny_study, capsys):
    s = tiny_study
    options = ev.PriorOptions(k=2, seed=1, chunk=3, keep=1)
    results = s.evaluate_prior(options)
    assert list(results) == ["clvae", "gaugan", "clvae_L3"]
    want = ev.evaluate_prior(s.models["clvae_L3"], s.dataset, s.indices, s.metric, options, s.fd_real, s.segmenter,
                             progress=False)
    pd.testing.assert_frame_equal(results["clvae_L3"].per_image, want.per_image)
    assert results["gaugan"].k == 1 and results["clvae"].fd == pytest.approx(want.fd, rel=0.5)
    assert [line.split(":")[0] for line in capsys.readouterr().out.splitlines()] == ["clvae", "gaugan", "clvae_L3"]
    recon = s.evaluate_reconstruction(keep=2)
    assert list(recon) == ["clvae", "clvae_L3"] and recon["clvae"].examples.shape[0] == 2
    assert recon["clvae"].fd is not None and recon["clvae"].confusion is not None      # FD and mask fidelity
    out = capsys.readouterr().out.splitlines()
    assert out[1] == "gaugan: no encoder, skipped" and out[0].startswith("clvae: ") and out[0].endswith(" s")


def test_evaluate_style_skips_models_without_an_encoder_and_takes_the_previous_mask_as_reference(tiny_study, capsys):
    rows = tiny_study.evaluate_style(3, seed=0)
    assert list(rows) == ["clvae: guided", "clvae: prior (chance)", "clvae_L3: guided", "clvae_L3: prior (chance)"]
    pairs = rows["clvae: guided"][["index", "reference"]].drop_duplicates()
    assert dict(zip(pairs["index"], pairs["reference"])) == {0: 2, 1: 0, 2: 1}
    assert capsys.readouterr().out.startswith("gaugan: skipped: GauGAN (variant 'gaugan') cannot do style-guided")


def test_ablation_table_names_the_variants_and_adds_the_ceiling_factors_and_training(tiny_study, capsys):
    s = tiny_study
    variants = {v: s.models[v] for v in ("clvae", "clvae_L3")}
    ablation = Study(variants, s.dataset, s.indices, s.metric, s.fd_real, s.segmenter, s.device, s.batch)
    prior, recon = ablation.evaluate_ablations(ev.PriorOptions(k=2, chunk=3, factors=True, keep=1))
    assert list(prior) == list(recon) == ["clvae", "clvae_L3"] and recon["clvae"].fd is None
    table = ablation.ablation_table(prior, recon, 2, {"clvae": 3.4, "clvae_L3": 7.6})
    assert list(table.index) == ["full (L = 6) [clvae]", "L = 3 [clvae_L3]", "real test images (mIoU ceiling)"]
    assert table.index.name == "variant"
    assert table.loc["L = 3 [clvae_L3]", "reconstruction GT-similarity (lpips_effnet)"] == pytest.approx(
        recon["clvae_L3"].per_image.iloc[:, 0].mean())
    assert table.loc["real test images (mIoU ceiling)", tables.MIOU] == pytest.approx(ablation.ceiling()[tables.MIOU])
    assert list(table.columns[-4:]) == [tables.COLOUR_IN, tables.TEXTURE_IN, "training steps", "training s"]
    assert table["training s"].tolist()[:2] == [3.0, 8.0] and (table["training steps"].iloc[:2] == 2).all()
    loaded = ablation.ablation_table(prior, recon)                  # loaded models: no training columns
    assert "training steps" not in loaded.columns
    lines = ablation.latent_structure().splitlines()
    assert lines[0].startswith("clvae: 5 latent layers, K = 10 codes per layer, encoder depth 6, ")
    assert lines[1].startswith("clvae_L3: 2 latent layers, K = 10 codes per layer, encoder depth 3, ")


def test_factor_rows_put_the_real_images_first(tiny_study):
    results = tiny_study.evaluate_prior(ev.PriorOptions(k=2, chunk=3, factors=True, keep=0))
    rows = tiny_study.factor_rows(results)
    assert list(rows) == ["real test images", "clvae", "gaugan", "clvae_L3"]
    assert set(rows["real test images"]["image"]) == {0, 1, 2}            # one row per class region of each image
    real = tables.factor_table(rows).loc["real test images"]
    assert real[tables.COLOUR_IN] > 90 and real[tables.TEXTURE_IN] > 90  # the estimator on real images: the ceiling


def test_captions_of_tables_1_2_and_5_name_the_run_the_metrics_and_the_models():
    names = (SimpleNamespace(name="lpips_alex"), SimpleNamespace(name="fid"))
    nets = {"clvae": SimpleNamespace(meta={"step": 80}), "gaugan_vae": SimpleNamespace(meta={"step": 30})}
    plain = Study(nets, None, [4, 5, 6], *names, None, torch.device("cpu"))
    seg = Study(nets, None, [4, 5, 6], *names, SimpleNamespace(source="s.pt"), torch.device("cpu"))
    recon = plain.reconstruction_caption({"clvae": None}, "synthscenes", "test")
    assert recon.startswith("Table 1 style: reconstruction G(M, E(M, I)) with encoder means on 3 synthscenes test")
    assert "GT-similarity = lpips_alex" in recon and "FD = fid of" in recon and "mask mIoU" not in recon
    assert recon.endswith("Models: clvae (80 steps).")
    assert "the real-image row is the ceiling. Models: " in seg.reconstruction_caption(nets, "ade20k", "val")
    div = plain.diversity_caption("synthscenes", "test", 20, 3)
    assert div.startswith("Tables 2-4 style on synthscenes (3 test masks, K = 20 prior samples each, seed 3): ")
    assert div.endswith("Models: clvae (80 steps), gaugan_vae (30 steps).") and "mask mIoU" not in div
    assert "its real-image row is the ceiling. Models:" in seg.diversity_caption("synthscenes", "test", 20, 3)
    loaded = plain.ablation_caption("synthscenes", "test", 10, {"clvae": "a.pt", "gaugan_vae": "runs/b"})
    assert loaded == ("Table 5 style ablation on synthscenes (3 test masks, K = 10); models loaded from checkpoints: "
                      "clvae=a.pt (80 steps), gaugan_vae=runs/b (30 steps). Diversity (higher: more varied), top-1 and "
                      "reconstruction GT-similarity (lower: closer) in lpips_alex; FD in fid; ±95% = half-width of the "
                      "95 % interval over masks.")
    trained = seg.ablation_caption("synthscenes", "test", 3, {}, 2, 4, "synthscenes", 1)
    assert "(2 steps, batch 4, synthscenes preset, cpu, seed 1): far from converged" in trained
    assert trained.endswith("over masks; mask mIoU = the segmenter's labels of the samples against their masks "
                            "(95 % bootstrap interval).")
    effnet = Study(nets, None, [4], SimpleNamespace(name="lpips_effnet"), SimpleNamespace(name="fd_effnet"), None,
                   "cpu")
    assert effnet.ablation_caption("synthscenes", "test", 3, {}, 2).endswith(". " + STAND_IN_NOTE)
