"""Tests of smis.networks: shapes, vectorised ops against loop references, wiring, gradients, latents."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from smis.config import PRESETS, get_preset
from smis.losses import d_hinge_loss, feature_matching_loss, g_hinge_loss, kl_divergence, PerceptualLoss
from smis.networks import (BLOCK_LAYER, VARIANTS, Latents, LatentSpec, build_networks, classwise_max_pool,
                           cse_map, one_hot, resize_labels)
from torch import nn

from smis.networks.ops import frozen_spectral_norm, spectral_norm
from smis.networks.latents import check_class_ids, check_label, check_layer_ids, code_mask

TINY = dict(ngf=4, nef=4, ndf=4, spade_hidden=8, z_dim=8, z_dim_local=4)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)                                                # weight init uses the global RNG


def tiny(name: str = "synthscenes", **kw):
    return get_preset(name, **{**TINY, **kw})


def block_label(B: int, H: int, W: int, C: int, cell: int, seed: int = 0) -> torch.Tensor:
    """Label map of cell x cell blocks whose classes cycle through all C ids (then shuffled per sample)."""
    g = torch.Generator().manual_seed(seed)
    ys, xs = torch.meshgrid(torch.arange(H) // cell, torch.arange(W) // cell, indexing="ij")
    base = (ys * (W // cell) + xs) % C                                  # (H, W)
    perms = torch.stack([torch.randperm(C, generator=g) for _ in range(B)])   # (B, C)
    return perms.gather(1, base.reshape(1, -1).expand(B, -1)).view(B, H, W)


def random_label(B, H, W, C, seed=0, absent=(), speck=None):
    """Blobby random labels; `absent` ids never occur; `speck` id occupies one odd pixel only."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.randint(0, C, (B, 1, H // 8, W // 8), generator=g).float()
    lab = F.interpolate(coarse, size=(H, W), mode="nearest")[:, 0].long()
    removed = set(absent) | ({speck} if speck is not None else set())
    fill = min(set(range(C)) - removed)
    lab[torch.isin(lab, torch.tensor(sorted(removed), dtype=torch.long))] = fill
    if speck is not None:
        lab[:, 1, 1] = speck                                            # vanishes under x2 legacy nearest
    return lab


# -- loop references (slow, obviously correct) --------------------------------------------------
def pool_loop(feat, label, C):
    B, D = feat.shape[:2]
    out = feat.new_zeros(B, C, D)
    present = torch.zeros(B, C, dtype=torch.bool)
    for b in range(B):
        for c in range(C):
            m = label[b] == c
            if m.any():
                out[b, c] = feat[b][:, m].max(dim=1).values
                present[b, c] = True
    return out, present


def cse_loop(table, label):
    B, C, N = table.shape
    out = table.new_zeros(B, N, *label.shape[1:])
    for b in range(B):
        for c in range(C):
            m = label[b] == c
            out[b][:, m] = table[b, c][:, None]
    return out


# -- vectorised ops ------------------------------------------------------------------------------
def test_classwise_max_pool_matches_loop_values_and_grads():
    C = 12
    label = random_label(3, 32, 32, C, seed=1, absent=(11,), speck=10)
    for l in range(0, 4):                                               # scales 1 .. 1/8
        lab = resize_labels(label, (32 >> l, 32 >> l))
        feat = torch.randn(3, 5, 32 >> l, 32 >> l, dtype=torch.float64, requires_grad=True)
        w = torch.randn(3, C, 5, dtype=torch.float64)
        fast, pres = classwise_max_pool(feat, lab, C)
        (fast * w).sum().backward()
        g_fast, feat.grad = feat.grad.clone(), None
        slow, pres_slow = pool_loop(feat, lab, C)
        (slow * w).sum().backward()
        assert torch.equal(pres, pres_slow)
        assert torch.allclose(fast, slow)
        assert torch.allclose(g_fast, feat.grad)
        assert not pres[:, 11].any()                                    # absent everywhere
        assert bool(pres[:, 10].all()) == (l == 0)                      # the speck vanishes at 1/2
        assert (fast[~pres] == 0).all()


def test_cse_gather_matches_loop_and_dense_product():
    B, C, N = 2, 7, 5
    label = random_label(B, 16, 24, C, seed=2, absent=(6,))
    table = torch.randn(B, C, N, dtype=torch.float64, requires_grad=True)
    fast = cse_map(table, label)
    slow = cse_loop(table, label)
    dense = torch.einsum("bchw,bcn->bnhw", one_hot(label, C, torch.float64), table)
    assert fast.shape == (B, N, 16, 24)
    assert torch.equal(fast, slow)
    assert torch.allclose(fast, dense)
    g = torch.randn_like(fast)
    (ga,) = torch.autograd.grad(fast, table, g)
    (gb,) = torch.autograd.grad(dense, table, g)
    assert torch.allclose(ga, gb)
    assert (ga[:, 6] == 0).all()                                        # absent class gets no gradient


def test_resize_labels_is_legacy_nearest():
    label = torch.arange(64).view(1, 8, 8)
    assert torch.equal(resize_labels(label, (4, 4)), label[:, ::2, ::2])
    assert torch.equal(resize_labels(label, (2, 4)), label[:, ::4, ::2])


# -- shapes ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("variant", sorted(v for v in VARIANTS if VARIANTS[v].family == "spade"))
def test_every_variant_shapes(variant):            # other families: tests/test_groupdnet.py, tests/test_cimle.py
    nets = build_networks(variant, tiny())
    B, C = 2, nets.spec.num_classes
    label = random_label(B, 64, 64, C, seed=3)
    image = torch.rand(B, 3, 64, 64) * 2 - 1
    spec = nets.spec
    if nets.E is None:
        assert variant == "gaugan" and spec.z_dim == 0
        z = None
        assert Latents.prior(spec, label).z is None
    else:
        mu, logvar = nets.E(image, label)
        assert mu.z.shape == logvar.z.shape == (B, spec.z_dim)
        if spec.has_class_codes:
            L, K = len(spec.layers), spec.code_classes
            assert mu.zc.shape == logvar.zc.shape == (B, L, K, spec.z_dim_local)
            assert mu.present.shape == (B, L, K)
        else:
            assert mu.zc is None
        z = Latents.reparameterize(mu, logvar, torch.Generator().manual_seed(0))
    fake = nets.G(label, z)
    assert fake.shape == (B, 3, 64, 64)
    assert fake.abs().max() <= 1
    zp = Latents.prior(spec, label, torch.Generator().manual_seed(0))
    assert nets.G(label, zp).shape == (B, 3, 64, 64)                    # gaugan: an empty Latents
    feats = nets.D(label, fake)
    assert len(feats) == 2 and all(len(f) == 5 for f in feats)
    assert feats[0][-1].shape[:2] == (B, 1) and feats[1][-1].shape[-1] < feats[0][-1].shape[-1]


EXPECTED_LATENTS = {  # variant: (layers, K is C, layerwise)
    "clvae": ((1, 2, 3, 4, 5), True, True), "no_classwise": ((1, 2, 3, 4, 5), False, True),
    "no_layerwise": ((3,), True, False), "clvae_L3": ((1, 2), True, True),
    "clvae_L4": ((1, 2, 3), True, True), "clvae_L5": ((1, 2, 3, 4), True, True),
}


@pytest.mark.parametrize("variant", sorted(EXPECTED_LATENTS))
def test_variant_latent_specs(variant):
    nets = build_networks(variant, tiny(), discriminator=False)
    layers, classwise, layerwise = EXPECTED_LATENTS[variant]
    assert nets.spec.layers == layers and nets.spec.classwise == classwise and nets.spec.layerwise == layerwise
    keys = nets.E.state_dict().keys()
    depth = max(l for l in range(1, 7) if f"layer{l}.0.weight_orig" in keys)
    assert depth == (int(variant[-1]) if variant.startswith("clvae_L") else 6)
    assert {k.split(".")[0] for k in keys if k.startswith("fc_mu") and k != "fc_mu.weight" and k != "fc_mu.bias"} \
        == {f"fc_mu{l}" for l in layers}


def test_depth_argument_equals_named_variant():
    a = build_networks("clvae", tiny(), depth=4, discriminator=False)
    b = build_networks("clvae_L4", tiny(), discriminator=False)
    assert a.spec == b.spec
    assert {k: v.shape for k, v in a.state_dict().items()} == {k: v.shape for k, v in b.state_dict().items()}
    with pytest.raises(ValueError, match="depth=2"):
        build_networks("clvae", tiny(), depth=2)


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_builds_and_runs_at_its_size(name):
    p = get_preset(name, ngf=2, nef=2, ndf=2, spade_hidden=4, z_dim=4, z_dim_local=3)
    nets = build_networks("clvae", p)
    H, W = p.image_size
    label = random_label(1, H, W, p.num_classes, seed=4)
    image = torch.rand(1, 3, H, W) * 2 - 1
    with torch.no_grad():
        mu, logvar = nets.E(image, label)
        fake = nets.G(label, mu)
        feats = nets.D(label, fake)
    assert fake.shape == (1, 3, H, W)
    assert mu.zc.shape == (1, 5, p.num_classes, 3)
    assert feats[0][-1].shape[1] == 1


@pytest.mark.parametrize("upsampling,size", [("more", (64, 128)), ("most", (128, 128))])
def test_upsampling_variants_and_non_square(upsampling, size):
    nets = build_networks("clvae", tiny(upsampling=upsampling, image_size=size), discriminator=False)
    assert (nets.G.sh, nets.G.sw) == (size[0] >> (6 if upsampling == "more" else 7),
                                      size[1] >> (6 if upsampling == "more" else 7))
    label = random_label(2, *size, 10, seed=5)
    z = Latents.prior(nets.spec, label, torch.Generator().manual_seed(1))
    assert nets.G(label, z).shape == (2, 3, *size)
    assert hasattr(nets.G, "up_4") == (upsampling == "most")


# -- wiring of the CSE maps (Eq. 12) -----------------------------------------------------------------
def captured_conditions(G, label, z):
    got = {}
    hooks = [getattr(G, name).norm_0.register_forward_hook(
                 lambda m, args, out, name=name: got.__setitem__(name, args[1]))
             for name in [*BLOCK_LAYER, "up_3"]]
    try:
        G(label, z)
    finally:
        for h in hooks:
            h.remove()
    return got


@pytest.mark.parametrize("variant", ["clvae", "no_classwise", "no_layerwise", "clvae_L3"])
def test_generator_blocks_get_the_right_cse_map(variant):
    nets = build_networks(variant, tiny(), discriminator=False)
    G, spec = nets.G, nets.spec
    label = random_label(2, 64, 64, 10, seed=6)
    z = Latents.prior(spec, label, torch.Generator().manual_seed(2))
    got = captured_conditions(G, label, z)
    Wemb = G.embedding.weight.detach()
    for name, l in BLOCK_LAYER.items():
        lab = resize_labels(label, (64 >> l, 64 >> l))
        if not spec.layerwise:
            code = z.zc[:, 0]
        elif l in spec.layers:
            code = z.zc[:, spec.layers.index(l)]
        else:
            code = torch.zeros(2, 1, spec.z_dim_local)                  # embedding alone
        table = Wemb + code.expand(2, 10, -1)                           # (B, C, N)
        assert torch.allclose(got[name], cse_loop(table, lab)), name
    assert torch.equal(got["up_3"], one_hot(label, 10))


def test_codes_of_absent_classes_do_not_change_the_image_but_present_ones_do():
    # instance norm: an untrained batch-norm G in eval mode saturates tanh at +-1
    # PyTorch's default init: SPADE's gain-0.02 init makes the conditioning's effect tiny at step 0
    nets = build_networks("clvae", tiny(norm_G="instance"), discriminator=False, init_gain=None).eval()
    label = random_label(1, 64, 64, 10, seed=7, absent=(9,))
    z = Latents.prior(nets.spec, label, torch.Generator().manual_seed(3))
    other = Latents.prior(nets.spec, label, torch.Generator().manual_seed(4))
    swapped = z.zc.clone()
    swapped[:, :, 9] = other.zc[:, :, 9]                                # class 9's codes, by hand: replace refuses
    with torch.no_grad():
        base = nets.G(label, z)
        same = nets.G(label, Latents(z.z, swapped, z.present))
        diff = nets.G(label, z.replace(other, classes=[int(label[0, 0, 0])], layers=[0]))
    assert torch.equal(base, same)
    with pytest.raises(ValueError, match=r"classes \[9\] are absent from the mask"):
        z.replace(other, classes=[9])                                   # the edit would be a silent no-op
    assert (base - diff).abs().max() > 1e-3


# -- encoder presence and masking -------------------------------------------------------------------
def test_encoder_presence_and_absent_codes():
    nets = build_networks("clvae", tiny(image_size=(128, 128)), discriminator=False)
    C = 10
    label = random_label(2, 128, 128, C, seed=8, absent=(8,), speck=9)
    mu, logvar = nets.E(torch.rand(2, 3, 128, 128) * 2 - 1, label)
    for i, l in enumerate(nets.spec.layers):
        lab = resize_labels(label, (128 >> l, 128 >> l))
        expect = torch.stack([torch.isin(torch.arange(C), lab[b].unique()) for b in range(2)])
        assert torch.equal(mu.present[:, i], expect)
    assert not mu.present[..., 8].any() and not mu.present[..., 9].any()   # the speck is gone at 1/2
    assert (mu.zc[~mu.present] == 0).all() and (logvar.zc[~mu.present] == 0).all()
    assert (mu.zc[mu.present].abs().sum(-1) > 0).all()


def test_encoder_resizes_non_square_input():
    nets = build_networks("clvae", tiny(image_size=(64, 128)), discriminator=False)
    assert nets.E.input_size == (128, 128)
    mu, _ = nets.E(torch.rand(1, 3, 64, 128) * 2 - 1, random_label(1, 64, 128, 10))
    assert mu.z.shape == (1, 8)


# -- one optimisation step reaches every parameter ---------------------------------------------------
class TinyExtractor(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.a = torch.nn.Conv2d(3, 4, 3, stride=2, padding=1)
        self.b = torch.nn.Conv2d(4, 4, 3, stride=2, padding=1)

    def forward(self, x):
        h1 = F.relu(self.a(x))
        return [h1, F.relu(self.b(h1))]


@pytest.mark.parametrize("variant", ["clvae", "no_classwise", "no_layerwise", "gaugan_vae", "gaugan"])
def test_one_step_reaches_every_parameter(variant):
    torch.manual_seed(0)
    p = tiny()
    nets = build_networks(variant, p)
    B = 2
    label = block_label(B, 64, 64, 10, cell=16)                         # every class present at every scale
    image = torch.rand(B, 3, 64, 64) * 2 - 1
    perceptual = PerceptualLoss(TinyExtractor(), weights=(0.5, 1.0))
    ge = [*nets.G.parameters(), *(nets.E.parameters() if nets.E is not None else [])]
    opt = torch.optim.Adam(ge, lr=p.lr_g, betas=p.betas)
    before = [t.detach().clone() for t in ge]

    if nets.E is not None:
        mu, logvar = nets.E(image, label)
        z = Latents.reparameterize(mu, logvar, torch.Generator().manual_seed(0))
    else:
        z = None
    fake = nets.G(label, z)
    both = nets.D(torch.cat([label, label]), torch.cat([fake, image]))
    f_fake = [[t[:B] for t in s] for s in both]
    f_real = [[t[B:] for t in s] for s in both]
    loss = g_hinge_loss(f_fake) + p.lambda_fm * feature_matching_loss(f_real, f_fake) \
        + p.lambda_perceptual * perceptual(fake, image)
    if nets.E is not None:
        loss = loss + p.lambda_kl * kl_divergence(mu, logvar)
    opt.zero_grad()
    loss.backward()
    names = [n for n, _ in nets.G.named_parameters()] + ([n for n, _ in nets.E.named_parameters()] if nets.E else [])
    dead = [n for n, t in zip(names, ge)
            if t.grad is None or not torch.isfinite(t.grad).all() or t.grad.abs().sum() == 0]
    assert dead == []
    opt.step()
    assert all(not torch.equal(a, b.detach()) for a, b in zip(before, ge))
    assert all(p_.grad is None for p_ in perceptual.parameters())       # extractor frozen

    nets.D.zero_grad()
    both = nets.D(torch.cat([label, label]), torch.cat([fake.detach(), image]))
    d_hinge_loss([[t[B:] for t in s] for s in both], [[t[:B] for t in s] for s in both]).backward()
    # the logit biases are exempt: with all logits in (-1, 1) at init, the real (-1/n) and fake (+1/n)
    # hinge gradients on a logit bias cancel exactly
    dead = [n for n, t in nets.D.named_parameters()
            if not n.endswith("stages.4.0.bias") and (t.grad is None or t.grad.abs().sum() == 0)]
    assert dead == []


# -- latents ----------------------------------------------------------------------------------------
def test_prior_is_seeded_and_mask_independent():
    spec = LatentSpec(6, 4, 10, (1, 2, 3, 4, 5))
    la = random_label(2, 64, 64, 10, seed=9)
    lb = random_label(2, 64, 64, 10, seed=10)
    a = Latents.prior(spec, la, torch.Generator().manual_seed(5))
    b = Latents.prior(spec, lb, torch.Generator().manual_seed(5))
    c = Latents.prior(spec, la, torch.Generator().manual_seed(6))
    assert torch.equal(a.z, b.z) and torch.equal(a.zc, b.zc)            # codes do not depend on the mask
    assert not torch.equal(a.zc, c.zc)
    assert a.zc.shape == (2, 5, 10, 4) and a.present.shape == (2, 5, 10)
    assert torch.equal(a.present, spec.presence(la)) and not torch.equal(a.present, b.present)
    assert abs(float(torch.cat([a.z.flatten(), a.zc.flatten()]).std()) - 1) < 0.2


def test_seeded_generation_is_reproducible():
    nets = build_networks("clvae", tiny(norm_G="instance"), discriminator=False).eval()
    label = random_label(2, 64, 64, 10, seed=11)
    run = lambda seed: nets.G(label, Latents.prior(nets.spec, label, torch.Generator().manual_seed(seed)))
    with torch.no_grad():
        a, b, c = run(1), run(1), run(2)
    assert torch.equal(a, b)
    assert (a - c).abs().max() > 1e-4


def test_reparameterize_absent_classes_follow_the_prior():
    mu = Latents(torch.zeros(3, 2), torch.zeros(3, 1, 4, 5), torch.zeros(3, 1, 4, dtype=torch.bool))
    lv = Latents(torch.full((3, 2), -20.0), torch.zeros(3, 1, 4, 5), mu.present)
    z = Latents.reparameterize(mu, lv, torch.Generator().manual_seed(0))
    assert z.z.abs().max() < 1e-3                                       # variance e^-20
    assert 0.5 < float(z.zc.std()) < 1.5


def test_latents_batch_operations():
    spec = LatentSpec(3, 2, 4, (1, 2))
    label = random_label(3, 64, 64, 4, seed=12)
    z = Latents.prior(spec, label, torch.Generator().manual_seed(0))
    one = z[1]
    assert one.batch_size == 1 and torch.equal(one.zc[0], z.zc[1])
    assert z[[0, 2]].batch_size == 2 and torch.equal(z[-1].z, z.z[2:])
    rep = z.repeat_interleave(2)
    assert rep.batch_size == 6 and torch.equal(rep.zc[2], z.zc[1]) and torch.equal(rep.present[3], z.present[1])
    ex = one.expand(5)
    assert ex.zc.shape == (5, 2, 4, 2) and torch.equal(ex.zc[4], z.zc[1])
    with pytest.raises(ValueError, match="batch of 1"):
        z.expand(2)
    cat = Latents.cat([z, one])
    assert cat.batch_size == 4 and torch.equal(cat.z[3], z.z[1])
    d = z.to(dtype=torch.float64)
    assert d.zc.dtype == torch.float64 and d.present.dtype == torch.bool
    w = Latents(z.z.clone().requires_grad_(), z.zc, z.present)
    assert not w.detach().z.requires_grad
    with pytest.raises(ValueError, match="only some"):
        Latents.cat([z, Latents(z.z)])


def test_replace_chosen_classes_and_layers():
    spec = LatentSpec(3, 2, 4, (1, 2, 3))
    label = random_label(2, 64, 64, 4, seed=13)
    a = Latents.prior(spec, label, torch.Generator().manual_seed(0))
    b = Latents.prior(spec, label, torch.Generator().manual_seed(1))[0]  # batch 1, broadcast
    r = a.replace(b, classes=[1, 3], layers=[0, 2])
    for l in range(3):
        for c in range(4):
            src = b.zc[0, l, c].expand(2, -1) if (l in (0, 2) and c in (1, 3)) else a.zc[:, l, c]
            assert torch.equal(r.zc[:, l, c], src)
    assert torch.equal(r.z, a.z) and torch.equal(r.present, a.present)
    g = a.replace(b, classes=[], global_code=True)
    assert torch.equal(g.zc, a.zc) and torch.equal(g.z, b.z.expand(2, -1))
    with pytest.raises(ValueError, match="out of range"):
        a.replace(b, classes=[4])
    with pytest.raises(ValueError, match="out of range"):
        a.replace(b, layers=[3])


def test_code_mask_is_the_one_class_by_layer_selection():
    """One rule for `Latents.replace` and every edit of smis.editing: None = all, [] = none, integer ids in
    [0, K) / [0, L); negative ids are errors (never counted from the end), like ids past the end."""
    m = code_mask((3, 4), classes=[1, 3], layers=[0, 2])
    want = torch.zeros(3, 4, dtype=torch.bool)
    want[0, 1] = want[0, 3] = want[2, 1] = want[2, 3] = True
    assert m.dtype == torch.bool and torch.equal(m, want)
    assert code_mask((3, 4)).all() and not code_mask((3, 4), classes=[]).any()
    assert not code_mask((3, 4), layers=[]).any()
    assert torch.equal(code_mask((3, 4), classes=torch.tensor([[2]]), layers=np.int64(1)),
                       torch.zeros(3, 4, dtype=torch.bool).index_put_((torch.tensor([1]), torch.tensor([2])),
                                                                      torch.tensor(True)))
    assert torch.equal(code_mask((3, 4), classes=[1, 1]), code_mask((3, 4), classes=[1]))   # repeats: the same pick
    with pytest.raises(ValueError, match=r"classes \[-1\] out of range: the codes have K = 4 classes; use 0\.\.3"):
        code_mask((3, 4), classes=[-1])
    with pytest.raises(ValueError, match=r"layers \[-1\] out of range.*0\.\.2.*negative ids are errors"):
        code_mask((3, 4), layers=[-1])
    with pytest.raises(TypeError, match="integer id"):
        code_mask((3, 4), classes=[1.0])
    # Latents.replace selects exactly code_mask's codes
    spec = LatentSpec(3, 2, 4, (1, 2, 3))
    label = block_label(2, 64, 64, 4, cell=8)                             # every class in every sample
    a = Latents.prior(spec, label, torch.Generator().manual_seed(0))
    b = Latents.prior(spec, label, torch.Generator().manual_seed(1))
    for classes, layers in (([1, 3], [0, 2]), (None, [1]), ([2], None), ([], None)):
        pick = code_mask((3, 4), classes, layers)[None, :, :, None]
        assert torch.equal(a.replace(b, classes, layers).zc, torch.where(pick, b.zc, a.zc))


# -- errors ------------------------------------------------------------------------------------------
def test_clear_errors():
    nets = build_networks("clvae", tiny(), discriminator=False)
    label = random_label(1, 64, 64, 10)
    z = Latents.prior(nets.spec, label)
    with pytest.raises(ValueError, match=r"\[0, 10\)"):
        nets.G(label + 5, z)
    with pytest.raises(ValueError, match="built for"):
        nets.G(label[:, :32], z)
    with pytest.raises(ValueError, match="Latents.prior"):
        nets.G(label, None)
    with pytest.raises(TypeError, match="long"):
        nets.G(label.float(), z)
    with pytest.raises(KeyError, match="clvae"):
        build_networks("clave", tiny())
    with pytest.raises(ValueError, match="divisible"):
        build_networks("clvae", get_preset("synthscenes", image_size=(48, 64)))


def test_generator_checks_latents_against_its_spec_and_the_label_batch():
    """Codes of the wrong K / L / N1 or batch used to run silently (K = 1 broadcast, extra layers
    ignored) or die in a reshape; now a ValueError names the expected and given shapes and the fix."""
    nets = build_networks("clvae", tiny(), discriminator=False)
    label = random_label(2, 64, 64, 10)
    z = Latents.prior(nets.spec, label, torch.Generator().manual_seed(0))   # z (2, 8), zc (2, 5, 10, 4)
    wrong = lambda zc: Latents(z.z, zc, torch.ones(zc.shape[:3], dtype=torch.bool))
    expect = r"zc are \({}\).*expects \(B, L, K, N\) = \(2, 5, 10, 4\).*Latents.prior\(G.spec, label\)"
    with pytest.raises(ValueError, match=expect.format("2, 5, 1, 4")):           # K = 1 (no_classwise codes)
        nets.G(label, wrong(z.zc[:, :, :1]))
    with pytest.raises(ValueError, match=expect.format("2, 6, 10, 4")):          # L = 6
        nets.G(label, wrong(torch.cat([z.zc, z.zc[:, :1]], 1)))
    with pytest.raises(ValueError, match=expect.format("2, 5, 10, 3")):          # N = 3
        nets.G(label, wrong(z.zc[..., :3]))
    with pytest.raises(ValueError, match=r"z \(1, 8\), zc \(1, 5, 10, 4\)\) do not hold a batch of B = 2.*expand"):
        nets.G(label, z[0])                                                      # batch 1 for a batch of 2
    with pytest.raises(ValueError, match=r"global code z is \(2, 7\).*expects \(B, N1\) = \(2, 8\)"):
        nets.G(label, Latents(torch.randn(2, 7), z.zc, z.present))
    with pytest.raises(ValueError, match=r"needs a global code z of shape \(B, N1\) = \(2, 8\)"):
        nets.G(label, Latents(None, z.zc, z.present))
    with pytest.raises(ValueError, match=r"needs class codes zc of shape \(B, L, K, N\) = \(2, 5, 10, 4\)"):
        nets.G(label, Latents(z.z))
    with pytest.raises(TypeError, match="takes its codes as a Latents, got Tensor"):
        nets.G(label, z.zc)
    # the variants without one of the codes refuse it instead of ignoring it
    gaugan = build_networks("gaugan", tiny(), discriminator=False)
    with pytest.raises(ValueError, match=r"takes no global code \(spec z_dim = 0, gaugan\)"):
        gaugan.G(label, Latents(z.z))
    assert gaugan.G(label, Latents.prior(gaugan.spec, label)).shape == (2, 3, 64, 64)
    vae = build_networks("gaugan_vae", tiny(), discriminator=False)
    with pytest.raises(ValueError, match="has no class codes.*but zc is"):
        vae.G(label, z)
    # each variant takes its own prior, e.g. the K = 1 codes of no_classwise
    ncw = build_networks("no_classwise", tiny(), discriminator=False)
    assert ncw.G(label, Latents.prior(ncw.spec, label)).shape == (2, 3, 64, 64)
    with pytest.raises(ValueError, match=r"zc are \(2, 5, 10, 4\).*\(2, 5, 1, 4\)"):
        ncw.G(label, z)


def test_ids_and_label_maps_follow_one_rule():
    """Integers only (no bool / float, not even 1.0), in [0, K) with no negative wrap-around."""
    assert check_class_ids([1, 3], 10).tolist() == [1, 3]
    assert check_class_ids(torch.tensor([[2]], dtype=torch.int32), 10).tolist() == [2]
    assert check_class_ids(np.array([4, 0]), 10).tolist() == [4, 0] and check_class_ids(np.int64(9), 10).tolist() == [9]
    assert check_class_ids([], 10).numel() == 0 and check_layer_ids(range(3), 3).tolist() == [0, 1, 2]
    for bad in (1.5, [1.0], [True], torch.tensor([1.0]), torch.tensor([True]), np.array([1.0]), "1",
                [torch.tensor(1.0)]):
        with pytest.raises(TypeError, match="integer id"):
            check_class_ids(bad, 10)
    with pytest.raises(TypeError, match=r"even whole ones like 1.0"):
        check_class_ids([1.0], 10)
    with pytest.raises(ValueError, match=r"classes \[-1\] out of range.*0\.\.9.*negative ids are errors"):
        check_class_ids([-1], 10)
    with pytest.raises(ValueError, match=r"classes \[10\] out of range"):
        check_class_ids([10], 10)
    with pytest.raises(ValueError, match=r"layers \[-1\] out of range.*0\.\.4"):
        check_layer_ids([-1], 5)
    with pytest.raises(TypeError, match="cls must be one integer id"):
        check_class_ids([1, 2], 10, what="cls", single=True)
    # Latents.replace used to take -1 as class K-1 (and layer L-1) and 1.5 as class 1
    spec = LatentSpec(3, 2, 10, (1, 2))
    label = block_label(2, 64, 64, 10, cell=8)                            # every class in every sample
    a = Latents.prior(spec, label, torch.Generator().manual_seed(0))
    b = Latents.prior(spec, label, torch.Generator().manual_seed(1))
    with pytest.raises(ValueError, match=r"classes \[-1\] out of range"):
        a.replace(b, classes=[-1])
    with pytest.raises(ValueError, match=r"layers \[-1\] out of range"):
        a.replace(b, classes=[0], layers=[-1])
    with pytest.raises(TypeError, match="integer id"):
        a.replace(b, classes=[1.5])
    assert torch.equal(a.replace(b, classes=torch.tensor([9])).zc[:, :, 9], b.zc[:, :, 9])
    # label maps: integer tensors, the generator's rule, now also for Latents.prior (it truncated floats)
    with pytest.raises(TypeError, match="integer class ids, got dtype torch.float32; use label.long"):
        Latents.prior(spec, label.float())
    with pytest.raises(TypeError, match="integer class ids, got dtype torch.bool"):
        check_label(label > 4, 10)
    with pytest.raises(TypeError, match="must be a torch tensor"):
        check_label(label.numpy(), 10)
    with pytest.raises(ValueError, match=r"\[0, 10\), found \[0, 12\]"):
        check_label(label + (label == 9).long() * 3, 10)
    with pytest.raises(ValueError, match=r"must be >= 0, found -1"):
        check_label(label - 1, None)
    assert check_label(label[0].to(torch.uint8), 10, allow_2d=True).dtype == torch.long
    assert check_label(label[0].to(torch.uint8), 10, allow_2d=True).shape == (1, 64, 64)


def test_frozen_spectral_norm_reuses_the_last_training_forwards_weight_and_restores_modes():
    torch.manual_seed(0)
    net = nn.Sequential(spectral_norm(nn.Conv2d(3, 4, 3)), nn.InstanceNorm2d(4), spectral_norm(nn.Conv2d(4, 2, 1)))
    net.train()
    net[1].eval()                                                       # a non-SN layer's own mode is kept
    x = torch.randn(2, 3, 8, 8)
    y = net(x)                                                          # training forward: one power iteration
    u = [m.weight_u.clone() for m in (net[0], net[2])]
    w = [m.weight.detach().clone() for m in (net[0], net[2])]
    with torch.no_grad(), frozen_spectral_norm(net):
        y2 = net(x)
        assert not net[0].training and not net[2].training and not net[1].training
    assert torch.equal(y2, y.detach())                                  # the same normalised weights
    assert all(torch.equal(m.weight_u, a) for m, a in zip((net[0], net[2]), u))      # no power iteration
    assert all(torch.equal(m.weight.detach(), a) for m, a in zip((net[0], net[2]), w))
    assert net[0].training and net[2].training and not net[1].training  # modes restored, eval layer untouched
    net(x)
    assert not torch.equal(net[0].weight_u, u[0])                       # training forwards iterate again
    with pytest.raises(RuntimeError), frozen_spectral_norm(net):
        raise RuntimeError("inside")
    assert net[0].training and net[2].training                          # restored after an error too


def test_discriminator_builds_each_labels_masks_once_with_the_floats_of_the_concatenated_input():
    """D keeps the one-hot mask and its pool of the last label (issue 26): three calls on one label build them once;
    D(label, cat([a, b])) gives D(cat([label, label]), cat([a, b]))'s features and gradients bit for bit, as does the
    input written out the way D built it before (one cat, pooled whole); the masks follow an in-place change of the
    label and are dropped when the label is freed."""
    import gc
    import smis.networks.discriminator as disc
    C, B = 10, 3
    D = build_networks("clvae", get_preset("synthscenes")).D.to(memory_format=torch.channels_last)
    label = random_label(B, 64, 64, C, seed=3)
    g = torch.Generator().manual_seed(0)
    a, b = (torch.rand(B, 3, 64, 64, generator=g).contiguous(memory_format=torch.channels_last) for _ in range(2))

    def run(fn):
        x = torch.cat([a, b]).requires_grad_(True)
        D.zero_grad(set_to_none=True)
        with frozen_spectral_norm(D):
            feats = fn(x)
        sum(t.square().mean() for s in feats for t in s).backward()
        return [t.detach() for s in feats for t in s], x.grad, [p.grad for p in D.parameters()]

    ref = run(lambda x: written_D(D, torch.cat([label, label]), x))
    for got in (run(lambda x: D(label, x)), run(lambda x: D(torch.cat([label, label]), x))):
        for r, o in zip(ref, got):
            assert len(r) == len(o) > 0 and all(torch.equal(u, v) for u, v in zip(r, o))

    calls = []
    real_one_hot = disc.one_hot
    disc.one_hot = lambda *args: calls.append(1) or real_one_hot(*args)
    try:
        for _ in range(3):
            D(label, a)                                                # the same label: built once
        assert len(calls) == 1
        label[0, :8] = (label[0, :8] + 1) % C                          # changed in place: built again
        with frozen_spectral_norm(D):                                  # (no power iteration between the two)
            moved, ref = D(label, a), written_D(D, label, a)
        assert len(calls) == 2
        assert torch.equal(moved[0][-1], ref[0][-1])
    finally:
        disc.one_hot = real_one_hot
    label = moved = ref = None                                         # the last references to the label
    gc.collect()
    assert D._maps is None                                             # freed with the label


def written_D(D, label, x):
    """D's features from its input built in one piece (one-hot mask + image, pooled whole)."""
    x = torch.cat([one_hot(label, D.num_classes, x.dtype), x], 1)
    out = []
    for i, d in enumerate(D.scales):
        x = x if i == 0 else F.avg_pool2d(x, 3, stride=2, padding=1, count_include_pad=False)
        out.append(d(x))
    return out
