"""smis.train: TrainStep (one iteration: schedule, latent noise, the variants, NaN stop) and Trainer (fit, resume
messages, DDP, signals, the CLI's errors)."""
import csv
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from conftest import TINY, cfg, cli, cli_env, run_files, trained
from smis import objective
from smis import train as T
from smis.data import DatasetError
from smis.networks import build_networks
from smis.utils import project_root


def weights(nets):
    return {f"{n}.{k}": v.clone() for n in ("G", "E", "D") if getattr(nets, n) is not None
            for k, v in getattr(nets, n).state_dict().items()}


def test_fit_writes_checkpoints_losses_and_config(tmp_path):
    t = T.Trainer(cfg(tmp_path, keep_last=1))
    before = weights(t.nets)
    run = t.fit()
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step_00000004.pt"]  # keep_last=1
    rows = list(csv.DictReader(open(run / "losses.csv")))
    assert [int(r["step"]) for r in rows] == [1, 2, 3, 4]
    assert all(torch.isfinite(torch.tensor(float(r["g_total"]))) for r in rows)
    conf = json.loads((run / "config.json").read_text())
    assert conf["variant"] == "clvae" and conf["resolved"]["total_steps"] == 4
    assert conf["resolved"]["perceptual"] == "none"
    after = weights(t.nets)
    changed = [k for k in before if before[k].is_floating_point() and not torch.equal(before[k], after[k])]
    assert all(any(k.startswith(f"{net}.") for k in changed) for net in "GED")
    with pytest.raises(FileExistsError, match="--resume"):
        T.Trainer(cfg(tmp_path)).fit()


def test_schedule_and_learning_rates(tmp_path):
    t = T.Trainer(cfg(tmp_path, steps=10, decay_start=0.5))
    assert [round(t.train_step.lr_factor(s), 3) for s in (0, 4, 5, 6, 9)] == [1.0, 1.0, 1.0, 0.8, 0.2]
    assert t.parts.base_lr == (1e-4, 4e-4)  # the published code's rates
    assert T.Trainer(cfg(tmp_path, paper_text_lr=True)).parts.base_lr == (4e-4, 1e-4)  # the paper's text
    assert [g["lr"] for g in t.parts.opt_g.param_groups] == [1e-4] and t.parts.opt_d.param_groups[0]["lr"] == 4e-4


def test_schedule_in_epochs_without_steps(tmp_path):
    """No --steps: the preset's epochs_const epochs at the base rate, then epochs_decay decaying (SPADE's
    epoch schedule, counted in steps of len(data) / batch per epoch)."""
    t = T.Trainer(cfg(tmp_path, steps=None, data_length=32, batch_size=2,
                      preset_overrides={**TINY, "epochs_const": 2, "epochs_decay": 4}))
    per_epoch = 16
    assert t.total_steps == 6 * per_epoch and t.train_step.decay_start == 2 * per_epoch
    f = t.train_step.lr_factor
    assert [f(s * per_epoch) for s in (0, 1, 2, 3, 4, 5, 6)] == [1.0, 1.0, 1.0, 0.75, 0.5, 0.25, 0.0]


def test_cudnn_autotuning_follows_the_config_on_cuda_only(monkeypatch):
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", False)
    T.configure_backends(torch.device("cpu"), T.TrainConfig())
    assert torch.backends.cudnn.benchmark is False                      # the CPU never touches cuDNN state
    T.configure_backends(torch.device("cuda"), T.TrainConfig())
    assert torch.backends.cudnn.benchmark is True                       # default on CUDA: autotune (fixed shapes)
    T.configure_backends(torch.device("cuda"), T.parse_args(["--no-cudnn-benchmark"])[0])
    assert torch.backends.cudnn.benchmark is False


@pytest.mark.parametrize("variant", ["gaugan", "gaugan_vae", "no_classwise"])
def test_variants_train(tmp_path, variant):
    t = T.Trainer(cfg(tmp_path, variant=variant, steps=1))
    img = torch.stack([t.dataset[i]["image"] for i in range(2)])
    lab = torch.stack([t.dataset[i]["label"] for i in range(2)])
    losses = t.train_step(img, lab)
    assert all(torch.isfinite(torch.tensor(v)) for v in losses.values())
    assert (losses["kl"] == 0) == (variant == "gaugan")


def test_step_sampler_shards_like_one_process():
    one = list(T.StepSampler(10, 4, seed=3, start=0, total=5))
    two = [list(T.StepSampler(10, 4, seed=3, start=0, total=5, rank=r, world=2)) for r in range(2)]
    merged = [x for s in range(5) for r in range(2) for x in two[r][2 * s: 2 * s + 2]]
    assert merged == one
    assert sorted(i for i, _ in one[:10]) == list(range(10))  # each epoch is a permutation
    assert list(T.StepSampler(10, 4, seed=3, start=2, total=5)) == one[8:]  # resume mid-run
    with pytest.raises(ValueError, match="divisible"):
        T.StepSampler(10, 3, 0, 0, 1, world=2)


def test_nan_stops_and_keeps_last_good_checkpoint(tmp_path, monkeypatch):
    t = T.Trainer(cfg(tmp_path, steps=6, ckpt_every=2))
    real = objective.g_hinge_loss

    def poisoned(pred):
        out = real(pred)
        return out * float("nan") if t.step >= 3 else out

    monkeypatch.setattr(objective, "g_hinge_loss", poisoned)
    with pytest.raises(T.TrainingDiverged, match=r"g_gan.*step 3.*step_00000002\.pt"):
        t.fit()
    assert [p.name for p in (tmp_path / "run" / "checkpoints").iterdir()] == ["step_00000002.pt"]


def test_latent_noise_has_the_codes_shapes_and_shards_like_one_process():
    spec = build_networks("clvae", "synthscenes").spec
    one = T.latent_noise(spec, 4, step=3, seed=1, global_batch=4, rank=0, device="cpu")
    assert one.z.shape == (4, spec.z_dim) and one.zc.shape == (4, len(spec.layers), spec.code_classes, spec.z_dim_local)
    halves = [T.latent_noise(spec, 2, step=3, seed=1, global_batch=4, rank=r, device="cpu") for r in (0, 1)]
    assert torch.equal(torch.cat([h.z for h in halves]), one.z)
    assert torch.equal(torch.cat([h.zc for h in halves]), one.zc)
    g = torch.Generator().manual_seed(1 * 7_919 + 3)                                         # z first, then zc
    assert torch.equal(one.z, torch.randn(4, spec.z_dim, generator=g))
    assert not torch.equal(one.z, T.latent_noise(spec, 4, 4, 1, 4, 0, "cpu").z)               # another step


def _grads(tmp_path, name, ddp: bool, mutate: bool = False) -> dict:
    script = str(project_root() / "tests" / "ddp_grads.py")
    launch = ([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29533"] if ddp
              else [sys.executable])
    out = tmp_path / f"{name}.pt"
    r = subprocess.run(launch + [script, str(out), str(tmp_path / name)] + (["--mutate-kl"] if mutate else []),
                       env={**cli_env(), "OMP_NUM_THREADS": "1"}, cwd=project_root(), capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    return torch.load(out, weights_only=True)


def _rel_err(a: dict, b: dict, net: str) -> float:
    keys = sorted(k for k in b if k.startswith(net + "."))
    ga, gb = (torch.cat([d[k].flatten().double() for k in keys]) for d in (a, b))
    return float((ga - gb).norm() / gb.norm())


# Float noise floor of these gradients, measured 2026-11-30 on a 2-core AMD EPYC (tiny preset, global
# batch 4): one process with 1 vs 2 torch threads differs by 1.5e-4 (G), 1.1e-4 (E), 1e-6 (D) relative,
# and 2 gloo ranks vs 1 process by the same amounts (another batch split picks other CPU kernels; the
# hinge and ReLU thresholds amplify their 1e-7 differences). A KL scaled by the world size twice moves
# E's gradient by 0.13. The tolerance sits ~7x above the floor and ~100x below that bug.
DDP_GRAD_TOL = 1e-3


@pytest.mark.slow
def test_ddp_averages_first_step_gradients_like_one_process(tmp_path):
    """DDP's guarantee, checked before any optimizer step can magnify noise: the gradients two ranks
    average equal those of one process on the same global batch (same samples, same latent noise)."""
    one = _grads(tmp_path, "one", ddp=False)
    two = _grads(tmp_path, "ddp", ddp=True)
    assert set(one) == set(two)
    check = json.loads((tmp_path / "ddp" / "ddp_check.json").read_text())
    assert check["world_size"] == 2 and check["fingerprints"][0] == check["fingerprints"][1]   # ranks in sync
    errs = {net: _rel_err(two, one, net) for net in ("G", "E", "D")}
    assert all(e < DDP_GRAD_TOL for e in errs.values()), errs
    # mutation check: the same comparison fails when the KL is scaled by the world size twice
    bad = _grads(tmp_path, "ddp_bad", ddp=True, mutate=True)
    assert _rel_err(bad, one, "E") > 20 * DDP_GRAD_TOL, "the test would not catch a KL scaled by the world size"


def test_resume_may_change_steps_and_logging_and_records_it(tmp_path):
    trained(tmp_path, steps=2)
    t = T.Trainer(cfg(tmp_path, steps=4, log_every=2, keep_last=5, batch_size=2, kl_weight=None))
    t.fit(resume=True)
    assert t.step == 4
    conf = json.loads((tmp_path / "run" / "config.json").read_text())
    assert conf["steps"] == 4 and conf["resumes"][0]["step"] == 2
    assert conf["resumes"][0]["changed"] == {"steps": [2, 4], "log_every": [1, 2], "keep_last": [3, 5]}


def test_resume_says_what_it_resumed_and_warns_when_steps_retime_the_decay(tmp_path, capsys):
    trained(tmp_path, steps=4)
    capsys.readouterr()
    T.Trainer(cfg(tmp_path, steps=4)).fit(resume=True)        # same schedule: no warning
    err = capsys.readouterr().err
    assert f"resumed from {tmp_path / 'run' / 'checkpoints' / 'step_00000004.pt'} (step 4 of 4)" in err
    assert "re-timed" not in err
    t = T.Trainer(cfg(tmp_path, steps=6))
    t.fit(resume=True)
    err = capsys.readouterr().err
    want = (f"the schedule changed from 4 steps (decay from step 2) to 6 (decay from step 3): the learning-rate decay "
            f"is re-timed, its factor at step 4 is {t.train_step.lr_factor(4):.3g} (it was 0 on the old schedule)")
    assert "resumed from" in err and "(step 4 of 6)" in err and want in err
    assert t.train_step.lr_factor(4) == pytest.approx(2 / 3)


def test_errors_with_a_message_print_it_alone(tmp_path, capsys, monkeypatch):
    """A bad dataset (an empty classes.json) ends the CLI with its message and exit 2, no traceback, unless
    SMIS_TRACEBACK=1 asks for it."""
    root = tmp_path / "ds"
    (root / "train" / "images").mkdir(parents=True)
    (root / "classes.json").write_text("{}")
    argv = cli(tmp_path, tmp_path / "run", 2, ["--dataset", "folder", "--data-root", str(root)])[3:]
    assert T.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"[smis.train] ERROR: {root / 'classes.json'}: 'names' is") and "Fix:" in err
    assert "SMIS_TRACEBACK=1" in err and "Traceback" not in err
    monkeypatch.setenv("SMIS_TRACEBACK", "1")
    with pytest.raises(DatasetError, match="classes.json"):
        T.main(argv)


def _unprivileged() -> list[str]:
    """A command prefix under which permission bits hold: none for a normal user; for root, setpriv dropping
    every capability (root then only has its owner rights, so a folder of mode 0555 is read-only to it)."""
    if os.geteuid() != 0:
        return []
    import shutil
    if shutil.which("setpriv") is None:
        pytest.skip("running as root without setpriv: cannot drop the capabilities that ignore permission bits")
    return ["setpriv", "--inh-caps=-all", "--bounding-set=-all", "--"]


def test_read_only_run_dir_is_a_clear_error(tmp_path):
    """A --run-dir (new, or an existing run to --resume) in a folder the user may not write: one line naming the
    folder and the fix, exit 2, no traceback; the existing run is left as it was."""
    trained(tmp_path, steps=2)
    ro = tmp_path / "ro"
    ro.mkdir()
    os.rename(tmp_path / "run", ro / "run")
    before = run_files(ro / "run")
    assert "checkpoints/step_00000002.pt" in before                 # the loops below see the run's files
    for p in [ro, *ro.rglob("*")]:
        p.chmod(0o555 if p.is_dir() else 0o444)
    try:
        for run, extra in ((ro / "new", []), (ro / "run", ["--resume"])):
            r = subprocess.run(_unprivileged() + cli(tmp_path, run, 4, extra), env=cli_env(), cwd=project_root(),
                               capture_output=True, text=True, timeout=300)
            assert r.returncode == 2, r.stderr[-2000:]
            assert r.stderr.startswith(f"[smis.train] ERROR: cannot write {run}") and "Fix: choose a --run-dir" in \
                r.stderr and "Traceback" not in r.stderr, r.stderr[-2000:]
        assert run_files(ro / "run") == before and not (ro / "new").exists()
    finally:
        for p in [ro, *ro.rglob("*")]:
            p.chmod(0o755 if p.is_dir() else 0o644)


def test_paths_with_tilde_spaces_and_non_ascii(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home dir"))
    t = T.Trainer(cfg(tmp_path, run_dir="~/rüns/ein lauf ☃", steps=2))
    assert t.run_dir == tmp_path / "home dir" / "rüns" / "ein lauf ☃"
    t.fit()
    assert (t.run_dir / "checkpoints" / "step_00000002.pt").is_file() and not (tmp_path / "~").exists()
    T.Trainer(cfg(tmp_path, run_dir="~/rüns/ein lauf ☃", steps=4)).fit(resume=True)
    assert json.loads((t.run_dir / "config.json").read_text())["resumes"][0]["step"] == 2


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_sigterm_and_sigint_stop_cleanly_and_resume(tmp_path, sig):
    """SIGTERM / SIGINT: a checkpoint of the step reached, the lock released, no temporary, one line
    "stopped at step N; rerun with --resume" and exit 128 + signal, no traceback; --resume continues from there.
    Then two signals at once: the step in progress is abandoned, still cleanly."""
    run = tmp_path / "run"
    p = subprocess.Popen(cli(tmp_path, run, 400), env=cli_env(), cwd=project_root(), stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while not (run / "checkpoints" / "step_00000002.pt").exists():
        assert p.poll() is None and time.time() < deadline, "training ended before the signal"
        time.sleep(0.05)
    p.send_signal(sig)
    _, err = p.communicate(timeout=300)
    assert p.returncode == 128 + sig, err
    n = int(err.split("stopped at step ")[1].split(";")[0])
    assert f"{sig.name}: stopped at step {n}; rerun with --resume to continue from " \
           f"{run / 'checkpoints' / f'step_{n:08d}.pt'}" in err and "Traceback" not in err, err
    assert (run / "checkpoints" / f"step_{n:08d}.pt").is_file()
    assert not (run / ".lock").exists() and not list(run.rglob("*.tmp"))
    r = subprocess.run(cli(tmp_path, run, n + 2, ["--resume"]), env=cli_env(), cwd=project_root(), capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0 and f"resumed from {run / 'checkpoints' / f'step_{n:08d}.pt'} (step {n} of {n + 2})" \
        in r.stderr, r.stderr
    rows = list(csv.DictReader(open(run / "losses.csv")))
    assert [int(r["step"]) for r in rows] == list(range(1, n + 3))
    # two signals in a row: the second abandons the step at once
    p = subprocess.Popen(cli(tmp_path, run, 400, ["--resume"]), env=cli_env(), cwd=project_root(),
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    while max(int(c.stem[5:]) for c in (run / "checkpoints").glob("step_*.pt")) <= n + 2:
        assert p.poll() is None and time.time() < deadline, "training ended before the signal"
        time.sleep(0.05)
    p.send_signal(sig)
    p.send_signal(sig)
    _, err = p.communicate(timeout=300)
    assert p.returncode == 128 + sig and "rerun with --resume" in err and "Traceback" not in err, err
    assert not (run / ".lock").exists() and not list(run.rglob("*.tmp"))


def test_train_variants_trains_each_in_its_own_folder_and_reuses_finished_runs(tmp_path):
    base = T.TrainConfig(run_dir=str(tmp_path), preset_overrides=TINY, perceptual="none", data_length=8, steps=1,
                         batch_size=2, log_every=1, image_every=0, ckpt_every=1, keep_last=1, tensorboard=False,
                         progress=False, device="cpu")
    said = []
    runs = T.train_variants(["clvae", "gaugan"], tmp_path / "runs", base, log=said.append)
    assert list(runs) == ["clvae", "gaugan"] and [s.split(":")[0] for s in said] == ["clvae", "gaugan"]
    for v, (run, seconds) in runs.items():
        assert run == f"{tmp_path / 'runs'}/{v}_s1_b2" and seconds > 0
        assert json.loads((tmp_path / "runs" / f"{v}_s1_b2" / "config.json").read_text())["variant"] == v
        assert (tmp_path / "runs" / f"{v}_s1_b2" / "checkpoints" / "step_00000001.pt").is_file()
    before = (tmp_path / "runs" / "clvae_s1_b2" / "checkpoints" / "step_00000001.pt").stat().st_mtime_ns
    T.train_variants(["clvae"], tmp_path / "runs", base, log=said.append)           # finished: reused, not retrained
    assert (tmp_path / "runs" / "clvae_s1_b2" / "checkpoints" / "step_00000001.pt").stat().st_mtime_ns == before


def test_g_step_runs_d_on_the_real_images_apart_with_the_fake_passs_weights(tmp_path):
    """The G step runs D(real) without gradients after D(fake), spectral norm frozen (smis.networks.ops.
    frozen_spectral_norm): the losses and G/E gradients of SPADE's one D call on cat([fake, real]), and D's
    power-iteration state after the step where that call and the D step leave it."""
    t = T.Trainer(cfg(tmp_path))
    step, parts = t.train_step, t.train_step.parts
    nets = parts.nets
    g = torch.Generator().manual_seed(0)
    label = torch.randint(0, parts.preset.num_classes, (2, *parts.preset.image_size), generator=g)
    image = torch.rand(2, 3, *parts.preset.image_size, generator=g) * 2 - 1
    state = {k: {n: v.clone() for n, v in m.state_dict().items()} for k, m in (("g", parts.gstep), ("d", nets.D))}

    # SPADE's step, written out: one D call on the concatenated batch, then the D step's call
    eps = T.latent_noise(nets.spec, 2, 0, step.cfg.seed, 2, 0, parts.device)
    nets.D.requires_grad_(False)
    fake, kl, _ = parts.gstep(label, image, eps)
    pred_fake, pred_real = objective.split_batch(nets.D(torch.cat([label, label]), torch.cat([fake, image])), 2)
    ref = objective.generator_losses(pred_fake, pred_real, fake, image, kl, parts.weights, parts.perceptual)
    ref["g_total"].backward()
    ref_grads = [p.grad.clone() for p in parts.gstep.parameters() if p.grad is not None]
    nets.D(torch.cat([label, label]), torch.cat([fake.detach(), image]))
    ref_u = [b.clone() for n, b in nets.D.named_buffers() if n.endswith("weight_u")]
    nets.D.requires_grad_(True)

    parts.gstep.load_state_dict(state["g"])
    nets.D.load_state_dict(state["d"])
    losses = step(image, label)
    for k in ("g_gan", "g_fm", "kl", "g_total"):
        assert losses[k] == pytest.approx(float(ref[k].detach()), rel=1e-5, abs=1e-7), k
    grads = [p.grad for p in parts.gstep.parameters() if p.grad is not None]
    assert len(grads) == len(ref_grads) > 10
    assert all(torch.allclose(a, b, rtol=1e-4, atol=1e-6 * b.abs().max().item()) for a, b in zip(grads, ref_grads))
    u = [b for n, b in nets.D.named_buffers() if n.endswith("weight_u")]
    assert len(u) == len(ref_u) > 0 and all(torch.allclose(a, b, atol=1e-6) for a, b in zip(u, ref_u))


def test_the_cpu_allocator_keeps_freed_memory_when_the_config_says_so(monkeypatch):
    calls = []
    monkeypatch.setattr(T, "keep_freed_memory", lambda: calls.append(1) or True)
    T.configure_backends(torch.device("cpu"), T.parse_args(["--no-keep-freed-memory"])[0])
    assert calls == []
    T.configure_backends(torch.device("cpu"), T.TrainConfig())
    assert calls == [1]


def test_training_reads_the_real_images_perceptual_maps_back_from_the_cache(tmp_path):
    """Three epochs of 4 SynthScenes images (flips on), EfficientNet-Lite0, channels_last: with the perceptual cache
    (the CPU default) every logged loss is that of the run without it, bit for bit. Where the extractor's maps
    are batch-invariant on this CPU the cache serves the repeats (from the second epoch on); elsewhere it is off."""
    runs = {}
    for name, mb in (("off", 0), ("on", 1024)):
        t = T.Trainer(cfg(tmp_path / name, perceptual="effnet", data_length=4, steps=6, perceptual_cache_mb=mb,
                          channels_last=True))
        cache = t.train_step.parts.perceptual.real_cache
        assert (cache is None) == (mb == 0)
        assert cache is None or cache.expected_images == 4 * 2          # the data, flipped and not
        run = t.fit()
        runs[name] = list(csv.DictReader(open(run / "losses.csv")))
    assert [r["step"] for r in runs["on"]] == [r["step"] for r in runs["off"]] == [str(s) for s in range(1, 7)]
    for off, on in zip(runs["off"], runs["on"]):
        assert {k: v for k, v in on.items() if k != "images_per_s"} == {k: v for k, v in off.items()
                                                                          if k != "images_per_s"}
    if cache.exact:                                                     # 4 images x 2 flips at most
        assert cache.hits + cache.misses == 6 * 2 and cache.misses <= 8 and cache.hits >= 4
    else:
        assert cache.hits == 0 and cache.rows == {}
    with pytest.raises(ValueError, match="perceptual_cache_mb"):
        cfg(tmp_path, perceptual_cache_mb=-1)


def test_resuming_keeps_the_runs_adam_implementation(tmp_path):
    """torch's load_state_dict restores the saved foreach / fused flags; smis.build.load_optimizer keeps the run's
    own, so `--fused-adam` changed on resume (a RESUME_MAY_CHANGE option) takes effect."""
    from smis.build import build, load_optimizer, make_adam
    for fused in (False, True):
        parts = build(cfg(tmp_path, fused_adam=fused))
        saved = make_adam(list(parts.gstep.parameters()), 1e-4, (0, 0.9), fused=not fused)
        params = list(parts.gstep.parameters())
        for q in params:
            q.grad = torch.ones_like(q)
        saved.step()                                                    # a state to load
        load_optimizer(parts.opt_g, saved.state_dict())
        group = parts.opt_g.param_groups[0]
        assert bool(group["fused"]) == fused and len(parts.opt_g.state) == len(params)
        plain = make_adam(params, 1e-4, (0, 0.9), fused=fused)
        plain.load_state_dict(saved.state_dict())                       # torch alone takes the file's flags
        assert bool(plain.param_groups[0]["fused"]) == (not fused)


@pytest.mark.parametrize("precision", ["bf16", "bf16-g", "bf16-g-coarse"])
def test_bf16_g_runs_e_and_d_in_float32_and_g_in_bf16(tmp_path, precision):
    """--precision bf16-g (issue 26): inside the step's bf16 autocast region G's convolutions run in bf16 and E's and
    D's in float32 (both D calls of the G step and the D step's); plain bf16 runs all three in bf16. bf16-g-coarse
    also runs G's full-resolution block and output convolution in float32, its coarse blocks still in bf16. The
    wrapper is around D's calls, not D: a checkpoint has the fp32 run's keys and loads into an fp32 trainer."""
    t = T.Trainer(cfg(tmp_path, precision=precision, steps=2))
    nets = t.nets
    seen = {}

    def hook(name):
        return lambda mod, args, out: seen.setdefault(name, set()).add(out.dtype)
    convs = {"G": nets.G.up_1.conv_0, "G_up_3": nets.G.up_3.conv_0, "G_img": nets.G.conv_img,
             "E": next(m for m in nets.E.modules() if isinstance(m, torch.nn.Conv2d)),
             "D": next(m for m in nets.D.modules() if isinstance(m, torch.nn.Conv2d))}
    for name, m in convs.items():
        m.register_forward_hook(hook(name))
    t.fit()
    low, high = {torch.bfloat16}, {torch.float32}
    tail = high if precision == "bf16-g-coarse" else low
    assert seen == {"G": low, "G_up_3": tail, "G_img": tail, "E": low if precision == "bf16" else high,
                    "D": low if precision == "bf16" else high}
    saved = torch.load(t.checkpoints.latest(), map_location="cpu", weights_only=True)
    fp32 = T.Trainer(cfg(tmp_path / "fp32")).nets
    assert not fp32.G.float32_tail                                      # an attribute of the run, not of the file
    for net in ("G", "E", "D"):
        assert list(saved[net]) == list(getattr(fp32, net).state_dict()), net          # the same keys, in order
        getattr(fp32, net).load_state_dict(saved[net])                                  # strict
    assert all(torch.equal(a, b) for a, b in zip(fp32.D.state_dict().values(), nets.D.state_dict().values()))
