"""Options against posterior collapse (smis.objective.KLOptions; TrainConfig kl_free_bits, kl_warmup_steps,
kl_balance): each changes the KL term as specified, the defaults leave the paper's loss unchanged, and a run
trains, logs and resumes with them."""
import copy
import csv

import pytest
import torch

from smis import objective
from smis import train as T
from smis.config import TINY
from smis.losses import feature_matching_loss, g_hinge_loss, kl_divergence, kl_terms
from smis.networks import Latents
from smis.objective import KLOptions, generator_losses, split_batch
from smis.options import TrainConfig, resume_conflicts


def cfg(tmp_path, **kw):
    base = dict(run_dir=str(tmp_path / "run"), preset_overrides=TINY, data_length=16, steps=2, batch_size=2,
                perceptual="none", tensorboard=False, progress=False, ckpt_every=2, log_every=1, image_every=0)
    return TrainConfig(**{**base, **kw})


def _latents(B=3, L=5, K=4, N=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    present = torch.rand(B, L, K, generator=g) > 0.4
    mu = Latents(torch.randn(B, 6, generator=g), torch.randn(B, L, K, N, generator=g), present)
    lv = mu.map(lambda t: torch.randn(t.shape, generator=g) if t.is_floating_point() else t)
    return mu, lv


def _eq18_by_hand(mu, lv):
    """Eq. 18 per sample, written out: KL_g + sum_l mean over present c of KL_{l,c}."""
    kl_g = 0.5 * (mu.z ** 2 + lv.z.exp() - 1 - lv.z).sum(-1)
    kl_c = 0.5 * (mu.zc ** 2 + lv.zc.exp() - 1 - lv.zc).sum(-1)          # (B, L, K)
    p = mu.present.float()
    return kl_g, (kl_c * p).sum(-1) / p.sum(-1).clamp(min=1)              # (B,), (B, L)


def test_kl_terms_are_eq18_per_layer_and_add_up_to_the_kl():
    mu, lv = _latents()
    kl_g, per_layer = kl_terms(mu, lv)
    want_g, want_l = _eq18_by_hand(mu, lv)
    assert torch.allclose(kl_g, want_g, atol=1e-5) and torch.allclose(per_layer, want_l, atol=1e-5)
    assert torch.allclose(kl_g + per_layer.sum(-1), kl_divergence(mu, lv, reduction="none"), atol=1e-5)
    _, summed = kl_terms(mu, lv, classes="sum")                           # GroupDNet: every class code counts
    assert torch.allclose(summed.sum(-1) + kl_g, kl_divergence(mu, lv, reduction="none", classes="sum"), atol=1e-5)


# ---------------------------------------------------------------------------------------------
# each option on a constructed KL: layer_kl (L,) summed over a batch of B = 4, a global KL of 2


def _constructed(layer_kl=(1.0, 4.0, 0.2, 12.0, 0.0)):
    layer = torch.tensor(layer_kl, requires_grad=True)
    kl = 2.0 + layer.sum()                               # Eq. 18 summed over the batch: KL_g + sum_l KL_l
    return kl, layer


def test_defaults_are_the_papers_kl_itself():
    kl, layer = _constructed()
    reg, logged = KLOptions().regularizer(kl, layer, 4, step=0)
    assert reg is kl and logged == {} and KLOptions().paper


def test_free_bits_floor_each_layer_and_stop_its_gradient_below():
    kl, layer = _constructed()                           # per image: 0.25, 1.0, 0.05, 3.0, 0.0
    reg, logged = KLOptions(free_bits=0.5).regularizer(kl, layer, 4, step=0)
    # floor B f = 2 nats per layer: layers 0, 2 and 4 are below it and count as 2, layers 1 and 3 as they are
    assert reg.item() == pytest.approx(2.0 + 2 + 4 + 2 + 12 + 2)
    reg.backward()
    assert layer.grad.tolist() == [0.0, 1.0, 0.0, 1.0, 0.0]   # no KL gradient to a layer below the floor
    assert logged["kl_reg"] == pytest.approx(24.0) and logged["kl_warmup"] == 1.0


def test_warmup_ramps_lambda_kl_linearly_from_zero():
    opts = KLOptions(warmup_steps=10)
    assert [opts.warmup(t) for t in (0, 5, 10, 30)] == [0.0, 0.5, 1.0, 1.0]
    for step, factor in ((0, 0.0), (5, 0.5), (10, 1.0)):
        kl, layer = _constructed()
        reg, logged = opts.regularizer(kl, layer, 4, step)
        assert reg.item() == pytest.approx(factor * kl.item(), abs=1e-6) and logged["kl_warmup"] == factor
        reg.backward()
        assert torch.allclose(layer.grad, torch.full((5,), factor))


def test_balancing_coefficients_are_proportional_to_the_layers_kl_and_have_mean_one():
    kl, layer = _constructed()
    reg, logged = KLOptions(balance="always").regularizer(kl, layer, 4, step=0)
    gamma = torch.tensor([logged[f"kl_coef_l{i}"] for i in range(5)])
    assert gamma.sum().item() == pytest.approx(5.0)
    m = layer.detach() / 4 + 0.01                        # mean KL per image + NVAE's 0.01
    assert torch.allclose(gamma / gamma[0], m / m[0])    # proportional
    assert gamma[4] < gamma[2] < gamma[0] < gamma[1] < gamma[3]   # a collapsed layer is pushed least
    reg.backward()
    assert torch.allclose(layer.grad, gamma)             # detached: the coefficients carry no gradient
    assert reg.item() == pytest.approx(2.0 + (gamma * layer.detach()).sum().item(), rel=1e-6)


def test_balancing_during_warmup_only_as_nvae():
    opts = KLOptions(warmup_steps=4, balance="warmup")
    assert [opts.balancing(t) for t in (0, 3, 4, 9)] == [True, True, False, False]
    kl, layer = _constructed()
    _, logged = opts.regularizer(kl, layer, 4, step=2)
    assert logged["kl_coef_l3"] > 1 > logged["kl_coef_l4"]
    kl, layer = _constructed()
    reg, logged = opts.regularizer(kl, layer, 4, step=4)
    assert [logged[f"kl_coef_l{i}"] for i in range(5)] == [1.0] * 5          # after the warm-up: off
    assert reg.item() == pytest.approx(kl.item(), rel=1e-6)


def test_options_reject_bad_values_and_models_without_latent_layers():
    with pytest.raises(ValueError, match="free_bits=-1"):
        KLOptions(free_bits=-1)
    with pytest.raises(ValueError, match="balance='sometimes'"):
        KLOptions(balance="sometimes")
    with pytest.raises(ValueError, match="no latent layers|has none"):
        KLOptions(free_bits=1.0).regularizer(torch.tensor(3.0), torch.zeros(0), 2, 0)


# ---------------------------------------------------------------------------------------------
# the defaults give the paper's loss exactly: a real step, replayed with the pre-option formula


def test_default_training_step_loss_is_the_papers_exactly(tmp_path):
    t = T.Trainer(cfg(tmp_path))
    parts, nets = t.parts, t.nets
    batch = [t.dataset[i] for i in range(2)]
    image, label = torch.stack([b["image"] for b in batch]), torch.stack([b["label"] for b in batch])
    G, E, D = copy.deepcopy(nets.G), copy.deepcopy(nets.E), copy.deepcopy(nets.D)
    nets.train()
    got = t.train_step(image, label)
    # replay on copies of the networks taken before the step: G(M, mu + eps sigma), Eq. 18, Eq. 7
    G.train(), E.train(), D.train()
    eps = T.latent_noise(nets.spec, 2, 0, 0, 2, 0, "cpu")
    with torch.no_grad():
        mu, lv = E(image, label)
        fake = G(label, Latents.reparameterize(mu, lv, eps=eps))
        pf, pr = split_batch(D(torch.cat([label, label]), torch.cat([fake, image])), 2)
        kl = kl_divergence(mu.map(lambda x: x.float()), lv.map(lambda x: x.float()))
        w = parts.weights
        total = g_hinge_loss(pf) + w.fm * feature_matching_loss(pr, pf) + w.kl * kl
    assert got["kl"] == float(kl) and got["g_total"] == float(total)      # same machine, same ops: bit for bit
    assert "kl_reg" not in got
    assert sum(got[f"kl_l{i}"] for i in range(5)) * 2 <= got["kl"] + 1e-4   # the layers' part of the KL
    ref = generator_losses(pf, pr, fake, image, kl, w)
    assert torch.equal(ref["g_total"], generator_losses(pf, pr, fake, image, kl, w, kl_reg=None)["g_total"])


# ---------------------------------------------------------------------------------------------
# runs with each option: train, log, record, resume


def _rows(run):
    return list(csv.DictReader(open(run / "losses.csv")))


@pytest.mark.parametrize("options, logged", [
    (dict(kl_free_bits=0.5), ["kl_reg"]),
    (dict(kl_warmup_steps=4), ["kl_reg", "kl_warmup"]),
    (dict(kl_warmup_steps=4, kl_balance="warmup"), ["kl_coef_l0", "kl_coef_l4"]),
    (dict(kl_balance="always"), ["kl_coef_l0", "kl_coef_l4"]),
])
def test_two_step_run_with_each_option(tmp_path, options, logged):
    run = T.Trainer(cfg(tmp_path, **options)).fit()
    rows = _rows(run)
    assert [int(r["step"]) for r in rows] == [1, 2]
    for r in rows:
        assert all(k in r for k in ["kl", *(f"kl_l{i}" for i in range(5)), *logged])
        assert float(r["kl"]) > 0                                       # the logged kl stays Eq. 18's
    if "kl_warmup_steps" in options:
        assert [float(r["kl_warmup"]) for r in rows] == [0.0, 0.25]     # steps 0 and 1 of N = 4
        assert float(rows[0]["kl_reg"]) == 0.0
    if "kl_free_bits" in options:                   # B f = 1 nat floor per layer: R >= 5 nats
        assert float(rows[0]["kl_reg"]) >= 5.0 - 1e-4
    if "kl_balance" in options:
        assert sum(float(rows[0][f"kl_coef_l{i}"]) for i in range(5)) == pytest.approx(5.0, rel=1e-4)
    conf = (run / "config.json").read_text()
    assert all(f'"{k}"' in conf for k in options)
    # resume honours the options: a changed one is refused, the same one continues
    changed = {k: (v * 2 if not isinstance(v, str) else "none") for k, v in options.items() if k != "kl_balance"}
    changed = changed or {"kl_balance": "none"}
    with pytest.raises(T.ResumeMismatch, match=f"{next(iter(changed))}: checkpoint "):
        T.Trainer(cfg(tmp_path, steps=4, **{**options, **changed})).fit(resume=True)
    T.Trainer(cfg(tmp_path, steps=4, **options)).fit(resume=True)
    assert [int(r["step"]) for r in _rows(run)] == [1, 2, 3, 4]


def test_free_bits_change_the_encoders_gradient(tmp_path):
    """A floor above every layer's KL removes the layers' KL gradient: E's gradient differs from the paper's."""
    grads = {}
    for fb in (0.0, 1e4):
        t = T.Trainer(cfg(tmp_path / str(fb), kl_free_bits=fb, kl_weight=1.0))
        batch = [t.dataset[i] for i in range(2)]
        image, label = torch.stack([b["image"] for b in batch]), torch.stack([b["label"] for b in batch])
        t.parts.opt_g.step = lambda *a, **k: None                       # keep the gradients, skip the update
        t.train_step(image, label)
        grads[fb] = torch.cat([p.grad.flatten() for p in t.nets.E.parameters() if p.grad is not None])
    assert not torch.allclose(grads[0.0], grads[1e4])


def test_old_configs_without_the_options_resume_as_the_papers_objective():
    saved = {k: v for k, v in vars(TrainConfig()).items() if not k.startswith("kl_") or k == "kl_weight"}
    assert resume_conflicts(saved, TrainConfig()) == []
    assert resume_conflicts(saved, TrainConfig(kl_warmup_steps=10)) == ["kl_warmup_steps: checkpoint 0, now 10"]


@pytest.mark.parametrize("argv, flag", [
    (["--kl-free-bits", "-1"], "kl_free_bits"),
    (["--kl-warmup-steps", "-3"], "kl_warmup_steps"),
    (["--kl-balance", "warmup"], "--kl-warmup-steps"),
    (["--kl-balance", "often"], "kl-balance"),
    (["--variant", "gaugan", "--kl-warmup-steps", "5"], "no encoder"),
    (["--variant", "gaugan_vae", "--kl-free-bits", "0.5"], "no latent layers"),
    (["--variant", "no_layerwise", "--kl-balance", "always"], "single latent layer"),
    (["--variant", "groupdnet", "--kl-balance", "always"], "single latent layer"),
])
def test_cli_rejects_bad_option_values(argv, flag, capsys):
    with pytest.raises(SystemExit) as e:
        T.parse_args(argv)
    assert e.value.code == 2 and flag in capsys.readouterr().err


def test_cli_takes_the_options():
    c, _ = T.parse_args(["--variant", "clvae", "--preset", "synthscenes", "--kl-free-bits", "0.25",
                         "--kl-warmup-steps", "2000", "--kl-balance", "warmup"])
    assert (c.kl_free_bits, c.kl_warmup_steps, c.kl_balance) == (0.25, 2000, "warmup")
    assert objective.KLOptions.of(c) == KLOptions(0.25, 2000, "warmup")
