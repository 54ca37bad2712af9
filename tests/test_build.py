"""smis.build: a run's parts from a TrainConfig alone (no data), the variant's loss weights."""
import json
import math

import pytest
import torch

from conftest import TINY, cfg
from smis import train as T
from smis.build import build
from smis.data import DatasetError
from smis.networks import build_networks


def test_build_needs_no_data(tmp_path):
    """The parts of an ADE20K run, built while its data root does not exist: what the benchmarks time."""
    c = T.TrainConfig(run_dir=str(tmp_path / "run"), preset="ade20k", dataset="ade20k", data_root=str(tmp_path / "no"),
                      preset_overrides={**TINY, "image_size": [64, 64]}, perceptual="none", batch_size=2, steps=3)
    parts = build(c, "cpu")
    assert not (tmp_path / "no").exists() and parts.nets.spec.num_classes == 151
    assert parts.base_lr == (1e-4, 4e-4) and parts.perceptual is None and parts.weights.kl == 0.05
    step = T.TrainStep(c, parts, *T.schedule(c, parts.preset, 0, 2), global_batch=2)
    label = torch.randint(0, 151, (2, 64, 64))
    losses = step(torch.rand(2, 3, 64, 64) * 2 - 1, label)
    assert step.step == 1 and all(math.isfinite(v) for v in losses.values())
    with pytest.raises(DatasetError, match=r"images/training does not exist"):
        T.Trainer(c)                                                                          # the loop needs data


def test_gaugan_vae_lowkl_is_gaugan_vae_trained_with_the_papers_low_kl(tmp_path):
    """GauGAN-VAE* (Table 2): gaugan_vae's networks, lambda_KL = 0.0005 unless --kl-weight says otherwise."""
    low, base = build_networks("gaugan_vae_lowkl", "synthscenes"), build_networks("gaugan_vae", "synthscenes")
    assert {k: v.shape for k, v in low.state_dict().items()} == {k: v.shape for k, v in base.state_dict().items()}
    assert build(cfg(tmp_path, variant="gaugan_vae_lowkl"), "cpu").weights.kl == 0.0005
    assert build(cfg(tmp_path, variant="gaugan_vae_lowkl", kl_weight=0.2), "cpu").weights.kl == 0.2
    assert build(cfg(tmp_path, variant="gaugan_vae"), "cpu").weights.kl == 0.05
    t = T.Trainer(cfg(tmp_path, variant="gaugan_vae_lowkl", steps=1))
    img = torch.stack([t.dataset[i]["image"] for i in range(2)])
    lab = torch.stack([t.dataset[i]["label"] for i in range(2)])
    losses = t.train_step(img, lab)
    assert losses["kl"] > 0
    assert losses["g_total"] == pytest.approx(losses["g_gan"] + 10 * losses["g_fm"] + 0.0005 * losses["kl"], rel=1e-5)
    t.fit()
    assert json.loads((tmp_path / "run" / "config.json").read_text())["resolved"]["loss_weights"]["kl"] == 0.0005
    # resuming compares the resolved weight: spelling out the variant's value is no change, another one is
    T.Trainer(cfg(tmp_path, variant="gaugan_vae_lowkl", steps=2, kl_weight=0.0005)).fit(resume=True)
    with pytest.raises(T.ResumeMismatch, match=r"kl_weight: checkpoint 0.0005, now 0.05"):
        T.Trainer(cfg(tmp_path, variant="gaugan_vae_lowkl", steps=4, kl_weight=0.05)).fit(resume=True)
