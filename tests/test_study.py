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
