"""Tests of smis.losses against hand computations."""
from __future__ import annotations

import logging
import math

import pytest
import torch
import torch.nn.functional as F

import smis.losses
from smis.losses import (VGG_WEIGHTS, PerceptualLoss, d_hinge_loss, feature_matching_loss, g_hinge_loss,
                         kl_divergence, make_perceptual_loss)
from smis.networks import Latents


def test_hinge_losses_by_hand():
    real = [[torch.zeros(1), torch.tensor([[0.5, 2.0]])], [torch.zeros(1), torch.tensor([[-1.0]])]]
    fake = [[torch.zeros(1), torch.tensor([[-0.5, -3.0]])], [torch.zeros(1), torch.tensor([[1.0]])]]
    # scale 0: real relu(1-0.5)=0.5, relu(1-2)=0 -> 0.25; fake relu(1-0.5)=0.5, relu(1-3)=0 -> 0.25
    # scale 1: real relu(1+1)=2; fake relu(1+1)=2 -> 4; mean over scales (0.5 + 4) / 2
    assert d_hinge_loss(real, fake).item() == pytest.approx(2.25)
    # G: scale 0 -mean(-0.5, -3) = 1.75; scale 1 -1 -> mean 0.375
    assert g_hinge_loss(fake).item() == pytest.approx(0.375)


def test_feature_matching_by_hand_and_detaches_real():
    r1, r2 = torch.ones(1, 2, 2, 2, requires_grad=True), torch.zeros(1, 1, 3, 3, requires_grad=True)
    f1, f2 = torch.full((1, 2, 2, 2), 3.0, requires_grad=True), torch.full((1, 1, 3, 3), -1.0, requires_grad=True)
    logits = torch.full((1, 1, 2, 2), 100.0)                            # ignored: last stage
    real = [[r1, logits], [r2, logits]]
    fake = [[f1, logits * 0], [f2, logits * 0]]
    loss = feature_matching_loss(real, fake)
    assert loss.item() == pytest.approx((2.0 + 1.0) / 2)
    loss.backward()
    assert r1.grad is None and r2.grad is None
    assert torch.allclose(f1.grad, torch.full_like(f1, 0.5 / 8))       # d|f - r| / n, halved by the scale mean


def kl_reference(mu, logvar):
    total = 0.0
    B = mu.z.shape[0]
    for b in range(B):
        m, lv = mu.z[b].double(), logvar.z[b].double()
        total += float(0.5 * (m ** 2 + lv.exp() - 1 - lv).sum())
        for l in range(mu.zc.shape[1]):
            terms = [float(0.5 * (mu.zc[b, l, c].double() ** 2 + logvar.zc[b, l, c].double().exp() - 1
                                  - logvar.zc[b, l, c].double()).sum())
                     for c in range(mu.zc.shape[2]) if mu.present[b, l, c]]
            total += sum(terms) / max(len(terms), 1)
    return total


def test_kl_matches_hand_computation():
    g = torch.Generator().manual_seed(0)
    B, L, K, N = 3, 4, 6, 5
    present = torch.rand(B, L, K, generator=g) > 0.4
    present[0, 1] = False                                               # a layer with no class at all
    mu = Latents(torch.randn(B, 7, generator=g), torch.randn(B, L, K, N, generator=g) * present[..., None], present)
    lv = Latents(torch.randn(B, 7, generator=g), torch.randn(B, L, K, N, generator=g) * present[..., None], present)
    ref = kl_reference(mu, lv)
    assert kl_divergence(mu, lv).item() == pytest.approx(ref, rel=1e-5)
    assert kl_divergence(mu, lv, "mean").item() == pytest.approx(ref / B, rel=1e-5)
    assert kl_divergence(mu, lv, "none").shape == (B,)
    # the prior has zero KL; global-only latents give the global term alone
    zero = Latents(torch.zeros(2, 3), torch.zeros(2, 1, 2, 2), torch.ones(2, 1, 2, dtype=torch.bool))
    assert kl_divergence(zero, zero).item() == 0
    m = Latents(torch.ones(1, 4))
    assert kl_divergence(m, Latents(torch.zeros(1, 4))).item() == pytest.approx(2.0)   # 4 * 0.5 * 1
    with pytest.raises(ValueError, match="reduction"):
        kl_divergence(mu, lv, "avg")


def test_kl_absent_classes_change_nothing():
    present = torch.tensor([[[True, False]]])
    mu = Latents(torch.zeros(1, 1), torch.tensor([[[[1.0], [0.0]]]]), present)
    lv = Latents(torch.zeros(1, 1), torch.zeros(1, 1, 2, 1), present)
    mu_big = Latents(mu.z, torch.tensor([[[[1.0], [50.0]]]]), present)
    assert kl_divergence(mu, lv).item() == pytest.approx(0.5)           # mean over present classes only
    assert kl_divergence(mu_big, lv).item() == pytest.approx(0.5)


class TinyExtractor(torch.nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.a = torch.nn.Conv2d(3, 4, 3, padding=1)
        self.b = torch.nn.Conv2d(4, 4, 3, stride=2, padding=1)

    def forward(self, x):
        h = F.relu(self.a(x))
        return [h, self.b(h)]


def test_perceptual_loss_by_hand():
    ext = TinyExtractor()
    loss = PerceptualLoss(ext, weights=(0.25, 2.0))
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    y = torch.rand(2, 3, 16, 16) * 2 - 1
    fx, fy = ext(x), ext(y)
    expect = 0.25 * (fx[0] - fy[0]).abs().mean() + 2.0 * (fx[1] - fy[1]).abs().mean()
    assert loss(x, y).item() == pytest.approx(expect.item(), rel=1e-6)
    assert loss(x, x).item() == 0
    fake = x.clone().requires_grad_()
    real = y.clone().requires_grad_()
    loss(fake, real).backward()
    assert fake.grad.abs().sum() > 0 and real.grad is None
    assert all(p.grad is None and not p.requires_grad for p in ext.parameters())
    loss.train()
    assert not loss.extractor.training


def test_perceptual_loss_stays_float32_inside_a_cpu_autocast_region_unless_asked():
    """bf16 autocast does not reach the extractor on the CPU (its bf16 depthwise convs are slow there): the loss
    and the fake's gradient are the float32 ones; with autocast_cpu=True the convs run in bf16."""
    ext = TinyExtractor()
    x, y = torch.rand(2, 3, 16, 16) * 2 - 1, torch.rand(2, 3, 16, 16) * 2 - 1
    grads = {}
    for name, loss, autocast in (("fp32", PerceptualLoss(ext), False), ("kept", PerceptualLoss(ext), True),
                                 ("bf16", PerceptualLoss(ext, autocast_cpu=True), True)):
        fake = x.clone().requires_grad_()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            value = loss(fake, y)
        value.backward()
        grads[name] = (value.detach(), fake.grad)
    assert grads["kept"][0].dtype == torch.float32
    assert torch.equal(grads["kept"][0], grads["fp32"][0]) and torch.equal(grads["kept"][1], grads["fp32"][1])
    assert not torch.equal(grads["bf16"][0], grads["fp32"][0])          # bf16 convs: other roundings
    assert grads["bf16"][0].item() == pytest.approx(grads["fp32"][0].item(), rel=2e-2)


class PixelExtractor(torch.nn.Module):
    """Two feature maps made of per-pixel arithmetic and pooling only, so that an image's maps do not depend on
    the batch it runs in on any machine (TinyExtractor's small convolutions do on some CPU paths); counts the
    images it has run on. `batch_stat`: subtract the batch mean, so that they do."""

    def __init__(self, batch_stat: bool = False):
        super().__init__()
        self.w = torch.nn.Parameter(torch.tensor([0.5, -1.0, 2.0, 0.25]).view(1, 4, 1, 1))
        self.batch_stat, self.seen = batch_stat, 0

    def forward(self, x):
        self.seen += len(x)
        if self.batch_stat:
            x = x - x.mean(0, keepdim=True)
        h = torch.tanh(x[:, [0, 1, 2, 0]] * self.w)
        return [h, F.avg_pool2d(h, 2)]


def test_feature_cache_reads_back_the_maps_of_images_seen_before():
    """The cache returns net(images) bit for bit for any mix of new and seen images (and repeats within a
    batch), runs the network only on the new ones after its first batch's check, keeps the network's layout,
    stops storing at its budget, and starts over when the network's weights change."""
    from smis.backbones import ImageFeatureCache
    torch.manual_seed(1)
    pool = torch.rand(12, 3, 16, 16) * 2 - 1
    batches = [[0, 1, 2, 3], [0, 1, 2, 3], [2, 4, 5, 0], [8, 8, 6, 7], [8, 7, 6, 5, 4, 3, 2, 1, 0]]
    for channels_last in (False, True):
        net, ref = PixelExtractor(), PixelExtractor()
        x = pool.contiguous(memory_format=torch.channels_last) if channels_last else pool
        cache = ImageFeatureCache(max_bytes=2**20)
        with torch.no_grad():
            for b in batches:
                got, want = cache(net, x[b]), ref(x[b])
                for g, w in zip(got, want):
                    assert g.shape == w.shape and g.stride() == w.stride() and torch.equal(g, w)
        assert cache.exact is True
        assert net.seen == 4 + (1 + 2 + 3) + 2 + 4                     # first batch + its check, then new only
        assert cache.misses == 10 and cache.hits == 25 - 10 and sorted(cache.rows.values()) == list(range(9))
        with torch.no_grad():
            net.w.mul_(2)                                               # other weights: nothing of before is valid
            got = cache(net, x[:4])
            assert all(torch.equal(g, w) for g, w in zip(got, net(x[:4])))
        assert len(cache.rows) == 4
    # a budget of three images: those stay, the others run every time, mixed batches put both together
    one = sum(m[0].numel() * 4 for m in PixelExtractor()(pool[:1]))
    net, cache = PixelExtractor(), ImageFeatureCache(max_bytes=3 * one + one // 2)
    with torch.no_grad():
        for b in ([0, 1, 2, 3, 4], [4, 3, 2, 1, 0], [0, 1, 9]):
            assert all(torch.equal(g, w) for g, w in zip(cache(net, pool[b]), PixelExtractor()(pool[b])))
    assert cache.capacity == 3 and sorted(cache.rows.values()) == [0, 1, 2]
    assert net.seen == 5 + (1 + 2 + 3 + 4) + 2 + 1                     # 3 and 4 again, then 9
    # told how many distinct images the run shows: a budget for fewer than a quarter of them is off from the start
    for expected, on in ((12, True), (13, False)):
        net, cache = PixelExtractor(), ImageFeatureCache(max_bytes=3 * one + one // 2, expected_images=expected)
        with torch.no_grad():
            for b in ([0, 1, 2], [0, 1, 2]):
                assert all(torch.equal(g, w) for g, w in zip(cache(net, pool[b]), PixelExtractor()(pool[b])))
        assert cache.too_small is not on and (len(cache.rows) == 3) == on
        assert net.seen == (3 + 1 + 2 if on else 3 + 1 + 2 + 3)         # off: the second batch runs again
    # random crops: the images a run shows are unbounded, no budget holds a quarter of them
    net, cache = PixelExtractor(), ImageFeatureCache(max_bytes=2**30, expected_images=math.inf)
    with torch.no_grad():
        for b in ([0, 1, 2], [0, 1, 2]):
            cache(net, pool[b])
    assert cache.too_small and not cache.rows and net.seen == 2 * 3           # no batch check either
    with pytest.raises(ValueError, match="max_bytes=-1"):
        ImageFeatureCache(-1)


def test_feature_cache_turns_itself_off_for_a_network_whose_maps_depend_on_the_batch(caplog):
    from smis.backbones import ImageFeatureCache
    pool = torch.rand(6, 3, 8, 8) * 2 - 1
    net, cache = PixelExtractor(batch_stat=True), ImageFeatureCache(max_bytes=2**20)
    with torch.no_grad(), caplog.at_level(logging.INFO, logger="smis.backbones"):
        for b in ([0, 1, 2], [0, 1, 2], [2, 3, 4]):
            assert all(torch.equal(g, w) for g, w in zip(cache(net, pool[b]), net(pool[b])))
    assert cache.exact is False and cache.rows == {} and cache.hits == 0
    assert "depend on the batch" in caplog.text


def test_perceptual_loss_with_the_real_cache_gives_the_same_loss_and_gradient():
    """Over batches that repeat images (as epochs do), the cached loss and the fake's gradient are those of the
    uncached loss, and the extractor runs on the real images only the first time each comes round."""
    torch.manual_seed(2)
    pool = torch.rand(6, 3, 16, 16) * 2 - 1
    plain, cached = PerceptualLoss(PixelExtractor()), PerceptualLoss(PixelExtractor(), real_cache_mb=1)
    assert plain.real_cache is None and cached.real_cache is not None
    for b in ([0, 1, 2], [3, 4, 5], [2, 1, 0], [5, 0, 3]):
        fake = torch.rand(3, 3, 16, 16) * 2 - 1
        out = []
        for loss in (plain, cached):
            f = fake.clone().requires_grad_()
            value = loss(f, pool[b])
            value.backward()
            out.append((value.detach(), f.grad))
        assert torch.equal(out[1][0], out[0][0]) and torch.equal(out[1][1], out[0][1])
    assert cached.real_cache.exact and cached.real_cache.misses == 6 and cached.real_cache.hits == 6
    assert cached.extractor.seen == 4 * 3 + (3 + 1 + 2) + 3          # the fakes, 2 new batches + the check


def test_perceptual_weights_default_and_errors():
    ext = TinyExtractor()
    x, y = torch.rand(1, 3, 8, 8), torch.rand(1, 3, 8, 8)
    fx, fy = ext(x), ext(y)
    plain = PerceptualLoss(ext)                                         # 2 maps, no layer_weights: all 1
    assert plain(x, y).item() == pytest.approx(sum((a - b).abs().mean() for a, b in zip(fx, fy)).item(), rel=1e-6)
    ext.layer_weights = (3.0, 0.0)
    assert PerceptualLoss(ext)(x, y).item() == pytest.approx(3 * (fx[0] - fy[0]).abs().mean().item(), rel=1e-6)
    with pytest.raises(ValueError, match="one weight per map"):
        PerceptualLoss(TinyExtractor(), weights=VGG_WEIGHTS)(x, y)


def test_make_perceptual_loss_uses_the_backbone_factory(monkeypatch, caplog):
    calls = []

    def fake_factory(device=None, prefer="vgg19"):
        calls.append((device, prefer))
        ext = TinyExtractor()
        ext.layer_weights = (1.0, 0.5)
        return ext, "efficientnet_lite0"

    monkeypatch.setattr(smis.losses, "perceptual_extractor", fake_factory)
    with caplog.at_level(logging.INFO, logger="smis.losses"):
        loss = make_perceptual_loss(device="cpu")
    assert calls == [("cpu", "vgg19")]
    assert loss.backbone == "efficientnet_lite0" and loss.weights == (1.0, 0.5)
    assert "efficientnet_lite0" in caplog.text
    assert math.isfinite(loss(torch.rand(1, 3, 8, 8), torch.rand(1, 3, 8, 8)).item())


def test_reparameterize_with_given_noise_by_hand():
    """mu + eps exp(logvar / 2) on the noise given, present kept from mu; drawn noise from the generator."""
    g = torch.Generator().manual_seed(1)
    mu = Latents(torch.randn(2, 3, generator=g), torch.randn(2, 1, 4, 2, generator=g),
                 torch.ones(2, 1, 4, dtype=torch.bool))
    lv = mu.map(lambda t: torch.randn(t.shape, generator=g) if t.is_floating_point() else t)
    eps = mu.map(lambda t: torch.randn(t.shape, generator=g) if t.is_floating_point() else t)
    z = Latents.reparameterize(mu, lv, eps=eps)
    assert torch.equal(z.z, mu.z + eps.z * torch.exp(0.5 * lv.z))
    assert torch.equal(z.zc, mu.zc + eps.zc * torch.exp(0.5 * lv.zc)) and z.present is mu.present
    drawn = Latents.reparameterize(mu, lv, generator=torch.Generator().manual_seed(5))
    g5 = torch.Generator().manual_seed(5)
    e_z, e_zc = torch.randn(2, 3, generator=g5), torch.randn(2, 1, 4, 2, generator=g5)   # z first, then zc
    assert torch.equal(drawn.z, mu.z + e_z * torch.exp(0.5 * lv.z))
    assert torch.equal(drawn.zc, mu.zc + e_zc * torch.exp(0.5 * lv.zc))
