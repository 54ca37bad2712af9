"""smis.models: models by source string (export, checkpoint, run folder), the notebooks' MODELS syntax."""
from __future__ import annotations

import json

import pytest
import torch

from smis import models
from smis.checkpoint import export_model
from smis.networks import VARIANTS
from smis.train import Trainer, TrainConfig
from smis.utils import resolve

TINY = dict(ngf=4, nef=4, ndf=4, spade_hidden=8, z_dim=8, z_dim_local=4, norm_G="instance")


def test_parse_models_and_load_errors(tmp_path):
    assert models.parse_models("clvae:a.pt, gaugan_vae:official:ade20k:dir,skip:") == \
        {"clvae": "a.pt", "gaugan_vae": "official:ade20k:dir"}
    with pytest.raises(ValueError, match="NAME:SOURCE"):
        models.parse_models("clvae=a.pt")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        models.load_networks(tmp_path / "nope.pt")
    (tmp_path / "run").mkdir()
    with pytest.raises(FileNotFoundError, match="no checkpoints"):
        models.load_networks(tmp_path / "run")


def test_load_networks_from_a_run_folder_and_an_export(tmp_path):
    cfg = TrainConfig(run_dir=str(tmp_path / "run"), variant="clvae", preset_overrides=TINY, steps=1, batch_size=2,
                      perceptual="none", data_length=4, device="cpu", tensorboard=False, progress=False)
    trainer = Trainer(cfg)
    trainer.fit()
    nets = models.load_networks(tmp_path / "run")
    assert nets.variant == "clvae" and not nets.training and nets.meta["step"] == 1
    for a, b in zip(nets.G.state_dict().values(), trainer.nets.G.state_dict().values()):
        assert torch.equal(a, b.cpu())
    export = export_model(sorted((tmp_path / "run" / "checkpoints").glob("*.pt"))[-1], tmp_path / "m.pt", half=False)
    again = models.load_networks(export)
    assert all(torch.equal(a, b) for a, b in zip(again.G.state_dict().values(), nets.G.state_dict().values()))

    assert models.trained(nets) == "1 steps"
    nets.meta = {"step": None, "provenance": {"source": "official:ade20k:weights"}}
    assert models.trained(nets) == "the authors' published weights"


def test_load_or_untrained(tmp_path):
    a, b = models.load_or_untrained("", seed=3), models.load_or_untrained("", seed=3)
    assert a.variant == "clvae" and not a.G.training
    assert all(torch.equal(p, q) for p, q in zip(a.G.parameters(), b.G.parameters()))   # seeded
    assert models.load_or_untrained("", "gaugan_vae").spec.has_class_codes is False
    with pytest.raises(FileNotFoundError, match=r"missing\.pt not found\. Fix: run `python scripts/train_demo_models"):
        models.load_or_untrained(str(tmp_path / "missing.pt"))


def test_shipped_provenance_reads_the_json_beside_each_shipped_model(tmp_path):
    shipped = models.shipped_provenance()
    assert shipped["clvae"]["steps"] == json.loads(resolve("checkpoints/synthscenes_clvae.json").read_text())["steps"]
    assert "segmenter" not in shipped and list(shipped) == [v for v in VARIANTS if v in shipped]
    assert all(p["variant"] == v for v, p in shipped.items())
    (tmp_path / "synthscenes_no_layerwise.json").write_text('{"steps": 12}')
    (tmp_path / "synthscenes_curves.json").write_text('{"rows": []}')
    assert models.shipped_provenance(tmp_path) == {"no_layerwise": {"steps": 12}}
    assert models.shipped_provenance(tmp_path, "ade20k") == {}


def test_shipped_steps_line_names_each_shipped_models_steps(tmp_path):
    line = models.shipped_steps()
    shipped = models.shipped_provenance()
    assert line.startswith("the shipped models' training steps (checkpoints/synthscenes_<variant>.json): ")
    assert f"clvae {shipped['clvae']['steps']}" in line and line.count(",") == len(shipped) - 1
    assert models.shipped_steps(tmp_path).endswith("json): no shipped models")


def test_parse_variants_and_variant_sources_raise_with_the_parameter_to_fix():
    assert models.parse_variants(" clvae, no_classwise,,") == ["clvae", "no_classwise"]
    with pytest.raises(ValueError, match=r"VARIANTS names unknown variants \['bogus'\]; choose from \["):
        models.parse_variants("clvae,bogus")
    assert models.variants_plan(["clvae"], 2) == "variants: ['clvae']; train 2 steps each"
    assert models.variants_plan(["clvae"]) == "variants: ['clvae']; load checkpoints"
    assert models.variant_sources(["clvae"], "clvae:a.pt,gaugan:b.pt") == {"clvae": "a.pt", "gaugan": "b.pt"}
    with pytest.raises(ValueError, match=r"MODELS lacks \['no_classwise'\]; give NAME:path for every variant"):
        models.variant_sources(["clvae", "no_classwise"], "clvae:a.pt,no_classwise:")
