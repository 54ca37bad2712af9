"""smis.diagnostics: per-layer KL, active units and classes visible; the layer-factor JSON beside a checkpoint."""
import json

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from smis import diagnostics as dg
from smis.config import get_preset
from smis.networks import Latents, build_networks
from smis.utils import resolve

TINY = dict(ngf=4, nef=4, ndf=4, spade_hidden=8, z_dim=8, z_dim_local=4)


def test_active_units_count_varying_dimensions_over_the_images_where_the_class_is_present():
    M, L, K, N = 6, 2, 3, 4
    mu = torch.zeros(M, L, K, N)
    present = torch.zeros(M, L, K, dtype=torch.bool)
    present[:, :, 0] = True                                    # class 0 everywhere
    present[:3, :, 1] = True                                   # class 1 in images 0-2
    present[0, :, 2] = True                                    # class 2 in one image only: not measurable
    mu[:, 0, 0, :2] = torch.tensor([1.0, -1.0, 1.0, -1.0, 1.0, -1.0])[:, None]   # layer 0, class 0: dims 0, 1 vary
    mu[:, 0, 0, 2] = 0.05 * torch.tensor([1.0, -1.0, 1.0, -1.0, 1.0, -1.0])      # var 0.003: below 0.01
    mu[:3, 0, 1, 3] = torch.tensor([0.0, 1.0, 2.0])                               # class 1, dim 3 varies
    mu[3:, 0, 1, :] = 50.0                                     # class 1 absent there: must not count
    mu[0, 0, 2, :] = 9.0                                       # class 2: one image, no variance
    mu[:, 1] = 3.0                                             # layer 1: constant codes
    active, units = dg.active_units(mu, present)
    assert active.tolist() == [3, 0]                           # dims 0, 1 of class 0 and dim 3 of class 1
    assert units.tolist() == [2 * N, 2 * N]                    # classes 0 and 1 (class 2 seen once)


class KnownEncoder(nn.Module):
    """A stand-in encoder: layer 0's class codes are the photo's mean brightness (varies across photos), every
    other layer's codes are the prior's (mu 0, logvar 0: KL 0, no active unit)."""

    def __init__(self, spec):
        super().__init__()
        self.spec = spec

    def forward(self, image, label):
        B, L, K, N = len(image), len(self.spec.layers), self.spec.code_classes, self.spec.z_dim_local
        present = self.spec.presence(label)                                     # (B, L, K)
        zc = torch.zeros(B, L, K, N)
        zc[:, 0] = image.mean((1, 2, 3))[:, None, None] * 4 * present[:, 0, :, None]
        z = torch.zeros(B, self.spec.z_dim)
        return Latents(z, zc, present), Latents(z.clone(), torch.zeros_like(zc), present)


def test_layer_diagnostics_on_an_encoder_whose_answer_is_known():
    nets = build_networks("clvae", get_preset("synthscenes", **TINY), discriminator=False).eval()
    nets.E = KnownEncoder(nets.spec)
    g = torch.Generator().manual_seed(0)
    labels = torch.zeros(8, 64, 64, dtype=torch.long)
    labels[:, :, 32:] = 3                                      # two big classes in every photo
    images = torch.rand(8, 3, 64, 64, generator=g) * 2 - 1 + torch.linspace(-0.5, 0.5, 8)[:, None, None, None]
    d = dg.layer_diagnostics(nets, images, labels, batch_size=3)   # batches of 3, 3, 2
    N = nets.spec.z_dim_local
    assert d.active_units.tolist() == [2 * N, 0, 0, 0, 0] and d.units.tolist() == [2 * N] * 5
    assert d.kl[0] > 0 and np.all(d.kl[1:] == 0)
    # by hand: layer 0's KL per image is the mean over its 2 classes of 0.5 sum_d mu^2, mu = 4 x mean brightness
    m = 4 * images.mean((1, 2, 3))
    assert d.kl[0] == pytest.approx(float((0.5 * N * m ** 2).mean()), rel=1e-5)
    assert d.inactive == [1, 2, 3, 4] and d.active.tolist() == [True, False, False, False, False]
    assert np.allclose(d.classes_visible, 1.0) and d.images == 8
    t = d.table()
    assert list(t.index) == [0, 1, 2, 3, 4] and t.loc[0, "active share"] == 1.0 and t.loc[2, "active units"] == 0
    cols = d.columns()
    assert cols["active units layer 0"] == 2 * N and cols["KL layer 3"] == 0.0 and len(cols) == 4 * 5
    back = dg.LayerDiagnostics.from_json(json.loads(json.dumps(d.to_json())))
    assert np.array_equal(back.active_units, d.active_units) and np.allclose(back.kl, d.kl)


def test_classes_visible_share_at_each_layers_block_size():
    nets = build_networks("clvae", get_preset("synthscenes", **TINY), discriminator=False)
    labels = torch.zeros(2, 64, 64, dtype=torch.long)
    labels[0, :, :32] = 2                                      # left half: column 0 is kept at every scale
    labels[0, 1, 1] = 5                                        # one odd pixel: legacy nearest keeps even ones only
    share = dg.classes_visible(nets, labels)                   # image 0: 2 of 3 classes at every layer; image 1: 1/1
    assert share.tolist() == pytest.approx([(2 / 3 + 1) / 2] * 5)


def test_describe_names_the_layer_its_kl_and_active_units():
    d = dg.LayerDiagnostics(kl=np.array([1.31, 0.004, 0.2]), active_units=np.array([37, 0, 0]),
                            units=np.array([64, 64, 0]), classes_visible=np.array([1.0, 0.9, 0.3]), images=64)
    assert d.describe(0) == "layer 0 is active (KL 1.31, 37/64 active units)"
    assert d.describe(1).startswith("layer 1 is inactive (KL 0.004, 0/64 active units): ")
    assert "resampling it changes little or nothing" in d.describe(1)
    assert d.inactive == [1, 2]                                # layer 2: KL above the floor but no active unit
    assert np.isnan(d.active_share[2]) and d.active_share[0] == pytest.approx(37 / 64)
    with pytest.raises(ValueError, match="layers 0..2"):
        d.describe(3)


def test_layer_diagnostics_refuses_models_without_layers_and_single_images():
    preset = get_preset("synthscenes", **TINY)
    vae = build_networks("gaugan_vae", preset, discriminator=False)
    with pytest.raises(ValueError, match="no class codes"):
        dg.layer_diagnostics(vae, torch.zeros(2, 3, 64, 64), torch.zeros(2, 64, 64, dtype=torch.long))
    nets = build_networks("clvae", preset, discriminator=False)
    with pytest.raises(ValueError, match="at least 2"):
        dg.layer_diagnostics(nets, torch.zeros(1, 3, 64, 64), torch.zeros(1, 64, 64, dtype=torch.long))


def test_the_shipped_clvae_has_two_active_and_three_inactive_layers():
    """The issue's finding, measured: layers 2-4 of checkpoints/synthscenes_clvae.pt carry nothing."""
    from smis.checkpoint import load_model
    from smis.data import make_dataset
    from smis.editing import encode_dataset
    path = resolve("checkpoints/synthscenes_clvae.pt")
    nets = load_model(path, "cpu").eval()
    images, labels, _ = encode_dataset(nets, make_dataset("synthscenes", None, "test", size=(64, 64), length=32))
    d = dg.layer_diagnostics(nets, images, labels)
    assert d.inactive == [2, 3, 4] and (d.kl[2:] < dg.COLLAPSE_KL).all() and (d.active_units[2:] == 0).all()
    assert (d.active_units[:2] > 0.5 * d.units[:2]).all()
    assert d.classes_visible[0] > 0.95 and d.classes_visible[4] < 0.6      # the coarsest block misses classes


def test_the_collapse_threshold_has_one_name():
    from smis import curves, edit_measures
    assert edit_measures.COLLAPSE_KL is dg.COLLAPSE_KL and not hasattr(curves, "COLLAPSED_KL")
    assert dg.collapsed_layers([dg.COLLAPSE_KL - 1e-9, dg.COLLAPSE_KL]) == [0]     # below the threshold: collapsed


# ---------------------------------------------------------------------------------------------
# the layer-factor JSON beside a checkpoint


def test_layer_factors_round_trip_beside_the_checkpoint(tmp_path):
    ckpt = tmp_path / "model.pt"
    assert dg.layer_factors_path(ckpt) == tmp_path / "model.layers.json"
    assert dg.read_layer_factors(ckpt) is None                              # none measured yet
    summary = [{"layer": 0, "moves_most": "texture kind", "shares": {"texture kind": 0.4, "colour mode": 0.1},
                "intervals": {"texture kind": [0.3, 0.5], "colour mode": [0.05, 0.2]}},
               {"layer": 1, "moves_most": None, "shares": {"texture kind": 0.0, "colour mode": 0.0}}]
    path = dg.write_layer_factors(ckpt, summary, command="python -m x", images=200)
    assert path == tmp_path / "model.layers.json" and sorted(p.name for p in tmp_path.iterdir()) == [path.name]
    data = json.loads(path.read_text())
    assert data["format"] == dg.LAYER_FACTORS_FORMAT and data["model"] == "model.pt" and data["images"] == 200
    assert dg.read_layer_factors(ckpt) == summary and dg.read_layer_factors(path) == summary


@pytest.mark.parametrize("text, match", [
    ("{not json", "not valid JSON"),
    ('{"format": "other/2", "layers": []}', "format 'other/2'"),
    ('{"format": "smis.layer_factors/1", "layers": [{"layer": "0", "moves_most": "x"}]}', "integer 'layer'"),
    ('{"format": "smis.layer_factors/1", "layers": [{"layer": 0, "moves_most": 3}]}', "'moves_most' factor name"),
    ('{"format": "smis.layer_factors/1", "layers": {"0": "x"}}', "must be a list"),
])
def test_a_bad_layer_factors_file_names_itself_and_the_fix(tmp_path, text, match):
    path = tmp_path / "model.layers.json"
    path.write_text(text)
    with pytest.raises(ValueError, match=match) as e:
        dg.read_layer_factors(tmp_path / "model.pt")
    assert str(path) in str(e.value) and "write_layer_factors" in str(e.value)


def test_collapsed_layers_is_the_posterior_collapse_diagnostic():
    assert dg.collapsed_layers(np.array([0.01, 0.3, 0.049, 0.05])) == [0, 2]
    assert dg.collapsed_layers([1.0, 2.0]) == [] and dg.collapsed_layers([0.2, 0.1], threshold=0.15) == [1]
    kl = pd.DataFrame({"KL": [0.3, 0.001]}).round(3)["KL"].to_numpy()
    assert dg.collapsed_layers(kl) == [1]
