"""smis.objective: the G/E and D loss dicts of Eq. 7 by hand on tiny tensors, the loss weights, and GeneratorStep
(G(M, mu + eps sigma) with the KL of Eq. 18). The options against collapse (KLOptions) are tested in
tests/test_kl_options.py."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from smis import objective
from smis.config import get_preset
from smis.losses import feature_matching_loss, g_hinge_loss, kl_divergence
from smis.networks import Latents, build_networks


def _tiny_predictions():
    """D outputs on cat([fake, real]) for B = 2: 2 scales x (one feature stage, logits)."""
    g = torch.Generator().manual_seed(0)
    pred = [[torch.randn(4, 3, 2, 2, generator=g), torch.randn(4, 1, 2, 2, generator=g)] for _ in range(2)]
    return pred, objective.split_batch(pred, 2)


def test_split_batch_takes_fakes_first():
    pred, (fake, real) = _tiny_predictions()
    assert torch.equal(fake[1][0], pred[1][0][:2]) and torch.equal(real[0][1], pred[0][1][2:])


def test_generator_losses_are_eq7_weighted_sum_by_hand():
    _, (pf, pr) = _tiny_predictions()
    fake, image = torch.rand(2, 3, 4, 4) * 2 - 1, torch.rand(2, 3, 4, 4) * 2 - 1
    kl = torch.tensor(3.0)
    w = objective.LossWeights(fm=10.0, perceptual=2.0, kl=0.05)
    l1 = lambda a, b: (a - b).abs().mean()
    perceptual = lambda a, b: 0.5 * l1(a, b)                            # any callable module-like loss
    got = objective.generator_losses(pf, pr, fake, image, kl, w, perceptual)
    assert list(got) == ["g_gan", "g_fm", "g_perceptual", "kl", "g_total"]
    # by hand: hinge G = -mean of the fake logits, averaged over scales; FM = L1 of the first stage
    gan = (-pf[0][1].mean() - pf[1][1].mean()) / 2
    fm = (l1(pf[0][0], pr[0][0]) + l1(pf[1][0], pr[1][0])) / 2
    p = 0.5 * l1(fake, image)
    assert got["g_gan"].item() == pytest.approx(gan.item(), rel=1e-6)
    assert got["g_fm"].item() == pytest.approx(fm.item(), rel=1e-6)
    assert got["g_perceptual"].item() == pytest.approx(p.item(), rel=1e-6)
    assert got["g_total"].item() == pytest.approx((gan + 10 * fm + 2 * p + 0.05 * 3.0).item(), rel=1e-6)
    # from losses.py's terms, and without a perceptual net (no key, no term)
    none = objective.generator_losses(pf, pr, fake, image, kl, w)
    assert "g_perceptual" not in none
    want = g_hinge_loss(pf) + 10 * feature_matching_loss(pr, pf) + 0.05 * kl
    assert none["g_total"].item() == pytest.approx(want.item(), rel=1e-6)


def test_loss_weights_take_the_preset_and_the_kl_override():
    p = get_preset("synthscenes")
    assert objective.LossWeights.of(p) == objective.LossWeights(p.lambda_fm, p.lambda_perceptual, p.lambda_kl)
    assert objective.LossWeights.of(p, kl_weight=1.5).kl == 1.5 and objective.LossWeights.of(p, 0.0).kl == 0.0


def test_discriminator_loss_is_the_hinge_by_hand():
    _, (pf, pr) = _tiny_predictions()
    got = objective.discriminator_losses(pf, pr)
    assert list(got) == ["d_hinge"]
    want = sum(F.relu(1 - pr[s][1]).mean() + F.relu(1 + pf[s][1]).mean() for s in range(2)) / 2
    assert got["d_hinge"].item() == pytest.approx(want.item(), rel=1e-6)


def test_generator_step_reparameterises_and_returns_the_kl():
    nets = build_networks("clvae", get_preset("synthscenes", ngf=8, nef=8, spade_hidden=16, z_dim=8, z_dim_local=4))
    step = objective.GeneratorStep(nets.G, nets.E, nets.spec).eval()
    label = torch.randint(0, 10, (2, 64, 64))
    image = torch.rand(2, 3, 64, 64) * 2 - 1
    mu, logvar = nets.E(image, label)
    eps = mu.map(lambda t: torch.randn_like(t) if t.is_floating_point() else t)
    fake, kl, layer_kl = step(label, image, eps)
    z = Latents(mu.z + eps.z * torch.exp(0.5 * logvar.z), mu.zc + eps.zc * torch.exp(0.5 * logvar.zc), mu.present)
    assert torch.equal(fake, nets.G(label, z))
    assert torch.equal(kl, kl_divergence(mu, logvar))
    kl_g = -0.5 * (1 + logvar.z - mu.z ** 2 - logvar.z.exp()).sum()
    assert layer_kl.shape == (len(nets.spec.layers),) and (layer_kl >= 0).all()
    assert torch.allclose(kl_g + layer_kl.sum(), kl, rtol=1e-5)          # the latent layers' terms of Eq. 18
