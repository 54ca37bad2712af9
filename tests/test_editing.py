"""Tests of smis.editing: exact code bookkeeping of every edit, PCA against a per-class reference, and
one rule for ids and label maps (the measurements of the edits: tests/test_edit_measures.py)."""
from __future__ import annotations


import pytest
import torch

from smis import editing, sampling
from smis.config import get_preset
from smis.networks import Latents, build_networks
from smis.networks.latents import code_mask

# instance norm: no untrained running stats
TINY = dict(ngf=4, nef=4, ndf=4, spade_hidden=8, z_dim=8, z_dim_local=4, norm_G="instance")
C = 10


def tiny_clvae():
    """A tiny untrained clvae (seed 0; instance norm), in eval mode."""
    torch.manual_seed(0)
    return build_networks("clvae", get_preset("synthscenes", **TINY), discriminator=False).eval()


@pytest.fixture(scope="module")
def nets():
    return tiny_clvae()


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
    out = sampling.style_latents(nets.spec, label, reference, rlab, torch.Generator().manual_seed(3), global_code=True)
    prior = Latents.prior(nets.spec, label, generator=torch.Generator().manual_seed(3))
    shared = torch.tensor([[1, 1, 0, 0, 0, 0, 0, 0, 0, 0], [0, 0, 1, 1, 0, 0, 0, 0, 0, 0]], dtype=torch.bool)
    take = shared[:, None, :] & reference.present                          # (2, L, K)
    assert take.any() and (~take).any()
    assert torch.equal(out.zc[take], reference.zc.expand(2, -1, -1, -1)[take])
    assert torch.equal(out.zc[~take], prior.zc[~take])                   # the prior everywhere else, same draws
    assert torch.equal(out.z, reference.z.expand(2, -1)) and torch.equal(out.present, prior.present)
    # choose classes, layers and no global code
    part = sampling.style_latents(nets.spec, label, reference, rlab, torch.Generator().manual_seed(3),
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
    out = sampling.style_latents(vae.spec, label, mu[0], label[0:1], torch.Generator().manual_seed(0))
    assert torch.equal(out.z, mu.z[0].expand(3, -1))


def test_case_mask_marks_one_class_and_layer_per_sample():
    lat = Latents(torch.zeros(3, 4), torch.zeros(3, 4, C, 3), torch.ones(3, 4, C, dtype=torch.bool))   # L = 4
    m = editing.case_mask(lat, torch.tensor([1, 0, 9]), torch.tensor([3, 0, 2]))
    assert m.sum() == 3 and m[0, 3, 1] and m[1, 0, 0] and m[2, 2, 9]
    m = editing.case_mask(lat, torch.tensor([1, 0, 9]))
    assert m.sum() == 12 and m[:, :, 1].sum() == 4
    with pytest.raises(ValueError, match="one id in 0..9 per sample"):
        editing.case_mask(lat, torch.tensor([1, 2]))


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
                 lambda: editing.encode(nets, image, flt),
                 lambda: editing.paste_classes(image, image, flt, [1]), lambda: editing.shared_classes(flt, label, C),
                 lambda: sampling.style_latents(nets.spec, flt, lat[0], label[0:1]),
                 lambda: sampling.style_latents(nets.spec, label, lat[0], flt[0:1])):
        with pytest.raises(TypeError, match="integer class ids, got dtype torch.float32; use label.long"):
            call()


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
        sampling.style_latents(nets.spec, stripes(1, [[0, 1, 9, 4]]), lat[1], label[1:2], classes=[5])
    with pytest.raises(ValueError, match=r"paste_classes: classes \[9\] are absent from the mask"):
        editing.paste_classes(image, image, label, [1, 9])
    with pytest.raises(ValueError, match=r"case_mask: class 0 is absent from the mask of sample 1 "
                                         r"\(it has classes \[1, 4, 5, 6\]\)"):
        editing.case_mask(lat, torch.tensor([0, 0, 0]))
