"""Fast paths compute what the plain ones compute: SPADE's shared conv on piecewise-constant maps.

`piecewise_conv3x3` (gathers of per-class tables) against `nn.Conv2d` on the dense one-hot / CSE map:
forward and the gradients of weight, bias and class table; SPADE and the generator with
`piecewise_cond` on and off; the first training steps' losses of both paths on one batch.

Tolerances: both paths are compared with a float64 evaluation of the dense conv; the fast path must be
no further from it than a small multiple of the float32 dense conv's own error (its noise floor, measured
in the test), plus a few ulps of the largest value.
"""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from smis import train as T
from smis.config import TINY, get_preset
from smis.networks import Latents, build_networks, cse_map, init_weights, one_hot
from smis.networks.ops import BagPlan, PiecewiseMap, piecewise_conv3x3
from smis.networks.spade import SPADE

ULP = 2.0 ** -23


@pytest.fixture(autouse=True)
def _seed(monkeypatch):
    torch.manual_seed(0)
    from smis.networks import spade
    monkeypatch.setattr(spade, "GATHER_MIN_MACS", 0)                   # tiny networks take the fast path too


def blob_label(B: int, H: int, W: int, C: int, cell: int = 4, seed: int = 0) -> torch.Tensor:
    """(B, H, W) ids: random cells of ~cell pixels (regions with inside pixels and boundaries), all ids < C."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.randint(0, C, (B, 1, -(-H // cell), -(-W // cell)), generator=g).float()
    return F.interpolate(coarse, size=(H, W), mode="nearest")[:, 0].long()


def dense_map(cond: PiecewiseMap, dtype=torch.float32) -> torch.Tensor:
    """The map as pixels, in `dtype`, built from the (maybe float64) table."""
    if cond.table is None:
        return one_hot(cond.label, cond.num_classes, dtype)
    return cse_map(cond.table.to(dtype), cond.label)


def conv_and_grads(weight, bias, table, x_of, grad_out):
    """(out, d weight, d bias, d table) of out = x_of(weight, bias, table) for the cotangent grad_out."""
    leaves = [t.detach().clone().requires_grad_(True) if t is not None else None for t in (weight, bias, table)]
    out = x_of(*leaves)
    grads = torch.autograd.grad(out, [t for t in leaves if t is not None], grad_out.to(out.dtype))
    return [out.detach()] + list(grads)


@pytest.mark.parametrize("B,H,W,K,cell", [(1, 1, 1, 3, 1), (2, 7, 5, 4, 2), (3, 16, 16, 10, 4), (2, 33, 17, 151, 3)])
@pytest.mark.parametrize("per_sample", [False, True])
def test_bag_plan_lists_each_distinct_window_once_in_lexicographic_order(B, H, W, K, cell, per_sample):
    """BagPlan's contract, against windows read by unfold: pixel p's bag holds the tap-table rows of its 3x3
    window (row 9 id + k for tap k, 9 K + k outside, ids offset by sample b (K + 1) with per_sample); no two bags
    are equal; bags come in the lexicographic order of their rows (the order the gathers' backward sums in, so a
    faster plan keeps the floats)."""
    label = blob_label(B, H, W, K, cell)
    plan = BagPlan(label, K, per_sample)
    windows = F.pad(label, (1, 1, 1, 1), value=K).unfold(1, 3, 1).unfold(2, 3, 1).reshape(B * H * W, 9)
    sample = torch.arange(B).repeat_interleave(H * W)[:, None] if per_sample else 0
    rows = (windows + sample * (K + 1)) * 9 + torch.arange(9)                          # (B H W, 9)
    assert torch.equal(plan.bags[plan.inv], rows)
    assert plan.rows == (B if per_sample else 1) * 9 * (K + 1)
    U = plan.bags.shape[0]
    assert torch.unique(rows, dim=0).shape[0] == U and int(plan.inv.max()) == U - 1     # distinct, all used
    assert torch.equal(torch.unique(plan.bags, dim=0), plan.bags)                      # sorted lexicographically


@pytest.mark.parametrize("C,N,O,B,H,W,onehot", [
    (151, 151, 128, 1, 13, 11, True),      # ADE20K widths, one-hot (up_3), odd sizes
    (151, 151, 128, 2, 9, 17, False),      # ADE20K CSE, odd sizes, per-sample tables
    (10, 8, 32, 3, 16, 16, False),         # SynthScenes widths
    (10, 10, 32, 2, 7, 5, True),           # tiny odd one-hot
    (3, 5, 6, 2, 1, 1, False),             # one pixel: every tap but the centre outside
])
@pytest.mark.parametrize("backward", ["csr", "index_add"])   # the CPU's sums / what CUDA runs
def test_piecewise_conv_equals_dense_conv_with_gradients(C, N, O, B, H, W, onehot, backward, monkeypatch):
    from smis.networks import ops
    monkeypatch.setattr(ops, "CPU_BACKWARD", backward)
    label = blob_label(B, H, W, C, cell=3)
    weight = torch.randn(O, C if onehot else N, 3, 3) * 0.1
    bias = torch.randn(O)
    table = None if onehot else torch.randn(B, C, N)
    grad_out = torch.randn(B, O, H, W)

    def dense(dtype):
        return lambda w, b, t: F.conv2d(dense_map(PiecewiseMap(label, t, C), dtype), w.to(dtype), b.to(dtype),
                                        padding=1)

    fast = lambda w, b, t: piecewise_conv3x3(w, b, PiecewiseMap(label, t, C))
    truth = conv_and_grads(weight.double(), bias.double(), None if onehot else table.double(), dense(torch.float64),
                           grad_out)
    plain = conv_and_grads(weight, bias, table, dense(torch.float32), grad_out)
    ours = conv_and_grads(weight, bias, table, fast, grad_out)
    for name, t, p, o in zip(["out", "d weight", "d bias", "d table"], truth, plain, ours):
        floor = (p.double() - t).abs().max().item()                    # the fp32 conv's own error
        err = (o.double() - t).abs().max().item()
        assert err <= 4 * floor + 16 * ULP * t.abs().max().item(), (name, err, floor)
    assert ours[0].shape == (B, O, H, W)


def test_piecewise_conv_rejects_wrong_widths_with_the_fix():
    label = blob_label(1, 5, 5, 4)
    with pytest.raises(ValueError, match="input channels"):
        piecewise_conv3x3(torch.randn(8, 3, 3, 3), None, PiecewiseMap(label, None, 4))
    with pytest.raises(ValueError, match="3x3"):
        piecewise_conv3x3(torch.randn(8, 4, 1, 1), None, PiecewiseMap(label, None, 4))
    with pytest.raises(ValueError, match=r"\(B, C, N\)"):
        PiecewiseMap(label, torch.randn(1, 5, 2), 4)


@pytest.mark.parametrize("size,x_size", [((13, 11), (13, 11)), ((13, 11), (7, 5)), ((8, 8), (16, 16)),
                                         ((9, 6), (4, 3))])
@pytest.mark.parametrize("onehot", [True, False])
@pytest.mark.parametrize("gather_modulation", [True, False])
def test_spade_takes_either_form_and_resizes_like_nearest(size, x_size, onehot, gather_modulation, monkeypatch):
    """The dense path resizes the map with legacy nearest inside SPADE; the fast path resizes the label.
    Both fast modulations: gamma / beta by a second gather, or convolutions of the gathered activations."""
    from smis.networks import spade as spade_module
    monkeypatch.setattr(spade_module, "GATHER_MODULATION", gather_modulation)
    monkeypatch.setattr(spade_module, "GATHER_RATIO", 0)                # second gather at any bag count
    C, N, ch = 12, 6, 8
    spade = SPADE(ch, C if onehot else N, norm="batch", hidden=16).train()
    label = blob_label(2, *size, C, cell=2)
    cond = PiecewiseMap(label, None if onehot else torch.randn(2, C, N, requires_grad=True), C)
    x = torch.randn(2, ch, *x_size)
    outs = []
    for form in (cond, cond.dense()):
        spade.zero_grad(set_to_none=True)
        if cond.table is not None:
            cond.table.grad = None
        y = spade(x, form)
        y.square().sum().backward()
        outs.append((y.detach(), spade.mlp_shared[0].weight.grad.clone(),
                     None if cond.table is None else cond.table.grad.clone()))
    (y1, w1, t1), (y0, w0, t0) = outs
    assert torch.allclose(y1, y0, rtol=1e-5, atol=1e-5)
    assert torch.allclose(w1, w0, rtol=1e-4, atol=1e-4 * w0.abs().max().item())
    if t0 is not None:
        assert torch.allclose(t1, t0, rtol=1e-4, atol=1e-4 * t0.abs().max().item())
    # the resized label is the legacy-nearest label, i.e. the dense map's pixels
    assert torch.equal(cond.resized(x_size).dense(), F.interpolate(cond.dense(), size=x_size, mode="nearest"))


def both_paths(G, label, z):
    """[(image, all parameter gradients of mean(image^2))] of the gathered (piecewise) then the dense path,
    from the same state (spectral norm's u moves each forward, so it is restored before each)."""
    state = copy.deepcopy(G.state_dict())
    res = []
    for fast in (True, False):
        G.load_state_dict(state)
        G.piecewise_cond = fast
        G.zero_grad(set_to_none=True)
        y = G(label, z)
        y.square().mean().backward()
        res.append((y.detach(), torch.cat([p.grad.flatten() for p in G.parameters() if p.grad is not None])))
    return res


@pytest.mark.parametrize("variant,upsampling", [("clvae", "normal"), ("gaugan", "normal"), ("clvae", "more"),
                                                ("clvae", "most")])
def test_generator_fast_and_dense_paths_agree(variant, upsampling):
    size = {"normal": (64, 64), "more": (64, 128), "most": (128, 128)}[upsampling]
    preset = get_preset("synthscenes", **TINY, upsampling=upsampling, image_size=size)
    G = build_networks(variant, preset).G.train()
    label = blob_label(2, *size, preset.num_classes, cell=5)
    z = Latents.prior(G.spec, label, torch.Generator().manual_seed(1)) if G.spec.z_dim > 0 else None
    (y1, g1), (y0, g0) = both_paths(G, label, z)
    assert (y1 - y0).abs().max() < 1e-5
    assert ((g1 - g0).norm() / g0.norm()).item() < 1e-5


def test_generator_paths_are_the_same_function_in_float64():
    """In float64 the gathered and dense generators agree to ~1e-15: the float32 gradient differences
    (~1e-4 relative at SynthScenes size, from spectral norm's cancelling terms) are rounding only."""
    preset = get_preset("synthscenes", **TINY)
    G = build_networks("clvae", preset).G.train().double()
    label = blob_label(3, 64, 64, preset.num_classes, cell=5)
    z = Latents.prior(G.spec, label, torch.Generator().manual_seed(2)).map(torch.Tensor.double)
    (y1, g1), (y0, g0) = both_paths(G, label, z)
    assert (y1 - y0).abs().max() < 1e-12
    assert ((g1 - g0).norm() / g0.norm()).item() < 1e-10


def test_default_threshold_mixes_dense_and_gathered_spades_with_the_same_result(monkeypatch):
    """At the default GATHER_MIN_MACS the coarse blocks stay convolutions and the fine ones gather."""
    from smis.networks import spade
    monkeypatch.undo()                                                  # the module's default, not the fixture's 0
    assert spade.GATHER_MIN_MACS > 0
    preset = get_preset("ade20k", ngf=8, nef=8, ndf=8, image_size=(128, 128), encoder_size=(128, 128))
    G = build_networks("clvae", preset, discriminator=False).G.train()
    label = blob_label(1, 128, 128, 151, cell=9)
    z = Latents.prior(G.spec, label, torch.Generator().manual_seed(1))
    x = torch.randn(1, 8, 128, 128)
    assert G.up_3.norm_0.dense_macs(x) >= spade.GATHER_MIN_MACS > G.head_0.norm_0.dense_macs(torch.randn(1, 128, 4, 4))
    state = copy.deepcopy(G.state_dict())
    outs = []
    for fast in (True, False):
        G.load_state_dict(state)
        G.piecewise_cond = fast
        outs.append(G(label, z).detach())
    assert (outs[0] - outs[1]).abs().max() < 1e-5



def test_sparse_maps_gather_below_the_mac_threshold_and_busy_maps_stay_dense(monkeypatch):
    """Under GATHER_MIN_MACS a SPADE gathers only where the map has few distinct 3x3 neighbourhoods (SynthScenes'
    64x64 mask: large regions), and convolves a map of small cells; both give the dense path's modulation. Under
    bf16 autocast it convolves (the rule is for float32 on a CPU, where it was measured)."""
    from smis.networks import spade
    monkeypatch.undo()                                                  # the module's thresholds, not the fixture's 0
    sp = SPADE(32, 10, "batch", 32).eval()                              # running stats: both calls normalise alike
    x = torch.randn(8, 32, 64, 64)
    assert spade.GATHER_SPARSE_MACS <= sp.dense_macs(x) < spade.GATHER_MIN_MACS
    calls, modulation = [], SPADE.modulation
    monkeypatch.setattr(SPADE, "modulation", lambda self, *a: calls.append(1) or modulation(self, *a))
    for cell, gathers in ((16, True), (2, False)):      # 16-pixel cells: 1 bag in 45 pixels; 2-pixel cells: 1 in 1.5
        label = blob_label(8, 64, 64, 10, cell=cell, seed=cell)
        cond = PiecewiseMap(label, None, 10)
        assert (cond.plan().bags.shape[0] * spade.GATHER_SPARSE_RATIO <= label.numel()) == gathers
        calls.clear()
        with torch.no_grad():
            out = sp(x, cond)
            assert bool(calls) == gathers
            ref = sp(x, cond.dense())                                   # a dense map: always the convolutions
            calls.clear()
            with torch.autocast("cpu", dtype=torch.bfloat16):          # bf16: the dense convs, as before the rule
                sp(x, cond)
            assert not calls
        assert (out - ref).abs().max() < 1e-5 * ref.abs().max()


# Noise floor of the first training steps' losses, measured 2026-11-30 on a 2-core AMD EPYC (tiny
# SynthScenes preset below, batch 4, SPADE convs re-initialised at gain 1, dense path): changing only the
# CPU kernels' summation order (1 vs 2 torch threads) moves step 1's losses by <= 2.2e-7 relative and step
# 2's by <= 1.1e-4 relative to max(|loss|, 1) (Adam's first update is sign(gradient) x lr, so
# rounding-level gradient differences become lr-sized weight differences; step 3: 2.2e-4). The fast path
# vs the dense one: 2.2e-7 (step 1), 1.7e-5 (step 2). Tolerances ~10-50x above the floor; mirroring the
# fast conv's taps (a wrong neighbour order) moves step 1 by 1.6e-3, 160x STEP1_TOL.
STEP1_TOL = 1e-5                        # relative
STEP2_TOL = 1e-3                        # relative to max(|loss|, 1)


def _first_losses(tmp_path, fast: bool, steps: int = 2) -> list[dict]:
    """Losses of `steps` training steps on one batch; SPADE's convs at gain 1 (at the init's gain 0.02
    the modulation barely reaches the losses: mirrored taps would move step 1 by only 9e-7)."""
    torch.manual_seed(0)
    cfg = T.TrainConfig(run_dir=str(tmp_path / "run"), preset_overrides=TINY, data_length=8, steps=steps,
                        batch_size=4, perceptual="none", tensorboard=False, progress=False, device="cpu")
    t = T.Trainer(cfg)
    G = t.nets.G
    G.piecewise_cond = fast
    for name, module in G.named_modules():
        if name.rsplit(".", 1)[-1] in ("0", "mlp_gamma", "mlp_beta") and ".norm_" in name:
            init_weights(module, gain=1.0)                              # in place: the optimizer keeps them
    batch = [t.dataset[i] for i in range(4)]
    image = torch.stack([b["image"] for b in batch])
    label = torch.stack([b["label"] for b in batch]).long()
    out = [t.train_step(image, label) for _ in range(steps)]
    for d in out:
        d.pop("lr_factor")
    return out


def _errors(a: list[dict], b: list[dict]) -> tuple[float, float]:
    step1 = max(abs(a[0][k] - b[0][k]) / max(abs(b[0][k]), 1e-6) for k in b[0])
    step2 = max(abs(a[1][k] - b[1][k]) / max(abs(b[1][k]), 1.0) for k in b[1])
    return step1, step2


def test_first_training_steps_losses_equal_the_dense_path(tmp_path, monkeypatch):
    dense = _first_losses(tmp_path / "dense", False)
    fast = _first_losses(tmp_path / "fast", True)
    step1, step2 = _errors(fast, dense)
    assert step1 < STEP1_TOL and step2 < STEP2_TOL, (step1, step2, fast, dense)
    # mutation check: the comparison notices a fast conv whose taps are mirrored
    from smis.networks import spade
    real = spade.tap_table
    monkeypatch.setattr(spade, "tap_table", lambda w, b, t, K: real(w.flip(-1), b, t, K))
    bad = _first_losses(tmp_path / "bad", True)
    assert _errors(bad, dense)[0] > 10 * STEP1_TOL, _errors(bad, dense)


@pytest.mark.parametrize("base", [3, 152, 5409, 2 ** 40])
def test_row_ranks_group_equal_rows_like_unique(base):
    """The packed-key ranking (several 1-D unique passes for wide ids) groups rows as torch.unique(dim=0)."""
    from smis.networks.ops import _row_ranks
    g = torch.Generator().manual_seed(base % 1000)
    pool = torch.randint(0, base, (50, 9), generator=g)
    rows = pool[torch.randint(0, 50, (400,), generator=g)]             # many repeats
    rank, count = _row_ranks(rows, base)
    _, inverse = torch.unique(rows, dim=0, return_inverse=True)
    assert count == int(inverse.max()) + 1
    assert torch.equal(rank[:, None] == rank[None], inverse[:, None] == inverse[None])


# -- the perceptual network with its batch norms folded into the convs (smis.backbones.fold_batchnorm) ----------

class _ConvBN(torch.nn.Module):
    """conv -> BN -> ReLU, a conv with a bias before a BN, and a BN after a ReLU (not foldable)."""

    def __init__(self):
        super().__init__()
        self.stem = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1, bias=False), torch.nn.BatchNorm2d(8),
                                        torch.nn.ReLU())
        self.mid = torch.nn.Sequential(torch.nn.Conv2d(8, 8, 3, stride=2, padding=1, groups=4),
                                       torch.nn.BatchNorm2d(8), torch.nn.ReLU(), torch.nn.BatchNorm2d(8))
        for m in self.modules():                    # running statistics and affine parameters away from 0 / 1
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-1, 1), m.running_var.uniform_(0.2, 3)
                m.weight.data.uniform_(0.5, 2), m.bias.data.uniform_(-1, 1)
        self.eval().requires_grad_(False)

    def forward(self, x):
        a = self.stem(x)
        return [a, self.mid(a)]


def _fold_errors(net, x):
    """(max relative error of the original fp32 net, of its folded copy) against the original in float64."""
    from smis.backbones import fold_batchnorm
    folded, folds = fold_batchnorm(net)
    with torch.no_grad():
        ref = [r.double() for r in copy.deepcopy(net).double()(x.double())]
        err = lambda outs: max(float((o.double() - r).abs().max() / r.abs().max()) for o, r in zip(outs, ref))
        return err(net(x)), err(folded(x)), folds


def test_fold_batchnorm_folds_conv_bn_pairs_only_and_keeps_the_function():
    net = _ConvBN()
    before = copy.deepcopy(net.state_dict())
    x = torch.randn(2, 3, 16, 16)
    plain, folded, folds = _fold_errors(net, x)
    assert folds == 2                                                   # stem and mid; the BN after ReLU stays
    assert folded <= 4 * plain + 8 * ULP
    assert all(torch.equal(v, net.state_dict()[k]) for k, v in before.items())   # the original is untouched
    from smis.backbones import fold_batchnorm
    assert fold_batchnorm(net.train()) == (net, 0)                      # batch statistics: nothing folds
    net.eval()
    no_bn = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU())
    assert fold_batchnorm(no_bn) == (no_bn, 0)                          # no pair (VGG19): no copy


def test_fold_batchnorm_of_efficientnet_lite0_equals_the_original():
    from smis.backbones import EffNetFeatures
    net = EffNetFeatures().to(memory_format=torch.channels_last)
    x = (torch.rand(2, 3, 64, 48) * 2 - 1).contiguous(memory_format=torch.channels_last)
    plain, folded, folds = _fold_errors(net, x)
    assert folds == 49                                                  # every BN of the trunk
    assert folded <= 4 * plain + 8 * ULP, (plain, folded)


def test_perceptual_loss_folded_equals_unfolded_and_follows_weight_changes(caplog):
    import logging

    from smis import backbones
    from smis.losses import PerceptualLoss
    net = _ConvBN()
    fast, slow = PerceptualLoss(net, weights=(1.0, 0.5)), PerceptualLoss(net, weights=(1.0, 0.5), fold_bn=False)
    real = torch.rand(2, 3, 16, 16) * 2 - 1

    def loss_and_grad(loss):
        fake = (torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(1)) * 2 - 1).requires_grad_()
        value = loss(fake, real)
        value.backward()
        return value.detach(), fake.grad

    for _ in range(2):                                                  # after an in-place change of the BN stats
        (lf, gf), (ls, gs) = loss_and_grad(fast), loss_and_grad(slow)
        assert fast._folded.net is not net                              # the folded copy ran
        assert torch.allclose(lf, ls, rtol=1e-5) and torch.allclose(gf, gs, rtol=1e-4, atol=1e-7)
        net.load_state_dict({**net.state_dict(), "stem.1.running_mean": net.stem[1].running_mean + 0.5})
    assert set(fast.state_dict()) == set(slow.state_dict())             # the copy is no submodule
    fast._folded.key = None                                             # rebuild, with a check that must fail
    with pytest.MonkeyPatch.context() as mp, caplog.at_level(logging.WARNING, logger="smis.backbones"):
        mp.setattr(backbones, "FOLD_CHECK_RTOL", -1.0)
        loss_and_grad(fast)
    assert fast._folded.net is net and "running it unfolded" in caplog.text


# --- In-place modulation at inference (ops.modulate, ops.leaky_relu_) -------------------------------------

@pytest.mark.parametrize("gamma_layout", ["same", "channels_last_view"])
@pytest.mark.parametrize("x_layout", [torch.contiguous_format, torch.channels_last])
def test_modulate_in_place_gives_the_out_of_place_floats_and_layout(gamma_layout, x_layout):
    from smis.networks.ops import modulate
    B, ch, h, w = 2, 5, 6, 7
    x = torch.randn(B, ch, h, w).contiguous(memory_format=x_layout)
    if gamma_layout == "same":
        g, b = torch.randn_like(x), torch.randn_like(x)
    else:                                                   # what gather_bags returns: channels_last views
        g, b = (torch.randn(B, h, w, ch).permute(0, 3, 1, 2) for _ in range(2))
    want = x * (1 + g) + b                                  # SPADE's Eq. 1 as autograd computes it
    g_before = g.clone()
    with torch.no_grad():
        got = modulate(x, g, b)
    assert torch.equal(got, want) and got.stride() == want.stride()
    if gamma_layout == "same":                              # its own buffer, reused: no new feature map
        assert got.data_ptr() == g.data_ptr()
    else:                                                   # a view is never overwritten
        assert torch.equal(g, g_before)


def test_modulate_and_leaky_relu_stay_out_of_place_under_autograd():
    from smis.networks.ops import leaky_relu_, modulate
    x = torch.randn(2, 3, 4, 5, requires_grad=True)
    g = torch.randn(2, 3, 4, 5, requires_grad=True)
    b = torch.randn(2, 3, 4, 5, requires_grad=True)
    y = leaky_relu_(modulate(x, g * 1, b * 1))              # g * 1: a fresh non-leaf, as a conv output is
    y.square().sum().backward()
    ref = [t.detach().clone().requires_grad_() for t in (x, g, b)]
    F.leaky_relu(ref[0] * (1 + ref[1]) + ref[2], 0.2).square().sum().backward()
    for t, r in zip((x, g, b), ref):
        assert torch.equal(t.grad, r.grad)


@pytest.mark.parametrize("variant", ["clvae", "gaugan_vae", "groupdnet", "cimle"])
def test_generators_give_the_same_floats_with_and_without_autograd(variant):
    """The in-place inference path (no_grad) is the training path's function, bit for bit, in every family."""
    from smis.evaluate import evaluation_layout
    from smis.sampling import prior_latents
    nets = build_networks(variant, get_preset("synthscenes"))
    nets.G.eval()
    evaluation_layout(nets)                                 # groupdnet / cimle: channels_last on a CPU
    label = blob_label(2, 64, 64, nets.spec.num_classes, cell=8)
    z = prior_latents(nets, label, 1, [1, 2])
    with torch.no_grad():
        fast = nets.G(label, z)
    slow = nets.G(label, z)                                  # grad enabled: every op out of place
    assert slow.requires_grad and torch.equal(fast, slow.detach())
