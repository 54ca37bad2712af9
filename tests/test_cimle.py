"""cIMLE (Li, Zhang and Malik 2019): the CRN generator, the IMLE selection and step, its runs, models and edits."""
import csv
import dataclasses
import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from smis import editing, sampling
from smis import train as T
from smis.capabilities import UnsupportedEdit, capabilities
from smis.checkpoint import export_model, load_model
from smis.config import get_preset
from smis.data import make_dataset
from smis.evaluate import style_guided
from smis.imle import IMLEStep, IMLETrainer, build_imle, nearest_samples
from smis.losses import CIMLE_WEIGHTS, IMLEDistance
from smis.models import load_networks
from smis.networks import VARIANTS, Latents, build_networks
from smis.networks.crn import CIMLE_SETTINGS, CRNGenerator, crn_heights
from smis.options import ResumeMismatch, TrainConfig
from smis.utils import CheckpointError

FAST_IMLE = {"pool_size": 4, "samples": 3, "resample_every": 2, "reinit_round": 0}


class TinyFeatures(nn.Module):
    """A frozen seeded 5-map trunk standing in for VGG19 / EfficientNet-Lite0 (the distance's machinery only)."""

    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        widths = (3, 4, 4, 4, 4, 4)
        self.convs = nn.ModuleList(nn.Conv2d(a, b, 3, padding=1) for a, b in zip(widths, widths[1:]))
        for c in self.convs:
            c.weight.data = torch.randn(c.weight.shape, generator=g) * 0.3
            c.bias.data.zero_()
        self.requires_grad_(False)

    def normalize(self, x):
        return x

    def forward(self, x):
        maps, h = [], x
        for i, conv in enumerate(self.convs):
            h = F.relu(conv(h if i == 0 or h.shape[-1] < 2 else F.avg_pool2d(h, 2)))
            maps.append(h)
        return maps


def tiny_distance():
    d = IMLEDistance(TinyFeatures())
    d.backbone = "tiny"
    return d


def cfg(tmp_path, **kw):
    base = dict(variant="cimle", run_dir=str(tmp_path / "run"), data_length=16, steps=6, batch_size=2, imle=FAST_IMLE,
                tensorboard=False, progress=False, ckpt_every=3, log_every=1, image_every=0)
    base.update(kw)
    return TrainConfig(**base)


def trainer(c):
    return IMLETrainer(c, parts=build_imle(c, "cpu", distance=tiny_distance()))


def batch(n=2, seed=0):
    ds = make_dataset("synthscenes", None, "train", size=(64, 64), length=n, seed=seed)
    items = [ds[i] for i in range(n)]
    return torch.stack([it["image"] for it in items]), torch.stack([it["label"] for it in items]).long()


# -- the network -----------------------------------------------------------------------------------


def test_cimle_builds_through_the_registry_without_encoder_or_discriminator():
    nets = build_networks("cimle", get_preset("synthscenes"))
    assert VARIANTS["cimle"].family == "cimle" and nets.E is None and nets.D is None
    assert isinstance(nets.G, CRNGenerator) and nets.spec.z_dim == 10 * 64 * 64 and not nets.spec.has_class_codes
    assert [h for h, _ in nets.G.sizes] == [4, 8, 16, 32, 64]
    image, label = batch()
    z = Latents.prior(nets.spec, label, generator=torch.Generator().manual_seed(0))
    out = nets.G(label, z)
    assert out.shape == (2, 3, 64, 64)
    with torch.no_grad():
        other = nets.G(label, Latents.prior(nets.spec, label, generator=torch.Generator().manual_seed(1)))
        assert (out - other).abs().mean() > 1e-4                      # the noise changes the image
        assert torch.equal(nets.G(label, z), out.detach())              # and nothing else does
        nets.eval()
        ev = nets.G(label, z)
    assert ev.min() >= -1 and ev.max() <= 1                             # eval clips like the authors' test script
    with pytest.raises(ValueError, match="needs latents"):
        nets.G(label, None)
    with pytest.raises(ValueError, match="layer-wise variants"):
        build_networks("cimle", "synthscenes", depth=4)


def test_gta5_configuration_has_the_authors_sizes():
    """train.py: modules 4 x 8 .. 256 x 512, 1024 wide below height 128 and 512 from it, each fed the
    upsampled previous output, the 20-class mask and 10 noise channels; noise encoder 30 -> 100 -> 100 -> 10."""
    G = CRNGenerator(20, (256, 512), CIMLE_SETTINGS["gta5"])
    assert G.sizes == [(4, 8), (8, 16), (16, 32), (32, 64), (64, 128), (128, 256), (256, 512)]
    widths = [b[1][0].weight.shape[0] for b in G.blocks]
    assert widths == [1024] * 5 + [512] * 2
    fan_in = [b[0][0].weight.shape[1] for b in G.blocks]
    assert fan_in == [30] + [w + 30 for w in widths[:-1]]
    assert all(b[0][0].bias is None and isinstance(b[0][1], nn.GroupNorm) for b in G.blocks)   # LN, no bias
    assert [tuple(m.weight.shape) for m in G.noise_encoder.modules() if isinstance(m, nn.Conv2d)] == \
        [(100, 30, 3, 3), (100, 100, 3, 3), (10, 100, 1, 1)]
    assert tuple(G.to_image.weight.shape) == (3, 512, 1, 1)
    noise_w = [m.weight for m in G.noise_encoder.modules() if isinstance(m, nn.Conv2d)]
    assert all(w.abs().max() <= 0.3 for w in noise_w)                  # truncated normal, sd 0.15, cut at 2 sd
    s = CIMLE_SETTINGS["gta5"]
    assert (s.pool_size, s.samples, s.resample_every, s.batch_size, s.total_steps) == (400, 10, 10_000, 1, 160_000)
    with pytest.raises(ValueError, match=r"height of 4 x 2\^k"):
        crn_heights((96, 64))


# -- the IMLE objective ----------------------------------------------------------------------------


class Echo(nn.Module):
    """A 'generator' whose image is its noise: the distance of each candidate is computable by hand."""

    def forward(self, label, z):
        return z.z.view(-1, 3, 2, 2)


def test_nearest_sample_selection_against_a_hand_computation():
    """Pixel term only (weights 1, 0, ...): d = mean |candidate - photo|. Layout 0's photo is 0 and its
    candidates 0.5, -0.1, 0.9 (d = 0.5, 0.1, 0.9: the 2nd); layout 1's photo is 1 and its candidates
    0.2, 1.5, 0.7 (d = 0.8, 0.5, 0.3: the 3rd)."""
    dist = IMLEDistance(TinyFeatures(), weights=(1, 0, 0, 0, 0, 0))
    values = torch.tensor([0.5, -0.1, 0.9, 0.2, 1.5, 0.7])
    z = Latents(values[:, None].expand(6, 12).contiguous())
    image = torch.stack([torch.zeros(3, 2, 2), torch.ones(3, 2, 2)])
    label = torch.zeros(2, 2, 2, dtype=torch.long)
    for chunk in (64, 2):                                               # all at once, one layout per call
        choice, d = nearest_samples(Echo(), dist, label, image, z, samples=3, chunk=chunk)
        assert choice.tolist() == [1, 2]
        torch.testing.assert_close(d, torch.tensor([[0.5, 0.1, 0.9], [0.8, 0.5, 0.3]]))
    with pytest.raises(ValueError, match="candidate codes for 2 layouts x 4 samples"):
        nearest_samples(Echo(), dist, label, image, z, samples=4)


def test_nearest_samples_equals_the_pairwise_distances_of_the_crn():
    torch.manual_seed(0)
    nets = build_networks("cimle", "synthscenes")
    dist = tiny_distance()
    image, label = batch(3)
    z = sampling.prior_latents(nets, label, 4, [7, 8, 9])
    choice, d = nearest_samples(nets.G, dist, label, image, z, samples=4, chunk=8)
    with torch.no_grad():
        pairwise = torch.stack([dist(nets.G(label[i:i + 1], z[i * 4 + j]), image[i:i + 1])[0]
                                for i in range(3) for j in range(4)]).view(3, 4)
    torch.testing.assert_close(d, pairwise, rtol=1e-4, atol=1e-5)       # other batch sizes: float tolerance
    assert torch.equal(choice, pairwise.argmin(1))
    assert CIMLE_WEIGHTS == (1.0, 1 / 1.4, 1 / 1.8, 1 / 1.3, 1 / 2.2, 10 / 0.62)


def test_imle_steps_decrease_the_distance_on_a_fixed_batch(tmp_path):
    c = cfg(tmp_path)
    parts = build_imle(c, "cpu", distance=tiny_distance())
    step = IMLEStep(c, parts, total_steps=10, batch=2)
    image, label = batch()
    z = sampling.prior_latents(parts.nets, label, 1, [0, 1])
    first = step.optimize(image, label, z).mean()
    for _ in range(8):
        last = step.optimize(image, label, z).mean()
    assert step.step == 9 and last < 0.8 * first
    with pytest.raises(ValueError, match="needs the training set"):
        step()


def test_pool_batches_train_on_each_layouts_nearest_code(tmp_path):
    t = trainer(cfg(tmp_path))
    step = t.train_step
    step.refresh_pool(0)
    image, label, z = step.pool_batch(0)
    g = torch.Generator().manual_seed(0 * 7_919 + 0)
    members = torch.randperm(4, generator=g)[:2]
    items = step.pool_items(0)
    cand = step.candidates(0, members, label)                          # (2 x 3) candidates of those members
    for b, i in enumerate(members.tolist()):
        assert torch.equal(z.z[b], cand.z[b * 3 + int(step.choice[i])])
        pimage, plabel = step.load([items[i]])
        assert torch.equal(plabel[0], label[b]) and torch.equal(pimage[0], image[b])
        # the choice is the nearest of the member's candidates under the current G
        c, _ = nearest_samples(t.nets.G, t.parts.distance, plabel, pimage, cand[b * 3:(b + 1) * 3], 3)
        assert int(c) == int(step.choice[i])


def test_run_follows_the_schedule_reinit_and_lr_drop(tmp_path):
    t = trainer(cfg(tmp_path))
    rounds, reinits = [], []
    real, real_reinit = t.train_step.refresh_pool, t.train_step.reinit

    def reinit(r):
        real_reinit(r)
        reinits.append((t.step, r, {k: v.clone() for k, v in t.nets.G.noise_encoder.state_dict().items()},
                        len(t.parts.opt.state)))

    t.train_step.refresh_pool = lambda r, **kw: (rounds.append((t.step, r)), real(r, **kw))
    t.train_step.reinit = reinit
    run = t.fit()
    assert rounds == [(0, 0), (2, 1), (4, 2)]                           # every resample_every = 2 steps
    assert [(s, r, n) for s, r, _, n in reinits] == [(2, 1, 0)]         # once, before round 1; Adam reset
    rows = list(csv.DictReader(open(run / "losses.csv")))
    assert [float(r["lr_factor"]) for r in rows] == [1, 1, 0.1, 0.1, 0.1, 0.1]   # lr x 0.1 after round 0
    assert all(float(r["imle_distance"]) > 0 for r in rows) and "pool_distance" in rows[0]
    conf = json.loads((run / "config.json").read_text())
    assert conf["resolved"]["imle"]["pool_size"] == 4 and conf["resolved"]["perceptual"] == "tiny"
    assert "noise encoder re-initialised after round 0" in conf["resolved"]["schedule"]
    assert conf["resolved"]["params"]["E"] == 0
    # the re-initialisation is seeded (run seed, round) and independent of training: a fresh draw by hand
    fresh = CRNGenerator(10, (64, 64), t.parts.settings)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0 * 31 + 1)
        fresh.reset_noise_encoder()
    for k, v in fresh.noise_encoder.state_dict().items():
        assert torch.equal(reinits[0][2][k], v), k


def test_resume_matches_the_uninterrupted_run_bitwise(tmp_path, capsys):
    """Cut at step 3, mid-round (the pool of round 1 comes back from the checkpoint, not recomputed); a longer
    --steps on resume continues the same run (the rate drops by round), so no "re-timed decay" warning."""
    full = trainer(cfg(tmp_path / "a"))
    full.fit()
    cut = trainer(cfg(tmp_path / "b", steps=3))
    cut.fit()
    resumed = trainer(cfg(tmp_path / "b", steps=6))
    capsys.readouterr()
    resumed.fit(resume=True)
    assert resumed.resumed_from["step"] == 3
    err = capsys.readouterr().err
    assert "(step 3 of 6)" in err and "re-timed" not in err
    a = torch.load(tmp_path / "a" / "run" / "checkpoints" / "step_00000006.pt", weights_only=True)
    b = torch.load(tmp_path / "b" / "run" / "checkpoints" / "step_00000006.pt", weights_only=True)
    for k in a["G"]:
        assert torch.equal(a["G"][k], b["G"][k]), k
    assert torch.equal(a["imle_pool"]["choice"], b["imle_pool"]["choice"])
    ra = [r["imle_distance"] for r in csv.DictReader(open(tmp_path / "a" / "run" / "losses.csv"))]
    rb = [r["imle_distance"] for r in csv.DictReader(open(tmp_path / "b" / "run" / "losses.csv"))]
    assert ra == rb and len(ra) == 6
    with pytest.raises(ResumeMismatch, match="imle"):
        trainer(cfg(tmp_path / "b", steps=8, imle={**FAST_IMLE, "samples": 2})).fit(resume=True)


# -- the command line ------------------------------------------------------------------------------


def test_trainer_hands_cimle_to_the_imle_trainer(tmp_path):
    assert type(T.Trainer.__new__(T.Trainer, cfg(tmp_path))) is IMLETrainer
    assert type(T.Trainer.__new__(T.Trainer, TrainConfig(variant="clvae"))) is T.Trainer


@pytest.mark.parametrize("argv, message", [
    (["--variant", "cimle", "--kl-weight", "0.1"], "no encoder and no KL"),
    (["--variant", "cimle", "--perceptual", "none"], "perceptual distance"),
    (["--variant", "cimle", "--imle", "widths=3"], "unknown cIMLE schedule field"),
    (["--variant", "cimle", "--imle", "pool_size=2", "--batch-size", "4"], "exceeds pool_size=2"),
    (["--variant", "clvae", "--imle", "pool_size=20"], "cimle only"),
    (["--variant", "cimle", "--imle", "pool_size"], "FIELD=JSON"),
])
def test_cli_rejects_what_cimle_cannot_train_with(argv, message, capsys):
    with pytest.raises(SystemExit) as e:
        T.parse_args(argv)
    assert e.value.code == 2 and message in capsys.readouterr().err


# (the command line trains cimle: tests/test_readme.py::test_cimle_train_command, the README's command)


# -- models and edits ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cimle")
    trainer(cfg(tmp, steps=2, ckpt_every=2)).fit()
    return tmp / "run"


def test_export_and_load_round_trip_sample_like_every_variant(run_dir, tmp_path):
    ck = run_dir / "checkpoints" / "step_00000002.pt"
    out = export_model(ck, tmp_path / "cimle.pt", extra={"provenance": {"x": 1}})
    nets = load_model(out)
    assert nets.variant == "cimle" and nets.E is None and not nets.training and nets.meta["provenance"] == {"x": 1}
    direct = load_networks(run_dir)                                     # a run folder, through smis.models
    _, label = batch()
    a = sampling.sample_prior(nets, label, 3, [0, 1])
    b = sampling.sample_prior(direct, label, 3, [0, 1])
    assert a.shape == (2, 3, 3, 64, 64) and (a - b).abs().max() < 0.02   # fp16 storage
    assert (a[:, 0] - a[:, 1]).abs().mean() > 1e-4                      # prior noise gives different samples
    cut = tmp_path / "cut.pt"
    cut.write_bytes(out.read_bytes()[: out.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="cut.pt"):
        load_model(cut)


def test_edits_cimle_cannot_do_say_so_and_name_the_fix(run_dir):
    nets = load_networks(run_dir)
    image, label = batch()
    assert capabilities("cimle") == {"prior samples": True, "reconstruction": False, "style-guided synthesis": False,
                                     "per-class resampling": False, "photo editing (the editor)": False}
    fix = r"cIMLE \(variant 'cimle'\) cannot do {}: it has no {}.*sample_prior.*Fix: load a clvae model"
    with pytest.raises(UnsupportedEdit, match=fix.format("reconstruction", "encoder")):
        sampling.reconstruct(nets, image, label)
    with pytest.raises(UnsupportedEdit, match=fix.format("style-guided synthesis", "encoder")):
        editing.encode(nets, image, label)                              # a cIMLE model asked to encode a photo
    with pytest.raises(UnsupportedEdit, match=fix.format("style-guided synthesis", "encoder")):
        style_guided(nets, label, image, label)
    images, z = editing.sample_images(nets, label[0], 2, torch.Generator().manual_seed(0))
    assert images.shape == (2, 3, 64, 64)                               # what it can do
    with pytest.raises(ValueError, match="no class- and layer-wise codes.*cimle"):
        editing.resample(z, classes=[int(label[0, 0, 0])])              # per-class resampling
    assert not torch.equal(editing.resample(z, None, global_code=True).z, z.z)   # the whole noise map can change
    pytest.importorskip("ipywidgets")
    from smis.widgets import Editor
    info = make_dataset("synthscenes", None, "test", size=(64, 64), length=2).info
    with pytest.raises(UnsupportedEdit, match=fix.format(r"photo editing \(the editor\)", "encoder")):
        Editor(nets, image, label, info.class_names, info.palette)


# -- the gta5 paper profile ------------------------------------------------------------------------


def test_gta5_profile_lists_cimle_with_its_command_and_estimate(tmp_path, capsys):
    """Table 4 compares GauGAN-VAE, cIMLE and Ours: the gta5 profile's notebook 04 reads the three, and its preflight
    names the cIMLE run, the command that trains it and the GPU hours of cIMLE's schedule (not the preset's)."""
    from smis.models import parse_models
    from smis.reproduce.cli import main
    from smis.reproduce.plan import training_hours
    from smis.reproduce.profiles import PROFILES
    assert list(parse_models(PROFILES["gta5"]["04_diversity_rq2"]["MODELS"])) == ["clvae", "gaugan_vae",
                                                                                          "cimle"]
    run = tmp_path / "runs" / "gta5_cimle"
    models = f"clvae:official:gta5:{tmp_path}/w,gaugan_vae:{{out}}/runs/gta5_gaugan_vae,cimle:{run}"

    def check() -> str:
        main(["--profile", "gta5", "--check", "--out", str(tmp_path / "out"), "--set",
              f"DATA_ROOT={tmp_path}/gta5", f"04.MODELS={models}"])
        return capsys.readouterr().out

    hours = training_hours("gta5", 160_000, "cimle")
    assert hours["fp32"] > training_hours("gta5", 160_000)["fp32"]     # the CRN costs more per image
    line = [x for x in check().splitlines() if "run cimle" in x][0]
    assert line.strip().startswith(f"MISSING  run cimle: {run}: no such folder (the full schedule: 160,000 steps, "
                                   f"~{hours['fp32']:.1f} h on one H100")
    assert "Fix: python -m smis.train --variant cimle --preset gta5 --dataset gta5" in line
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.json").write_text(json.dumps({"variant": "cimle", "preset": "gta5", "preset_overrides": {},
                                                 "resolved": {"global_batch": 1}}))
    torch.save({"step": 80_000}, run / "checkpoints" / "step_00080000.pt")
    line = [x for x in check().splitlines() if "run cimle" in x][0]
    assert "PARTIAL  run cimle" in line and "80,000 of 160,000 steps of cIMLE's schedule (batch 1)" in line
    torch.save({"step": 160_000}, run / "checkpoints" / "step_00160000.pt")
    line = [x for x in check().splitlines() if "run cimle" in x][0]
    assert line.strip() == f"ok       run cimle: {run}: cimle run, 160,000 of 160,000 steps"


def test_vgg19_trunk_of_the_distance_pools_by_averaging_and_stops_at_relu5_2(tmp_path):
    """The VGG19 reading of the authors' distance, on a random VGG19 state dict in torchvision's format (the real
    ImageNet file is absent offline): relu1_2 .. relu5_2 at strides 1 .. 16, average pooling, frozen."""
    from torchvision.models.vgg import cfgs, make_layers

    from smis.backbones import VGG19CRNFeatures
    torch.manual_seed(0)
    path = tmp_path / "vgg19.pth"
    torch.save({f"features.{k}": v for k, v in make_layers(cfgs["E"]).state_dict().items()}, path)
    net = VGG19CRNFeatures(path)
    assert not any(isinstance(m, nn.MaxPool2d) for m in net.modules())
    assert sum(isinstance(m, nn.AvgPool2d) for m in net.modules()) == 4
    assert all(isinstance(stage[-1], nn.ReLU) for stage in net.stages)
    maps = net(torch.rand(1, 3, 64, 64) * 2 - 1)
    assert [tuple(m.shape[1:]) for m in maps] == [(64, 64, 64), (128, 32, 32), (256, 16, 16), (512, 8, 8), (512, 4, 4)]
    assert not any(p.requires_grad for p in net.parameters())
    d = IMLEDistance(net)
    assert len(d.features(torch.zeros(1, 3, 64, 64))) == len(CIMLE_WEIGHTS)


def test_pixel_weights_of_the_distance_mask_regions_out():
    """The authors weight each pixel (their rarity mask), area-resized to every map: a difference confined to a
    region of weight 0 costs nothing in the pixel term, and the same difference with weight 1 does."""
    dist = IMLEDistance(TinyFeatures(), weights=(1, 0, 0, 0, 0, 0))
    real = torch.zeros(1, 3, 8, 8)
    fake = real.clone()
    fake[..., :4, :] = 1.0                                              # the top half differs
    top_off = torch.ones(1, 1, 8, 8)
    top_off[..., :4, :] = 0
    assert float(dist(fake, real, top_off)) == 0.0
    torch.testing.assert_close(dist(fake, real, 1 - top_off), torch.tensor([0.5]))    # mean over all pixels
    torch.testing.assert_close(dist(fake, real), torch.tensor([0.5]))


def test_resume_compares_cimles_own_batch(tmp_path):
    """--batch-size unset means cIMLE's batch (GTA-5: 1), not the preset's GAN batch (16): spelling out 1 is no
    change, 16 is."""
    from smis.options import resume_conflicts
    saved = dataclasses.asdict(TrainConfig(variant="cimle", preset="gta5"))
    assert resume_conflicts(saved, TrainConfig(variant="cimle", preset="gta5", batch_size=1)) == []
    assert resume_conflicts(saved, TrainConfig(variant="cimle", preset="gta5", batch_size=16)) == \
        ["batch_size: checkpoint 1, now 16"]


def test_the_gan_builder_refuses_cimle_and_names_its_own(tmp_path):
    from smis.build import build
    with pytest.raises(ValueError, match=r"smis.imle.build_imle\(cfg\)"):
        build(cfg(tmp_path))


def test_tensorboard_gets_scalars_and_the_sample_grid(tmp_path):
    t = trainer(cfg(tmp_path, steps=2, tensorboard=True, image_every=2, ckpt_every=2))
    run = t.fit()
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    acc = EventAccumulator(str(run / "tensorboard"))
    acc.Reload()
    assert "loss/imle_distance" in acc.Tags()["scalars"] and "speed/lr_factor" in acc.Tags()["scalars"]
    assert acc.Tags()["images"] == ["mask|real|fake|prior samples"]


def test_nan_distance_stops_and_keeps_the_last_good_checkpoint(tmp_path):
    t = trainer(cfg(tmp_path, steps=6, ckpt_every=2))
    real = t.parts.distance.between

    def poisoned(*a, **k):
        out = real(*a, **k)
        return out * float("nan") if t.step >= 3 else out

    t.parts.distance.between = poisoned
    with pytest.raises(T.TrainingDiverged, match=r"imle_distance.*step 3.*step_00000002\.pt"):
        t.fit()
    assert [p.name for p in (tmp_path / "run" / "checkpoints").iterdir()] == ["step_00000002.pt"]


def test_a_locked_run_dir_is_refused_and_checkpoints_are_not_trained_over(tmp_path):
    from smis.rundir import RunDirBusy, RunDirLock
    lock = RunDirLock(tmp_path / "run").acquire()
    try:
        with pytest.raises(RunDirBusy):
            trainer(cfg(tmp_path, steps=2)).fit()
    finally:
        lock.release()
    trainer(cfg(tmp_path, steps=2, ckpt_every=2)).fit()
    with pytest.raises(FileExistsError, match="--resume"):
        trainer(cfg(tmp_path, steps=2)).fit()
