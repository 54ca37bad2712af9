"""Tests of smis.config presets."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from smis.config import PRESETS, TINY, UPSAMPLING, Preset, get_preset
from smis.networks import generator

REFERENCE = Path(__file__).resolve().parent / "data" / "official_checkpoint_keys.json"  # committed copy of ../shared's


def test_all_dataset_presets_exist_and_are_frozen():
    assert set(PRESETS) == {"ade20k", "deepfashion", "gta5", "cityscapes", "synthscenes"}
    p = get_preset("ade20k")
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.ngf = 32
    for name, q in PRESETS.items():
        assert q.name == name
        assert (q.lr_g, q.lr_d, q.betas) == (1e-4, 4e-4, (0.0, 0.9))
        assert (q.lambda_fm, q.lambda_perceptual, q.lambda_kl) == (10.0, 10.0, 0.05)
        assert q.num_D == 2 and q.n_layers_D == 4


@pytest.mark.parametrize("name", ["ade20k", "deepfashion", "gta5"])
def test_published_presets_match_the_published_options(name):
    opt = json.loads(REFERENCE.read_text())[name]["options"]
    p = get_preset(name)
    assert p.num_classes == opt["semantic_nc"]
    assert (p.ngf, p.z_dim, p.z_dim_local, p.upsampling) == (opt["ngf"], opt["z_dim"], opt["z_dim_local"],
                                                             opt["num_upsampling_layers"])
    W = opt["crop_size"]
    assert p.image_size == (round(W / opt["aspect_ratio"]), W)
    assert p.enc_size == (256, 256) and p.nef == p.ngf
    assert (p.dontcare_id is not None) == opt["contain_dontcare_label"]


def test_ade20k_and_synthscenes_values():
    a = get_preset("ade20k")
    assert a.dontcare_id == 150 and a.image_size == (256, 256) and a.epochs == 200
    s = get_preset("synthscenes")
    assert s.num_classes == 10 and s.dontcare_id is None and s.image_size == (64, 64)
    assert 16 <= s.ngf <= 32 and s.ndf < a.ndf and s.z_dim < a.z_dim
    assert get_preset("synthscenes", image_size=[128, 128]).image_size == (128, 128)


def test_overrides_and_errors():
    p = get_preset("synthscenes", ngf=24, batch_size=4)
    assert (p.ngf, p.batch_size) == (24, 4) and PRESETS["synthscenes"].ngf != 24
    with pytest.raises(KeyError, match="valid names: .*ade20k.*synthscenes"):
        get_preset("ade")
    with pytest.raises(TypeError, match="unknown preset field.*ngff"):
        get_preset("ade20k", ngff=3)
    with pytest.raises(ValueError, match="divisible by 32"):
        get_preset("ade20k", image_size=(200, 256))
    with pytest.raises(ValueError, match="upsampling"):
        get_preset("ade20k", upsampling="lots")
    with pytest.raises(ValueError, match="dontcare_id"):
        get_preset("synthscenes", dontcare_id=10)
    with pytest.raises(ValueError, match="at least 128"):
        get_preset("synthscenes", encoder_size=(64, 64))


def test_preset_round_trips_through_json():
    """Preset.from_dict inverts asdict after JSON (lists back to tuples): what load_model rebuilds."""
    for name in ("ade20k", "gta5", "synthscenes"):
        p = get_preset(name, betas=[0.5, 0.99])
        assert p.betas == (0.5, 0.99)
        assert Preset.from_dict(json.loads(json.dumps(dataclasses.asdict(p)))) == p
    with pytest.raises(TypeError):
        Preset.from_dict({**dataclasses.asdict(get_preset("gta5")), "ngff": 3})


def test_one_upsampling_table():
    """The presets and the generator read the same table (smis.config.UPSAMPLING)."""
    assert generator.UPSAMPLING is UPSAMPLING and UPSAMPLING == {"normal": 5, "more": 6, "most": 7}


def test_preset_is_a_plain_dataclass():
    assert dataclasses.is_dataclass(Preset)
    d = dataclasses.asdict(get_preset("gta5"))
    assert d["image_size"] == (256, 512) and json.dumps(d)


def test_presets_match_their_dataset_loaders():
    """One name selects both: each preset's class count and dontcare id are its loader's."""
    import importlib

    for name in ("ade20k", "deepfashion", "gta5", "cityscapes", "synthscenes"):
        module = importlib.import_module(f"smis.data.{name if name != 'synthscenes' else 'synthetic'}")
        info = module.info()
        preset = get_preset(name)
        assert preset.num_classes == info.num_classes, name
        assert preset.dontcare_id == info.dontcare, name


def test_tiny_override_makes_a_smaller_valid_synthscenes_preset():
    tiny, full = get_preset("synthscenes", **TINY), get_preset("synthscenes")
    assert all(getattr(tiny, k) == v < getattr(full, k) for k, v in TINY.items())
