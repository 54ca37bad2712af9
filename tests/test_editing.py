"""Tests of smis.editing: exact code bookkeeping of every edit, PCA against a per-class reference,
and the locality / factor measurements against generators whose answer is known."""
from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch

from smis import editing, sampling
from smis.config import get_preset
from smis.networks import Latents, build_networks, cse_map
from smis.networks.latents import code_mask

# instance norm: no untrained running stats
TINY = dict(ngf=4, nef=4, ndf=4, spade_hidden=8, z_dim=8, z_dim_local=4, norm_G="instance")
C = 10



@pytest.fixture(scope="module")
def nets():
    torch.manual_seed(0)
    return build_networks("clvae", get_preset("synthscenes", **TINY), discriminator=False).eval()


def stripes(B: int, classes: list[list[int]], H: int = 64, W: int = 64) -> torch.Tensor:
    """(B, H, W): sample b is vertical bands of classes[b] (equal widths)."""
    band = torch.arange(W) * len(classes[0]) // W                        # (W,)
    return torch.tensor(classes)[:, band][:, None, :].expand(B, H, W).clone()


@pytest.fixture(scope="module")
def data(nets):
    g = torch.Generator().manual_seed(1)
    label = stripes(3, [[0, 1, 2, 3], [1, 4, 5, 6], [0, 7, 8, 2]])
    image = torch.rand(3, 3, 64, 64, generator=g) * 2 - 1
    return image, label, editing.encode(nets, image, label)


def test_sample_images_is_one_batched_call_of_the_prior(nets):
    label = stripes(1, [[0, 3, 5, 9]])
    images, lat = editing.sample_images(nets, label[0], 4, torch.Generator().manual_seed(5))
    ref = Latents.prior(nets.spec, label.expand(4, -1, -1), generator=torch.Generator().manual_seed(5))
    assert torch.equal(lat.zc, ref.zc) and torch.equal(lat.z, ref.z)
    # the codes come from smis.sampling, which draws for label.repeat_interleave(n, 0): the same numbers
    via = sampling.prior_latents(nets, label, 4, torch.Generator().manual_seed(5))
    assert torch.equal(via.zc, ref.zc) and torch.equal(via.z, ref.z) and torch.equal(via.present, ref.present)
    torch.manual_seed(11)                                                 # generator=None: torch's global generator
    _, glob = editing.sample_images(nets, label[0], 2)
    torch.manual_seed(11)
    assert torch.equal(glob.zc, Latents.prior(nets.spec, label.expand(2, -1, -1)).zc)
    with torch.no_grad():
        assert torch.allclose(images, nets.G(label.expand(4, -1, -1), ref), atol=1e-6)
    flat = images.flatten(1)
    assert (torch.cdist(flat, flat) + torch.eye(4) * 1e9).min() > 0       # four different images
    with pytest.raises(ValueError, match="one mask"):
        editing.sample_images(nets, stripes(2, [[0, 1], [1, 2]]), 3)


def test_style_latents_take_reference_codes_only_for_shared_classes(nets, data):
    image, ref_label, ref = data
    label = stripes(2, [[0, 1, 9, 4], [2, 3, 8, 7]])                      # 0 shared with ref 0; 2, 3 shared with ref 0
    reference, rlab = ref[0], ref_label[0:1]                              # classes {0, 1, 2, 3}
    out = editing.style_latents(nets.spec, label, reference, rlab, torch.Generator().manual_seed(3), global_code=True)
    prior = Latents.prior(nets.spec, label, generator=torch.Generator().manual_seed(3))
    shared = torch.tensor([[1, 1, 0, 0, 0, 0, 0, 0, 0, 0], [0, 0, 1, 1, 0, 0, 0, 0, 0, 0]], dtype=torch.bool)
    take = shared[:, None, :] & reference.present                          # (2, L, K)
    assert take.any() and (~take).any()
    assert torch.equal(out.zc[take], reference.zc.expand(2, -1, -1, -1)[take])
    assert torch.equal(out.zc[~take], prior.zc[~take])                   # the prior everywhere else, same draws
    assert torch.equal(out.z, reference.z.expand(2, -1)) and torch.equal(out.present, prior.present)
    # choose classes, layers and no global code
    part = editing.style_latents(nets.spec, label, reference, rlab, torch.Generator().manual_seed(3),
                                 classes=[1, 2], layers=[0, 4], global_code=False)
    mask = torch.zeros_like(take)
    mask[:, 0, 1] = mask[:, 4, 1] = mask[:, 0, 2] = mask[:, 4, 2] = True
    mask &= take
    assert mask.any()
    assert torch.equal(part.zc[mask], reference.zc.expand(2, -1, -1, -1)[mask])
    assert torch.equal(part.zc[~mask], prior.zc[~mask]) and torch.equal(part.z, prior.z)


def test_resample_keeps_every_other_code_exactly(nets, data):
    _, label, lat = data
    out = editing.resample(lat, [1, 4], [0, 2], torch.Generator().manual_seed(0))
    changed = torch.zeros(lat.zc.shape[:3], dtype=torch.bool)
    changed[:, 0, 1] = changed[:, 2, 1] = changed[:, 0, 4] = changed[:, 2, 4] = True
    assert torch.equal(out.zc[~changed], lat.zc[~changed]) and torch.equal(out.z, lat.z)
    assert (out.zc[changed] != lat.zc[changed]).all()
    fresh = torch.randn(lat.zc.shape, generator=torch.Generator().manual_seed(0))
    assert torch.equal(out.zc[changed], fresh[changed])                  # the seed decides the new codes
    both = editing.resample(lat, [], None, torch.Generator().manual_seed(0), global_code=True)
    assert torch.equal(both.zc, lat.zc) and not torch.equal(both.z, lat.z)
    with pytest.raises(ValueError, match=r"layers \[7\] out of range.*0\.\.4"):
        editing.resample(lat, [1], [7])
    with pytest.raises(ValueError, match=r"classes \[10\] out of range"):
        editing.resample(lat, [10])


def test_replace_then_generate_changes_only_through_that_class(nets, data):
    """An object edit by replacement: the other sample's codes for one class, all layers."""
    _, label, lat = data
    edited = lat[0].replace(lat[2], classes=[0])                          # class 0 is in samples 0 and 2
    keep = torch.ones(lat.zc.shape[1:3], dtype=torch.bool)
    keep[:, 0] = False
    assert torch.equal(edited.zc[0][keep], lat.zc[0][keep]) and torch.equal(edited.zc[0][:, 0], lat.zc[2][:, 0])


def test_paste_classes_copies_exactly_the_chosen_pixels():
    g = torch.Generator().manual_seed(0)
    label = stripes(2, [[0, 1, 2, 3], [3, 2, 1, 0]])
    image, source = torch.rand(2, 3, 64, 64, generator=g), torch.rand(1, 3, 64, 64, generator=g)
    out = editing.paste_classes(image, source, label, [1, 3])
    keep = (label == 1) | (label == 3)
    assert torch.equal(out.permute(0, 2, 3, 1)[keep], source.expand(2, -1, -1, -1).permute(0, 2, 3, 1)[keep])
    assert torch.equal(out.permute(0, 2, 3, 1)[~keep], image.permute(0, 2, 3, 1)[~keep])


def test_principal_directions_match_svd_of_each_class_codes():
    g = torch.Generator().manual_seed(0)
    M, L, K, N = 40, 3, 4, 5
    scale = torch.tensor([3.0, 2.0, 1.0, 0.5, 0.1])
    zc = torch.randn(M, L, K, N, generator=g) * scale + torch.randn(L, K, N, generator=g)
    present = torch.rand(M, L, K, generator=g) > 0.3
    present[:, 2, 3] = False
    present[0, 2, 3] = True                                               # one code only: no PCA there
    codes = Latents(torch.zeros(M, 2), torch.where(present[..., None], zc, 0.0), present)
    d = editing.principal_directions(codes, k=3)
    assert d.components.shape == (L, K, 3, N) and d.std.shape == (L, K, 3)
    assert torch.equal(d.count, present.sum(0))
    for l in range(L):                                                    # reference: one SVD per (l, k)
        for k in range(K):
            x = zc[present[:, l, k], l, k].double()
            if len(x) < 2:
                continue
            _, s, vh = torch.linalg.svd(x - x.mean(0), full_matrices=False)
            assert torch.allclose(d.mean[l, k].double(), x.mean(0), atol=1e-5)
            assert torch.allclose(d.std[l, k].double(), s[:3] / (len(x) - 1) ** 0.5, rtol=1e-4)
            cos = (d.components[l, k].double() * vh[:3]).sum(-1).abs()
            assert torch.allclose(cos, torch.ones(3, dtype=torch.float64), atol=1e-4)
            big = d.components[l, k].abs().argmax(-1)
            assert (d.components[l, k].gather(-1, big[:, None]) > 0).all()   # deterministic sign
    assert d.count[2, 3] == 1
    with pytest.raises(ValueError, match="k=6 directions"):
        editing.principal_directions(codes, k=6)


def test_move_changes_one_code_by_alpha_times_direction(data):
    _, _, lat = data
    N = lat.zc.shape[-1]
    d = editing.random_direction(N, torch.Generator().manual_seed(0))
    assert torch.isclose(d.norm(), torch.tensor(1.0))
    out = editing.move(lat, 2, 3, d, 1.5)
    diff = out.zc - lat.zc
    assert torch.allclose(diff[:, 3, 2], 1.5 * d.expand(3, -1))
    diff[:, 3, 2] = 0
    assert diff.abs().max() == 0 and torch.equal(out.z, lat.z)
    sweep = editing.move(lat[0].expand(4), 2, 3, d, torch.tensor([-2.0, 0.0, 1.0, 2.0]))
    assert torch.allclose(sweep.zc[:, 3, 2] - lat.zc[0, 3, 2], torch.tensor([-2.0, 0.0, 1.0, 2.0])[:, None] * d)
    dirs = torch.eye(N)[:2]
    two = editing.move(lat, 0, 0, dirs, torch.tensor([[1.0, 2.0], [0.0, 0.0], [3.0, -1.0]]))
    assert torch.allclose((two.zc - lat.zc)[:, 0, 0, :2], torch.tensor([[1.0, 2.0], [0.0, 0.0], [3.0, -1.0]]))
    with pytest.raises(ValueError, match="alpha of shape"):
        editing.move(lat, 0, 0, dirs, torch.ones(3))
    with pytest.raises(ValueError, match="out of range"):
        editing.move(lat, 10, 0, d, 1.0)
    with pytest.raises(ValueError, match=r"direction must be \(N,\) or \(D, N\) with N = 4"):
        editing.move(lat, 0, 0, torch.ones(3), 1.0)


def test_interpolate_lerps_only_the_chosen_codes(data):
    _, _, lat = data
    out = editing.interpolate(lat[0], lat[1], [0.0, 0.25, 1.0], classes=[1], layers=[4])
    assert torch.equal(out.zc[0], lat.zc[0])
    assert torch.allclose(out.zc[1, 4, 1], 0.75 * lat.zc[0, 4, 1] + 0.25 * lat.zc[1, 4, 1])
    assert torch.equal(out.zc[2, 4, 1], lat.zc[1, 4, 1])
    rest = torch.ones(lat.zc.shape[1:3], dtype=torch.bool)
    rest[4, 1] = False
    assert torch.equal(out.zc[:, rest], lat.zc[0, rest].expand(3, -1, -1))
    assert torch.equal(out.z, lat.z[0].expand(3, -1))
    with pytest.raises(ValueError, match="batch-1"):
        editing.interpolate(lat, lat, [0.5])


def test_variants_without_class_codes_say_how_to_edit(data):
    torch.manual_seed(0)
    vae = build_networks("gaugan_vae", get_preset("synthscenes", **TINY), discriminator=False).eval()
    image, label, _ = data
    mu = editing.encode(vae, image, label)
    assert mu.zc is None
    with pytest.raises(ValueError, match="global_code=True"):
        editing.resample(mu, [1])
    new = editing.resample(mu, None, None, torch.Generator().manual_seed(0), global_code=True)
    assert new.z.shape == mu.z.shape and not torch.equal(new.z, mu.z)
    out = editing.style_latents(vae.spec, label, mu[0], label[0:1], torch.Generator().manual_seed(0))
    assert torch.equal(out.z, mu.z[0].expand(3, -1))


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
    r = editing.edit_locality(fake_nets("local"), label, lat, cls, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(r["inside"], torch.ones(4)) and torch.allclose(r["near"], torch.ones(4))
    assert torch.allclose(r["area"], torch.full((4,), 0.25)) and (r["change"] > 0).all()
    r = editing.edit_locality(fake_nets("global"), label, lat, cls, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(r["inside"], torch.full((4,), 0.25), atol=1e-5)     # spread evenly: the area share
    assert (r["near"] > r["inside"]).all()
    # editing only layer 0 of the local generator: still inside; and the right codes were changed
    r0 = editing.edit_locality(fake_nets("local"), label, lat, cls, layers=[0],
                               generator=torch.Generator().manual_seed(0))
    assert torch.allclose(r0["inside"], torch.ones(4))


def test_case_mask_marks_one_class_and_layer_per_sample():
    lat = fake_latents(3, L=4)
    m = editing.case_mask(lat, torch.tensor([1, 0, 9]), torch.tensor([3, 0, 2]))
    assert m.sum() == 3 and m[0, 3, 1] and m[1, 0, 0] and m[2, 2, 9]
    m = editing.case_mask(lat, torch.tensor([1, 0, 9]))
    assert m.sum() == 12 and m[:, :, 1].sum() == 4
    with pytest.raises(ValueError, match="one id in 0..9 per sample"):
        editing.case_mask(lat, torch.tensor([1, 2]))


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
    texture = editing.layer_factor_effects(fake_nets("factors"), label, lat, cls, fine, g, estimate)
    colour = editing.layer_factor_effects(fake_nets("factors"), label, lat, cls, coarse, g, estimate)
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
    rep = editing.editing_report(nets, labels, mu, torch.Generator().manual_seed(0), batch_size=64)
    samples, classes = editing.edit_cases(labels, C)
    assert rep["cases"] == len(samples) >= 16 and rep["images"] == 4
    assert 0 <= rep["locality"]["inside"] <= rep["locality"]["near"] <= 1
    assert [r["layer"] for r in rep["layers"]] == list(range(5))
    assert rep["layers"][0]["cases"] == len(samples)                     # every class is visible at the finest scale
    assert rep["layers"][4]["cases"] < len(samples)                      # small objects vanish at 1/32
    post = editing.layer_posteriors(nets, images, labels, batch_size=3)
    mu_all, logvar = nets.E(images, labels)                              # by hand: Eq. 18's class term per layer
    per = -0.5 * (1 + logvar.zc - mu_all.zc ** 2 - logvar.zc.exp()).sum(-1)            # (M, L, K)
    p = mu_all.present.float()
    want = ((per * p).sum(-1) / p.sum(-1).clamp(min=1)).mean(0)
    np.testing.assert_allclose(post["kl"], want.detach().numpy(), rtol=1e-4)
    table = editing.layer_table(nets, rep, post)
    assert list(table.index) == list(range(5)) and list(table["encoder layer"]) == [1, 2, 3, 4, 5]
    assert list(table["generator blocks"]) == ["up_2", "up_1", "up_0", "G_middle_0, G_middle_1", "head_0"]
    assert np.allclose(table["KL"], post["kl"]) and (table["mean |mu|"] >= 0).all()
    # the report is the composition of its named steps, drawing from one generator in this order
    g = torch.Generator().manual_seed(0)
    s, c = editing.editable_cases(labels, mu, C)
    assert torch.equal(s, samples) and torch.equal(c, classes)            # every class of these masks is coded
    assert editing.locality_summary(nets, labels, mu, s, c, g, batch_size=64) == rep["locality"]
    assert editing.layer_effects(nets, labels, mu, s, c, g, batch_size=64) == rep["layers"]
    i, cc, ll = editing.layer_cases(nets, labels, s, c)
    per_layer = torch.tensor([r["cases"] for r in rep["layers"]])
    assert len(i) == len(cc) == per_layer.sum() and torch.equal(torch.bincount(ll, minlength=5), per_layer)
    # notebook 06's tables and "What we learnt" lines come from the library
    loc = editing.locality_table({"clvae": rep})
    assert list(loc.columns) == ["cases", "inside", "near", "area", "change", "inside_median"]
    assert loc.loc["clvae", "cases"] == rep["cases"] and loc.loc["clvae", "inside"] == rep["locality"]["inside"]
    lines = editing.findings({"clvae": rep}, table.round(3), editor_ms=41.6, threads=2)
    assert len(lines) == 4 and all(line.startswith("- ") for line in lines)
    assert f"{100 * rep['locality']['inside']:.0f} % of the pixel change inside" in lines[0]
    assert "baseline" not in lines[0] and "median 42 ms per slider update here (2 thread(s))" in lines[3]
    assert len(editing.findings({"clvae": rep, "gaugan_vae": rep}, table.round(3))) == 3
    assert "the baseline without class codes puts" in editing.findings({"clvae": rep, "gaugan_vae": rep}, table)[0]
    with pytest.raises(ValueError, match="no class covers 10000 pixels"):
        editing.editing_report(nets, labels, mu, g, min_pixels=10000)


def test_collapsed_layers_is_the_posterior_collapse_diagnostic():
    assert editing.collapsed_layers(np.array([0.01, 0.3, 0.049, 0.05])) == [0, 2]
    assert editing.collapsed_layers([1.0, 2.0]) == [] and editing.collapsed_layers([0.2, 0.1], threshold=0.15) == [1]
    kl = pd.DataFrame({"KL": [0.3, 0.001]}).round(3)["KL"].to_numpy()
    assert editing.collapsed_layers(kl) == [1]


def test_findings_say_whether_the_papers_split_appears():
    rep = {"locality": {"inside": 0.8, "near": 0.9, "area": 0.2}}
    layers = pd.DataFrame({"encoder layer": [1, 5], "generator blocks": ["up_2", "head_0"],
                           "colour mode changed": [0.1, 0.6], "texture kind changed": [0.5, 0.2], "KL": [0.2, 0.01]})
    lines = editing.findings({"clvae": rep}, layers)
    assert lines[0].startswith("- Object edits are local: resampling one class's codes puts 80 % of the pixel change")
    assert "colour mode changed in 60 % of edits, texture kind in 20 %, KL 0.010" in lines[1]
    assert "**appears** here. Latent layers [1] have collapsed to the prior (KL < 0.05)" in lines[2]
    layers["texture kind changed"] = [0.1, 0.2]
    layers["KL"] = [0.2, 0.3]
    assert "**does not appear** here. No latent layer has collapsed (every KL >= 0.05)." in editing.findings(
        {"clvae": rep}, layers)[2]


# -- argument validation: one rule for ids and label maps, absent classes are errors -----------------

def test_editing_refuses_float_ids_and_float_labels_instead_of_truncating(nets, data):
    image, label, lat = data
    for bad in ([1.5], [1.0], [True], torch.tensor([1.0])):               # 1.5 used to edit class 1
        with pytest.raises(TypeError, match="integer id"):
            editing.resample(lat, bad)
    with pytest.raises(TypeError, match="integer id"):
        editing.resample(lat, [1], [0.0])
    with pytest.raises(TypeError, match="cls must be one integer id"):
        editing.move(lat, 1.0, 0, torch.ones(4), 1.0)
    with pytest.raises(TypeError, match="layer must be one integer id"):
        editing.move(lat, 1, 2.0, torch.ones(4), 1.0)
    with pytest.raises(TypeError, match="integer id"):
        editing.case_mask(lat, torch.tensor([1.0, 1.0, 0.0]))
    with pytest.raises(TypeError, match="integer id"):
        editing.paste_classes(image, image, label, [1.0])
    # -1 is out of range everywhere (Latents.replace used to edit class 9), with the same message
    for edit in (lambda: editing.resample(lat, [-1]), lambda: lat.replace(lat, classes=[-1]),
                 lambda: code_mask((5, 10), [-1]), lambda: editing.move(lat, -1, 0, torch.ones(4), 1.0),
                 lambda: editing.interpolate(lat[0], lat[1], [0.5], classes=[-1])):
        with pytest.raises(ValueError, match=r"\[-1\] out of range: the codes have K = 10 classes; use 0\.\.9"):
            edit()
    with pytest.raises(ValueError, match=r"layer \[-1\] out of range"):
        editing.move(lat, 1, -1, torch.ones(4), 1.0)
    # float label maps: refused like the generator refuses them (they were silently .long()-ed)
    flt = label.float()
    for call in (lambda: editing.synthesize(nets, flt, lat), lambda: editing.sample_images(nets, flt[0], 2),
                 lambda: editing.encode(nets, image, flt), lambda: editing.edit_cases(flt, C),
                 lambda: editing.paste_classes(image, image, flt, [1]), lambda: editing.shared_classes(flt, label, C),
                 lambda: editing.style_latents(nets.spec, flt, lat[0], label[0:1]),
                 lambda: editing.style_latents(nets.spec, label, lat[0], flt[0:1])):
        with pytest.raises(TypeError, match="integer class ids, got dtype torch.float32; use label.long"):
            call()
    with pytest.raises(ValueError, match=r"\[0, 10\), found \[0, 12\]"):
        editing.edit_cases(label + (label == 8).long() * 4, C)


def test_editing_a_class_absent_from_the_mask_is_an_error(nets, data):
    """Class 9 is in no mask of `data` ([0 1 2 3], [1 4 5 6], [0 7 8 2]): editing it changed nothing
    silently (and a locality measurement became NaN); now a ValueError names it and the classes present."""
    image, label, lat = data
    present = r"the classes present are \[0, 1, 2, 3, 4, 5, 6, 7, 8\]"
    with pytest.raises(ValueError, match=r"resample: classes \[9\] are absent from the mask \(" + present):
        editing.resample(lat, [1, 9])
    assert not torch.equal(editing.resample(lat, [1, 4]).zc, lat.zc)     # in some sample of the batch: fine
    one = r"the classes present are \[0, 1, 2, 3\]"                      # sample 0 alone
    d = torch.ones(4)
    for what, edit in (("replace", lambda: lat[0].replace(lat[1], classes=[4])),
                       ("move", lambda: editing.move(lat[0], 4, 0, d, 1.0)),
                       ("replace", lambda: editing.interpolate(lat[0], lat[1], [0.5], classes=[4])),
                       ("resample", lambda: editing.resample(lat[0], [4], [0]))):
        with pytest.raises(ValueError, match=rf"{what}: classes \[4\] are absent from the mask \({one}"):
            edit()
    with pytest.raises(ValueError, match=r"style_latents: classes \[5\] are absent"):
        editing.style_latents(nets.spec, stripes(1, [[0, 1, 9, 4]]), lat[1], label[1:2], classes=[5])
    with pytest.raises(ValueError, match=r"paste_classes: classes \[9\] are absent from the mask"):
        editing.paste_classes(image, image, label, [1, 9])
    with pytest.raises(ValueError, match=r"case_mask: class 0 is absent from the mask of sample 1 "
                                         r"\(it has classes \[1, 4, 5, 6\]\)"):
        editing.case_mask(lat, torch.tensor([0, 0, 0]))
    # the locality measurement: NaN before, an error naming the sample now
    four = stripes(2, [[0, 1, 2, 3], [4, 5, 6, 7]])
    with pytest.raises(ValueError, match=r"edit_locality: class 1 is absent from the mask of sample 1 "
                                         r"\(it has classes \[4, 5, 6, 7\]\)"):
        editing.edit_locality(fake_nets("local"), four, fake_latents(2), torch.tensor([1, 1]))
    with pytest.raises(ValueError, match=r"layer_factor_effects: class 0 is absent from the mask of sample 1"):
        editing.layer_factor_effects(fake_nets("factors"), four, fake_latents(2), torch.tensor([0, 0]),
                                     torch.tensor([0, 1]))


def test_editing_report_generates_each_unedited_photo_once_with_the_same_numbers():
    """The unedited image of a photo is generated once (`reconstructions`), not once per edited class and
    layer; the report's numbers are those of generating it with every case (the stand-in G is exact per image)."""
    nets = fake_nets("factors", L=3)
    images_made = []
    G = nets.G
    nets.G = lambda label, z: (images_made.append(label.shape[0]), G(label, z))[1]
    label = stripes(5, [[0, 1, 2, 3], [1, 4, 5, 6], [0, 7, 8, 2], [3, 9, 1, 5], [6, 2, 8, 4]])
    lat = fake_latents(5, L=3)
    rep = editing.editing_report(nets, label, lat, torch.Generator().manual_seed(0), batch_size=4)
    samples, classes = editing.editable_cases(label, lat, C)
    cases_i, cases_c, cases_l = editing.layer_cases(nets, label, samples, classes)
    assert len(samples) == 20 and len(cases_i) == 60
    assert sum(images_made) == 5 + len(samples) + len(cases_i)           # was 2 x (20 + 60)
    # the same cases, each generated together with its unedited image (edit_locality / layer_factor_effects
    # without `before`), drawing from the same generator in the same order
    g = torch.Generator().manual_seed(0)
    loc = [editing.edit_locality(nets, label[samples[s]], lat[samples[s]], classes[s], generator=g)
           for s in sampling.chunks(len(samples), 4)]
    loc = {k: torch.cat([r[k] for r in loc]) for k in loc[0]}
    ok = loc["change"] > 0
    for k in ("inside", "near", "area", "change"):
        assert rep["locality"][k] == float(loc[k][ok].mean())
    eff = [editing.layer_factor_effects(nets, label[cases_i[s]], lat[cases_i[s]], cases_c[s], cases_l[s], g)
           for s in sampling.chunks(len(cases_i), 4)]
    eff = {k: np.concatenate([r[k] for r in eff]) for k in eff[0]}
    for row in rep["layers"]:
        m = cases_l.numpy() == row["layer"]
        assert row["cases"] == int(m.sum())
        for k in ("colour_shift", "hf_change", "mode_changed", "texture_changed"):
            np.testing.assert_array_equal(row[k], np.nanmean(eff[k][m]))
    with pytest.raises(ValueError, match="one unedited image"):
        editing.edit_locality(nets, label[:2], lat[:2], torch.tensor([0, 1]), before=torch.zeros(3, 3, 64, 64))


def _layer_rows(shares):
    """A layer table's records from {layer: (colour, texture, shading)} shares of 200 edits each, with the
    Wilson intervals the editing report gives them."""
    rows = []
    for l, vals in shares.items():
        row = {"layer": l}
        for f, v in zip(("colour mode", "texture kind", "shading"), vals):
            lo, hi = editing.wilson_interval(np.array([round(200 * v)]), np.array([200]))
            row.update({f"{f} changed": v, f"{f} changed lo": float(lo[0]), f"{f} changed hi": float(hi[0])})
        rows.append(row)
    return pd.DataFrame(rows)


def test_layer_split_needs_separated_intervals_at_both_ends():
    from smis.editing import layer_split
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
    exp = editing.read_layer_experiment(path)
    assert not exp["splits"]["paper"]["appears"] and exp["splits"]["freebits"]["appears"]
    assert list(exp["versus"]) == ["freebits"] and exp["versus"]["freebits"].loc["mask mIoU", "CI high"] == -0.02
    assert list(exp["versus"]["freebits"].columns[:2]) == ["paper", "system"]
    assert list(exp["models"]) == ["paper", "freebits"]                  # the reference first, as written or not
    summary = editing.experiment_summary(exp)
    assert summary.loc[("paper", 1), "active units"] == "0 / 80"
    assert summary.loc[("freebits", 0), "texture kind changed (%)"].startswith("40 [")
    table = editing.experiment_markdown(exp).splitlines()
    assert table[0] == "| layer (blocks) | paper | freebits |" and len(table) == 2 + 5
    assert table[2].startswith("| 0 | KL 1.00, 70 / 80 AU; colour 35 [") and "texture 40 [" in table[2]
    with pytest.raises(FileNotFoundError, match="scripts/layer_experiment.py"):
        editing.read_layer_experiment(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text('{"models": {"x": {}}}')
    with pytest.raises(ValueError, match="bad.json.*write it again"):
        editing.read_layer_experiment(tmp_path / "bad.json")
