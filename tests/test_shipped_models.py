"""The shipped demo models: small, documented, and their samples follow the mask and vary per class."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from smis.checkpoint import load_model
from smis.data import make_dataset
from smis.data.synthetic import estimate_factors
from smis.models import load_segmenter_for
from smis.networks import Latents
from smis.sampling import sample_prior
from smis.segmenter import mask_fidelity
from smis.utils import project_root
from smis.viz import to_uint8

CKPT = project_root() / "checkpoints"
VARIANTS = ("clvae", "gaugan_vae", "gaugan", "no_classwise", "no_layerwise", "clvae_L3", "clvae_L5", "gaugan_vae_lowkl",
            "groupdnet", "cimle")
LATENT = [v for v in VARIANTS if v != "gaugan"]
# How well each shipped model follows its mask: (mask R^2 floor, segmenter mIoU floor, margin over other scenes' masks).
# cIMLE, trained here from scratch under gaugan_vae's wall clock with the EfficientNet stand-in distance, follows its
# mask weakly (mIoU 0.23 in the demo's Table 2, README "Shipped demo models"), but several times better than other
# scenes' masks (an untrained or broken one scores the same on both).
MASK_BARS = {"cimle": (0.4, 0.2, 0.15)}
DEFAULT_BARS = (0.6, 0.5, 0.3)


def mask_r2(images: np.ndarray, label: np.ndarray) -> float:
    """Share of the pixel variance explained by per-class region means: (K, H, W, 3) uint8, (H, W) ids."""
    x = images.astype(np.float64).reshape(len(images), -1, 3)
    lab = np.broadcast_to(label.ravel(), x.shape[:2])
    idx = (np.arange(len(images))[:, None] * 100 + lab).ravel()
    cnt = np.bincount(idx)
    means = np.stack([np.bincount(idx, x[..., c].ravel()) for c in range(3)], -1) / np.maximum(cnt, 1)[:, None]
    resid = x.reshape(-1, 3) - means[idx]
    total = x - x.mean(1, keepdims=True)
    return 1 - (resid ** 2).sum() / (total ** 2).sum()


def test_checkpoints_fit_the_size_budget():
    """Issue 21: every shipped file together at most 150 MB (with the comparison systems)."""
    files = [p for p in CKPT.iterdir() if p.is_file()]
    assert {f"synthscenes_{v}.pt" for v in VARIANTS} <= {p.name for p in files}     # the sum counts the models
    assert sum(p.stat().st_size for p in files) <= 150 * 10**6


@pytest.mark.parametrize("variant", VARIANTS)
def test_shipped_model_is_small_and_documented(variant):
    path = CKPT / f"synthscenes_{variant}.pt"
    assert path.stat().st_size <= 25 * 2**20
    meta = json.loads(path.with_suffix(".json").read_text())
    for key in ("command", "data_seed", "seed", "steps", "wall_time_s", "device", "cpu", "torch"):
        assert meta.get(key) is not None, key
    assert "python -m smis.train" in meta["command"] and f"--variant {variant}" in meta["command"]
    assert f"--steps {meta['steps']}" in meta["command"] and f"--seed {meta['seed']}" in meta["command"]
    nets = load_model(path)
    assert nets.variant == variant and nets.meta["step"] == meta["steps"]


def test_shipped_models_share_data_schedule_and_seed_and_match_the_script_defaults():
    """One data set, batch, seed and preset for all; the steps are train_demo_models.py's defaults."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("tdm", project_root() / "scripts" / "train_demo_models.py")
    tdm = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tdm)
    metas = {v: json.loads((CKPT / f"synthscenes_{v}.json").read_text()) for v in VARIANTS}
    assert sorted(metas) == sorted(tdm.VARIANTS)
    for key in ("data_seed", "seed", "batch_size"):
        assert len({m[key] for m in metas.values()}) == 1, key
    for v, m in metas.items():
        assert m["steps"] == tdm.schedule(v, None)[0], v
        assert len(m["curve_checkpoints"]) >= 5 and m["curve_checkpoints"][-1] == m["steps"]
    assert metas["clvae"]["steps"] >= 8000 and metas["gaugan_vae"]["steps"] >= 8000
    assert metas["gaugan_vae_lowkl"]["steps"] == metas["gaugan_vae"]["steps"]     # GauGAN-VAE*: the same budget
    assert metas["groupdnet"]["steps"] == metas["gaugan_vae"]["steps"]            # GroupDNet: the same budget
    # cIMLE: gaugan_vae's wall clock (its step costs differently), within the spread of loaded two-at-a-time runs
    assert 0.8 < metas["cimle"]["wall_time_s"] / metas["gaugan_vae"]["wall_time_s"] < 1.25
    assert min(m["steps"] for m in metas.values()) >= 3000


def test_train_demo_models_precision_choices(monkeypatch):
    """fp32 by default (the shipped models); bf16 and bf16-g bring fused Adam; auto follows the CPU's native bf16."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("tdm", project_root() / "scripts" / "train_demo_models.py")
    tdm = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tdm)
    cmd = lambda precision: tdm.command("clvae", 100, 20, 8, 1, Path("r"), 0, 0, True, precision)
    assert "--precision" not in cmd("fp32") and "--fused-adam" not in cmd("fp32")
    for precision in ("bf16", "bf16-g"):
        fast = cmd(precision)
        assert fast[fast.index("--precision") + 1] == precision and "--fused-adam" in fast
    for fast, expect in ((True, "bf16"), (False, "fp32")):
        monkeypatch.setattr(tdm, "cpu_has_fast_bf16", lambda fast=fast: fast)
        assert tdm.precision_of("auto") == expect and tdm.precision_of("fp32") == "fp32"
    assert tdm.parser().parse_args([]).precision == "fp32"


@pytest.mark.parametrize("variant", LATENT)
def test_samples_follow_the_mask(variant):
    nets = load_model(CKPT / f"synthscenes_{variant}.pt")
    test = make_dataset("synthscenes", None, "test", size=64, length=6)
    r2, shuffled = [], []
    with torch.no_grad():
        for i in range(6):
            s = test[i]
            lab = s["label"][None].expand(4, -1, -1)
            imgs = to_uint8(nets.G(lab, Latents.prior(nets.spec, lab, generator=torch.Generator().manual_seed(i))))
            r2.append(mask_r2(imgs, s["label"].numpy()))
            shuffled.append(mask_r2(imgs, test[(i + 1) % 6]["label"].numpy()))  # another scene's mask
    floor, _, margin = MASK_BARS.get(variant, DEFAULT_BARS)
    assert np.mean(r2) > floor and np.mean(r2) > np.mean(shuffled) + margin, (np.mean(r2), np.mean(shuffled))


def test_clvae_varies_each_class_independently():
    """Over 8 prior samples of one mask, most classes take more than one of their colour modes."""
    nets = load_model(CKPT / "synthscenes_clvae.pt")
    test = make_dataset("synthscenes", None, "test", size=64, length=8)
    varied = total = 0
    with torch.no_grad():
        for i in range(8):
            s = test[i]
            lab = s["label"][None].expand(8, -1, -1)
            imgs = to_uint8(nets.G(lab, Latents.prior(nets.spec, lab, generator=torch.Generator().manual_seed(i))))
            modes = {}
            for img in imgs:
                for c, e in estimate_factors(img, s["label"].numpy(), min_pixels=30).items():
                    modes.setdefault(c, set()).add(e["colour_mode"])
            varied += sum(len(m) > 1 for m in modes.values())
            total += len(modes)
    assert varied / total > 0.75


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_shipped_model_follows_its_mask_by_the_segmenter(variant):
    """Mask fidelity (issue 14.4): the shipped segmenter reads each model's samples back as their masks far
    better than as other scenes' masks."""
    nets = load_model(CKPT / f"synthscenes_{variant}.pt")
    test = make_dataset("synthscenes", None, "test", size=64, length=16)
    label = torch.stack([test[i]["label"] for i in range(16)])
    samples = sample_prior(nets, label, 2, list(range(16)))                   # (16, K, 3, 64, 64)
    seg = load_segmenter_for("synthscenes")
    own = mask_fidelity(seg, samples, label)["miou"]
    other = mask_fidelity(seg, samples, label.roll(1, 0))["miou"]
    _, floor, margin = MASK_BARS.get(variant, DEFAULT_BARS)
    assert own > floor and own > other + margin, (own, other)
