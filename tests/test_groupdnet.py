"""GroupDNet (smis.networks.groupdnet): published shapes, forward per structure, the KL, the class crops,
the import of the published files, training through TrainStep and the errors.

The published names and shapes come from tests/data/groupdnet_checkpoint_keys.json, generated from the
authors' code (Seanseattle/SMIS) state_dicts; values are random here."""
from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from smis import train as T
from smis.config import get_preset
from smis.weight_fixtures import write_groupdnet_weights
from smis.losses import kl_divergence
from smis.models import load_networks
from smis.networks import Latents, build_networks, resize_labels
from smis.networks.groupdnet import (PUBLISHED, GroupDNetEncoder, GroupDNetGenerator, block_table, class_crops,
                                     groupdnet_config)
from smis.official import (GROUPDNET_DATASETS, CheckpointMismatch, groupdnet_dataset_of, groupdnet_preset,
                           load_groupdnet)
from smis.utils import CheckpointError

REFERENCE = Path(__file__).resolve().parent / "data" / "groupdnet_checkpoint_keys.json"


def reference(dataset: str) -> dict:
    return json.loads(REFERENCE.read_text())[dataset]


def meta_networks(dataset: str):
    """The published-size GroupDNet on the meta device (shapes without memory)."""
    with torch.device("meta"):
        return build_networks("groupdnet", groupdnet_preset(dataset), discriminator=False, init_gain=None)


@pytest.mark.parametrize("dataset", GROUPDNET_DATASETS)
def test_published_configurations_have_the_published_keys_shapes_and_order(dataset):
    ref = reference(dataset)
    nets = meta_networks(dataset)
    for module, table in ((nets.G, ref["netG"]), (nets.E, ref["netE"])):
        ours = [(k, list(v.shape)) for k, v in module.state_dict().items()]
        assert ours == list(table.items())                              # names, shapes and the files' order
    counts = {"G": sum(p.numel() for p in nets.G.parameters()), "E": sum(p.numel() for p in nets.E.parameters())}
    assert counts == ref["params"]
    opts = ref["options"]
    assert nets.spec.num_classes == opts["semantic_nc"] and nets.G.cfg.ngf == opts["ngf"]
    assert nets.E.cfg.nef == opts["encoder_ndf"]


def test_reference_file_facts():
    """The facts the issue quotes: DeepFashion 8 classes, ngf 160, 96.3 M G and 12.8 M E parameters;
    codes of 8 x 4 x 4 per class (8 x 4 x 8 for 256 x 512 Cityscapes)."""
    data = json.loads(REFERENCE.read_text())
    assert set(data) == set(GROUPDNET_DATASETS)
    df = data["deepfashion"]
    assert df["options"]["semantic_nc"] == 8 and df["options"]["ngf"] == 160
    assert round(df["params"]["G"] / 1e6, 1) == 96.3 and round(df["params"]["E"] / 1e6, 1) == 12.8
    for ds, grid in (("deepfashion", (4, 4)), ("cityscapes", (4, 8)), ("ade20k", (4, 4))):
        C = data[ds]["options"]["semantic_nc"]
        assert data[ds]["netE"]["fc_mu.weight"][0] == 8 * C
        assert PUBLISHED[ds].code_grid == grid
        assert meta_networks(ds).spec.z_dim_local == 8 * grid[0] * grid[1]
    assert "up_4.conv_0.weight_orig" in data["ade20k"]["netG"]                # built, unused, as published


def random_state(shapes: dict[str, list[int]], seed: int) -> dict[str, torch.Tensor]:
    """Random tensors with the published names and shapes; spectral-norm u, v by power iteration."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for key, shape in shapes.items():
        if key.endswith("num_batches_tracked"):
            out[key] = torch.tensor(1000)
        elif key.endswith("running_var"):
            out[key] = torch.rand(shape, generator=g) + 0.5
        elif key.endswith(("running_mean", "bias")):
            out[key] = torch.randn(shape, generator=g) * 0.1
        elif not key.endswith(("weight_u", "weight_v")):
            fan_in = max(1, math.prod(shape[1:])) if len(shape) > 1 else 1
            out[key] = torch.randn(shape, generator=g) / fan_in ** 0.5
    for key in [k for k in shapes if k.endswith("weight_orig")]:
        W = out[key].flatten(1)
        v = torch.randn(W.shape[1], generator=g)
        for _ in range(5):
            u = F.normalize(W @ v, dim=0)
            v = F.normalize(W.T @ u, dim=0)
        out[key[:-4] + "u"], out[key[:-4] + "v"] = u, v
    return out


def blobs(B: int, C: int, H: int, W: int, seed: int = 0, used: int | None = None) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    classes = torch.randperm(C, generator=g)[:used or C]
    coarse = classes[torch.randint(0, len(classes), (B, max(1, H // 16), max(1, W // 16)), generator=g)]
    return resize_labels(coarse, (H, W))


def test_class_crops_equal_the_published_per_class_loop():
    """Per sample and class: image * mask, cropped to the class's bounding box, legacy-nearest resized;
    zeros for absent classes (their trans_img, written as the loop it is)."""
    g = torch.Generator().manual_seed(0)
    B, C, H, W = 2, 5, 40, 56
    label = blobs(B, C, H, W, seed=1, used=3)
    image = torch.rand(B, 3, H, W, generator=g) * 2 - 1
    got = class_crops(image, label, C, (32, 48))
    for b in range(B):
        for c in range(C):
            m = (label[b] == c)
            want = torch.zeros(3, 32, 48)
            if m.any():
                ys, xs = m.any(1).nonzero()[:, 0], m.any(0).nonzero()[:, 0]
                crop = (image[b] * m)[:, ys.min():ys.max() + 1, xs.min():xs.max() + 1]
                want = F.interpolate(crop[None], size=(32, 48), mode="nearest")[0]
            assert torch.equal(got[b, 3 * c:3 * c + 3], want), (b, c)


def test_synthscenes_groupdnet_sizes_forward_and_codes():
    nets = build_networks("groupdnet", get_preset("synthscenes"))
    counts = nets.param_counts()
    clvae = build_networks("clvae", get_preset("synthscenes")).param_counts()
    assert abs(counts["G"] + counts["E"] - clvae["G"] - clvae["E"]) < 0.15 * (clvae["G"] + clvae["E"])
    assert counts["D"] == clvae["D"]                                    # the same multi-scale PatchGAN
    assert nets.spec.z_dim == 0 and nets.spec.layers == (0,) and nets.spec.class_kl == "sum"
    label = blobs(2, 10, 64, 64, used=4)
    image = torch.rand(2, 3, 64, 64) * 2 - 1
    nets.eval()
    with torch.no_grad():
        mu, logvar = nets.E(image, label)
        assert mu.z is None and mu.zc.shape == (2, 1, 10, 32)
        assert torch.equal(mu.present[:, 0], torch.stack([torch.bincount(l.flatten(), minlength=10) > 0
                                                          for l in label]))
        a = nets.G(label, mu)
        b = nets.G(label, Latents.prior(nets.spec, label, torch.Generator().manual_seed(0)))
    assert a.shape == (2, 3, 64, 64) and (a - b).abs().max() > 1e-3


def test_each_class_code_reaches_the_output():
    """Changing one class's code changes the image; the code of a class's group is read by that group."""
    nets = build_networks("groupdnet", get_preset("synthscenes")).eval()
    label = blobs(1, 10, 64, 64, used=10)
    z = Latents.prior(nets.spec, label, torch.Generator().manual_seed(1))
    with torch.no_grad():
        base = nets.G(label, z)
        for c in (0, 7):
            zc = z.zc.clone()
            zc[:, :, c] += 1
            assert (nets.G(label, Latents(None, zc, z.present)) - base).abs().max() > 1e-4


@pytest.mark.parametrize("structure", ["deepfashion",
                                       pytest.param("cityscapes", marks=pytest.mark.slow),
                                       pytest.param("ade20k", marks=pytest.mark.slow)])
def test_forward_shapes_per_published_structure(structure):
    """Each structure at its published classes and image size, narrower (ngf / nef divisible by its groups)."""
    small = {"deepfashion": dict(ngf=16, nef=16, spade_hidden=16), "cityscapes": dict(ngf=70, nef=35),
             "ade20k": dict(ngf=16, nef=151)}[structure]
    cfg = replace(PUBLISHED[structure], **small)
    G, E = GroupDNetGenerator(cfg).eval(), GroupDNetEncoder(cfg).eval()
    C, (H, W) = cfg.num_classes, cfg.image_size
    assert [g for *_, g in block_table(cfg)][:7] == {"deepfashion": [8, 8, 4, 4, 2, 2, 1],
                                                     "cityscapes": [35, 35, 20, 14, 10, 4, 1],
                                                     "ade20k": [151, 16, 16, 8, 4, 2, 1]}[structure]
    label = blobs(1, C, H, W, used=6)
    with torch.no_grad():
        mu, logvar = E(torch.rand(1, 3, H, W) * 2 - 1, label)
        gh, gw = cfg.code_grid
        assert mu.zc.shape == (1, 1, C, 8 * gh * gw) and torch.isfinite(logvar.zc).all()
        edges = (torch.rand(1, H, W) < 0.05).float() if structure == "cityscapes" else None
        out = G(label, mu, edges=edges)
        assert out.shape == (1, 3, H, W) and torch.isfinite(out).all()
        if structure == "cityscapes":                                   # instance edges are read
            assert (G(label, mu) - out).abs().max() > 1e-5


def test_kl_sum_is_the_authors_kld_over_every_code():
    g = torch.Generator().manual_seed(0)
    mu, lv = torch.randn(3, 1, 6, 32, generator=g), torch.randn(3, 1, 6, 32, generator=g) * 0.3
    present = torch.zeros(3, 1, 6, dtype=torch.bool)
    present[:, :, :2] = True
    want = -0.5 * torch.sum(1 + lv - mu.pow(2) - lv.exp())              # their KLDLoss
    got = kl_divergence(Latents(None, mu, present), Latents(None, lv, present), classes="sum")
    assert got.item() == pytest.approx(want.item(), rel=1e-5)
    mean = kl_divergence(Latents(None, mu, present), Latents(None, lv, present))   # Eq. 18: present classes only
    assert mean.item() != pytest.approx(want.item(), rel=1e-2)
    with pytest.raises(ValueError, match="choose"):
        kl_divergence(Latents(None, mu, present), Latents(None, lv, present), classes="all")


def test_trains_a_few_steps_through_train_step(tmp_path):
    c = T.TrainConfig(run_dir=str(tmp_path / "run"), variant="groupdnet", preset="synthscenes", data_length=8,
                      steps=2, batch_size=2, perceptual="none", tensorboard=False, progress=False, ckpt_every=2,
                      log_every=1, image_every=0)
    t = T.Trainer(c)
    before = {k: v.clone() for k, v in t.nets.E.state_dict().items()}
    img = torch.stack([t.dataset[i]["image"] for i in range(2)])
    lab = torch.stack([t.dataset[i]["label"] for i in range(2)])
    for _ in range(2):
        losses = t.train_step(img, lab)
    assert all(math.isfinite(v) for v in losses.values()) and losses["kl"] > 0
    assert t.parts.weights.kl == 0.05                                  # their lambda_kld
    after = t.nets.E.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)   # the encoder learns through the KL and G

    # the loop's checkpoint exports and loads as a groupdnet model
    from smis.checkpoint import export_model, load_model
    t2 = T.Trainer(replace(c, run_dir=str(tmp_path / "run2"), steps=1, ckpt_every=1))
    run = t2.fit()
    nets = load_model(export_model(run / "checkpoints" / "step_00000001.pt", tmp_path / "gdn.pt"))
    assert nets.variant == "groupdnet" and nets.spec == t2.nets.spec and nets.D is None
    t2.nets.eval()
    z = Latents.prior(nets.spec, lab, torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert (t2.nets.G(lab, z) - nets.G(lab, z)).abs().max() < 0.02   # fp16 storage


def test_wrong_dataset_clvae_file_and_bad_sources_give_clear_errors(tmp_path):
    ref = reference("deepfashion")
    se = random_state(ref["netE"], 0)
    assert groupdnet_dataset_of(se) == "deepfashion"
    with pytest.raises(CheckpointMismatch, match="deepfashion checkpoint, not ade20k's.*dataset='deepfashion'"):
        load_groupdnet(se, se, "ade20k")                                  # E in the G slot is named too
    bad = dict(se)
    bad.pop("fc_var.bias")
    bad["layer1.0.weight_orig"] = torch.zeros(1, 3, 3, 3)
    with pytest.raises(CheckpointMismatch, match="(?s)GroupDNet deepfashion encoder.*missing: fc_var.bias"):
        load_groupdnet(dict(random_state(ref["netG"], 1)), bad, "deepfashion")
    clvae = json.loads((REFERENCE.parent / "official_checkpoint_keys.json").read_text())["gta5"]["netE"]
    with pytest.raises(CheckpointMismatch, match="(?s)GroupDNet, not CLVAE.*unexpected: fc_mu1.bias"):
        load_groupdnet(dict(random_state(ref["netG"], 1)), random_state(clvae, 2), "deepfashion")   # a CLVAE encoder
    with pytest.raises(ValueError, match="no published GroupDNet checkpoint"):
        load_groupdnet(se, None, "gta5")
    with pytest.raises(ValueError, match="no published GroupDNet for 'gta5'"):
        load_networks(f"groupdnet:gta5:{tmp_path}")
    with pytest.raises(ValueError, match="names no folder"):
        load_networks("groupdnet:deepfashion")
    with pytest.raises(FileNotFoundError, match="latest_net_G.pth"):
        load_networks(f"groupdnet:deepfashion:{tmp_path / 'none'}")
    folder = tmp_path / "cut"
    folder.mkdir()
    torch.save(se, folder / "latest_net_E.pth")
    data = (folder / "latest_net_E.pth").read_bytes()
    (folder / "latest_net_G.pth").write_bytes(data[: len(data) // 2])  # a cut download
    with pytest.raises(CheckpointError, match="latest_net_G.pth"):
        load_networks(f"groupdnet:deepfashion:{folder}")


def test_published_deepfashion_state_loads_strictly_and_runs():
    ref = reference("deepfashion")
    sg, se = random_state(ref["netG"], 2), random_state(ref["netE"], 3)
    G, E = load_groupdnet({"module." + k: v for k, v in sg.items()}, se, "deepfashion")
    assert not G.training and not E.training
    for module, state in ((G, sg), (E, se)):
        ours = module.state_dict()
        assert set(ours) == set(state) and all(torch.equal(ours[k], state[k]) for k in state)
    label = blobs(1, 8, 256, 256, used=5)
    with torch.no_grad():
        mu, _ = E(torch.rand(1, 3, 256, 256) * 2 - 1, label)
        x = G.head_0(G.fc(G.codes(mu)), G.segmap(label, None, torch.float32))
    assert mu.zc.shape == (1, 1, 8, 128) and x.shape == (1, 2560, 4, 4) and torch.isfinite(x).all()


@pytest.mark.slow
def test_import_through_the_published_format_fixture(tmp_path):
    """write_groupdnet_weights writes the files as their code saves them; the model source loads them."""
    paths = write_groupdnet_weights(tmp_path / "df", "deepfashion", seed=0)
    try:
        nets = load_networks(f"groupdnet:deepfashion:{tmp_path / 'df'}")
        assert nets.variant == "groupdnet" and nets.preset.num_classes == 8 and nets.D is None
        ref = reference("deepfashion")
        assert [(k, list(v.shape)) for k, v in nets.G.state_dict().items()] == list(ref["netG"].items())
        label = blobs(1, 8, 256, 256, used=4)
        with torch.no_grad():
            out = nets.G(label, Latents.prior(nets.spec, label, torch.Generator().manual_seed(0)))
        assert out.shape == (1, 3, 256, 256) and torch.isfinite(out).all()
    finally:
        for p in paths:
            p.unlink(missing_ok=True)


def test_groupdnet_config_of_other_presets():
    cfg = groupdnet_config(get_preset("deepfashion"))                  # the paper profile's 16 classes
    assert cfg.num_classes == 16 and cfg.structure == "deepfashion" and cfg.fc_groups == 8 and cfg.nef == 256
    cfg = groupdnet_config(get_preset("cityscapes"))                   # our 20 train ids: nef rounded to 360
    assert cfg.num_classes == 20 and cfg.nef == 360 and cfg.label_lut is None
    assert groupdnet_config(get_preset("ade20k")).label_lut[150] == 0  # our unknown (150) is SPADE's 0
    with pytest.raises(ValueError, match="no sizes for preset 'gta5'"):
        build_networks("groupdnet", "gta5")
    with pytest.raises(ValueError, match="depth= applies"):
        build_networks("groupdnet", "synthscenes", depth=4)


def test_editing_and_the_editor_work_on_groupdnet(tmp_path):
    """Per-class resampling and style-guided synthesis through the same functions and editor as clvae."""
    from smis import editing, sampling
    from smis.data import make_dataset
    from smis.viz import to_uint8
    from smis.widgets import Editor, layer_names

    torch.manual_seed(0)
    nets = build_networks("groupdnet", get_preset("synthscenes", norm_G="instance"), discriminator=False).eval()
    ds = make_dataset("synthscenes", None, "test", size=64, length=4)
    images, labels, codes = editing.encode_dataset(nets, ds)
    assert codes.zc.shape == (4, 1, 10, 32) and codes.z is None

    # style-guided synthesis: the reference's code for the classes both masks share, the prior elsewhere
    g = torch.Generator().manual_seed(3)
    styled = sampling.style_latents(nets.spec, labels[0][None], codes[1], labels[1][None], g)
    prior = Latents.prior(nets.spec, labels[0][None], torch.Generator().manual_seed(3))
    both = editing.shared_classes(labels[0][None], labels[1][None], 10)[0]
    assert both.any() and (~both).any()
    assert torch.equal(styled.zc[0, 0, both], codes.zc[1, 0, both])
    assert torch.equal(styled.zc[0, 0, ~both], prior.zc[0, 0, ~both])

    # per-class resampling: one class's code map changes, every other code is kept exactly
    c = int(torch.unique(labels[0])[0])
    new = editing.resample(codes[0], [c], None, torch.Generator().manual_seed(4))
    changed = (new.zc != codes[0].zc).any(-1)[0, 0]                      # (K,)
    assert changed.tolist() == [k == c for k in range(10)]
    a, b = editing.synthesize(nets, labels[0][None], codes[0]), editing.synthesize(nets, labels[0][None], new)
    assert (a - b).abs().max() > 1e-3
    absent = sorted(set(range(10)) - set(torch.unique(labels[0]).tolist()))[0]
    with pytest.raises(ValueError, match=f"classes \\[{absent}\\] are absent from the mask"):
        editing.resample(codes[0], [absent])

    # the editor: its handlers give the pure functions' images
    assert layer_names(nets) == [("0: one code per class (GroupDNet)", 0)]
    ed = Editor(nets, images, labels, ds.info.class_names, ds.info.palette, codes=codes, seed=7, out_dir=tmp_path)
    assert ed.style_global.disabled and not ed.style_global.value
    g = torch.Generator().manual_seed(7)
    cls = ed.cls.options[0][1]
    ed.cls.value = cls
    ed.resample_button.click()
    want = editing.resample(codes[0], [cls], [0], g)
    assert torch.equal(ed.latents.zc, want.zc)
    assert np.array_equal(ed.after, to_uint8(editing.synthesize(nets, labels[0][None], want)[0]))
    ed.reference.value = 2
    ed.style_button.click()
    want = sampling.style_latents(nets.spec, labels[0][None], codes[2], labels[2][None], g, global_code=False)
    assert torch.equal(ed.latents.zc, want.zc)
    assert np.array_equal(ed.after, to_uint8(editing.synthesize(nets, labels[0][None], want)[0]))


def test_paper_profile_preflight_lists_groupdnet(tmp_path, capsys):
    """ade20k: the published GroupDNet files, checked like the CLVAE ones (a file of another dataset's
    GroupDNet and a truncated file are invalid); deepfashion: a run on the profile's 16-class data, the
    published 8-class model named as not applying, with the training command and its estimate."""
    from smis.reproduce.cli import main
    from smis.reproduce.profiles import GROUPDNET_ROW, PROFILES

    folder = tmp_path / "gdn"
    folder.mkdir()
    torch.save(random_state(reference("deepfashion")["netE"], 0), folder / "latest_net_E.pth")   # DeepFashion's E
    torch.save({"x": torch.zeros(1000)}, tmp_path / "whole.pth")
    (folder / "latest_net_G.pth").write_bytes((tmp_path / "whole.pth").read_bytes()[:500])        # truncated
    rc = main(["--profile", "ade20k", "--check", "--out", str(tmp_path / "out"), "--set",
               f"DATA_ROOT={tmp_path / 'none'}", f"04.MODELS=groupdnet:groupdnet:ade20k:{folder}"])
    text = capsys.readouterr().out
    assert rc == 1
    g = [line for line in text.splitlines() if "published GroupDNet generator (ade20k)" in line]
    e = [line for line in text.splitlines() if "published GroupDNet encoder (ade20k)" in line]
    assert len(g) == 1 and g[0].strip().startswith("INVALID") and "truncated or corrupt" in g[0]
    assert len(e) == 1 and e[0].strip().startswith("INVALID") and "the published deepfashion GroupDNet encoder" in e[0]
    assert "ade20k" in GROUPDNET_ROW and "groupdnet:" in PROFILES["ade20k"]["04_diversity_rq2"]["MODELS"]

    rc = main(["--profile", "deepfashion", "--check", "--out", str(tmp_path / "out"), "--set",
               f"DATA_ROOT={tmp_path / 'none'}"])
    text = capsys.readouterr().out
    run = [line.strip() for line in text.splitlines() if "run groupdnet:" in line]
    assert rc == 1 and len(run) == 1 and run[0].startswith("MISSING  run groupdnet: outputs/runs/deepfashion_groupdnet")
    assert "python -m smis.train --variant groupdnet --preset deepfashion" in run[0]
    assert "does not apply: it has 8 classes" in run[0] and "this profile's data has 16" in run[0]
    assert "h on one H100" in run[0]                                     # the estimate
