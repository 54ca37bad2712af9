"""Training: losses, schedule, checkpoints, exact resume after SIGKILL, DDP, NaN stop, export."""
import csv
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from smis import train as T
from smis.networks import Latents
from smis.utils import project_root

TINY = {"ngf": 8, "nef": 8, "ndf": 8, "spade_hidden": 16, "z_dim": 8, "z_dim_local": 4}


def cfg(tmp_path, **kw):
    base = dict(run_dir=str(tmp_path / "run"), preset_overrides=TINY, data_length=32, steps=4, batch_size=2,
                perceptual="none", tensorboard=False, progress=False, ckpt_every=2, log_every=1, image_every=0)
    base.update(kw)
    return T.TrainConfig(**base)


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
    assert conf["variant"] == "clvae" and conf["resolved"]["total_steps"] == 4 and conf["resolved"]["perceptual"] == "none"
    after = weights(t.nets)
    changed = [k for k in before if before[k].is_floating_point() and not torch.equal(before[k], after[k])]
    assert any(k.startswith("G.") for k in changed) and any(k.startswith("E.") for k in changed) and any(k.startswith("D.") for k in changed)
    with pytest.raises(FileExistsError, match="--resume"):
        T.Trainer(cfg(tmp_path)).fit()


def test_schedule_and_learning_rates(tmp_path):
    t = T.Trainer(cfg(tmp_path, steps=10, decay_start=0.5))
    assert [round(t.lr_factor(s), 3) for s in (0, 4, 5, 6, 9)] == [1.0, 1.0, 1.0, 0.8, 0.2]
    assert t.base_lr == (1e-4, 4e-4)  # the published code's rates
    assert T.Trainer(cfg(tmp_path, paper_text_lr=True)).base_lr == (4e-4, 1e-4)  # the paper's text


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
    real = T.g_hinge_loss

    def poisoned(pred):
        out = real(pred)
        return out * float("nan") if t.step >= 3 else out

    monkeypatch.setattr(T, "g_hinge_loss", poisoned)
    with pytest.raises(T.TrainingDiverged, match=r"g_gan.*step 3.*step_00000002\.pt"):
        t.fit()
    assert [p.name for p in (tmp_path / "run" / "checkpoints").iterdir()] == ["step_00000002.pt"]


def test_export_and_load_model(tmp_path):
    t = T.Trainer(cfg(tmp_path, steps=2))
    run = t.fit()
    out = T.export_model(run / "checkpoints" / "step_00000002.pt", tmp_path / "model.pt", extra={"provenance": {"x": 1}})
    nets = T.load_model(out)
    assert nets.D is None and not nets.training and nets.meta["provenance"] == {"x": 1}
    t.nets.eval()
    lab = torch.stack([t.dataset[i]["label"] for i in range(2)])
    z = Latents.prior(nets.spec, lab, generator=torch.Generator().manual_seed(0))
    a, b = t.nets.G(lab, z), nets.G(lab, z)
    assert (a - b).abs().max() < 0.02  # fp16 storage
    with pytest.raises(ValueError, match="not an smis model"):
        torch.save({"x": 1}, tmp_path / "bad.pt")
        T.load_model(tmp_path / "bad.pt")


def _cli(tmp_path, run, steps, extra=()):
    return [sys.executable, "-m", "smis.train", "--run-dir", str(run), "--steps", str(steps), "--batch-size", "2",
            "--data-length", "16", "--perceptual", "none", "--no-tensorboard", "--no-progress", "--ckpt-every", "2",
            "--threads", "1", "--image-every", "0", "--log-every", "1", "--set"] + [f"{k}={v}" for k, v in TINY.items()] + list(extra)


def _env():
    return {**os.environ, "PYTHONPATH": str(project_root())}


@pytest.mark.slow
def test_sigkill_then_resume_matches_uninterrupted_run(tmp_path):
    full = tmp_path / "full"
    subprocess.run(_cli(tmp_path, full, 8), check=True, env=_env(), cwd=project_root(), capture_output=True)
    cut = tmp_path / "cut"
    p = subprocess.Popen(_cli(tmp_path, cut, 8), env=_env(), cwd=project_root(), stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not (cut / "checkpoints" / "step_00000004.pt").exists():
        assert p.poll() is None and time.time() < deadline, "training ended before the kill"
        time.sleep(0.05)
    p.send_signal(signal.SIGKILL)
    p.wait()
    assert not (cut / "checkpoints" / "step_00000008.pt").exists()
    r = subprocess.run(_cli(tmp_path, cut, 8, ["--resume"]), env=_env(), cwd=project_root(), capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    a = torch.load(full / "checkpoints" / "step_00000008.pt", weights_only=False)
    b = torch.load(cut / "checkpoints" / "step_00000008.pt", weights_only=False)
    for net in ("G", "E", "D"):
        for k in a[net]:
            assert torch.equal(a[net][k], b[net][k]), f"{net}.{k} differs after resume"
    rows = list(csv.DictReader(open(cut / "losses.csv")))
    assert [int(r["step"]) for r in rows] == list(range(1, 9))  # no duplicated rows after the kill


@pytest.mark.slow
def test_ddp_two_gloo_processes(tmp_path):
    """Two CPU processes (gloo): identical parameters on both ranks, close to one process with the same batch."""
    set_ = ["--set"] + [f"{k}={v}" for k, v in TINY.items()] + ['norm_G="instance"']
    ddp = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29533", "-m", "smis.train",
           "--run-dir", str(tmp_path / "ddp"), "--steps", "3", "--batch-size", "4", "--data-length", "16",
           "--perceptual", "none", "--no-tensorboard", "--no-progress", "--ckpt-every", "3", "--threads", "1",
           "--image-every", "0"] + set_
    r = subprocess.run(ddp, env=_env(), cwd=project_root(), capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    check = json.loads((tmp_path / "ddp" / "ddp_check.json").read_text())
    assert check["world_size"] == 2 and check["fingerprints"][0] == check["fingerprints"][1]
    single = [a.replace(str(tmp_path / "ddp"), str(tmp_path / "one")) for a in ddp[ddp.index("smis.train") + 1:]]
    r = subprocess.run([sys.executable, "-m", "smis.train"] + single, env=_env(), cwd=project_root(), capture_output=True,
                       text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    a = torch.load(tmp_path / "ddp" / "checkpoints" / "step_00000003.pt", weights_only=False)
    b = torch.load(tmp_path / "one" / "checkpoints" / "step_00000003.pt", weights_only=False)
    init = T.Trainer(cfg(tmp_path, preset_overrides={**TINY, "norm_G": "instance"})).nets
    for net in ("G", "E", "D"):
        keys = [k for k, v in a[net].items() if v.is_floating_point() and not k.endswith(("weight_u", "weight_v"))]
        start = getattr(init, net).state_dict()
        da = torch.cat([(a[net][k] - start[k]).flatten() for k in keys])  # what 3 DDP steps changed
        db = torch.cat([(b[net][k] - start[k]).flatten() for k in keys])  # what 3 single-process steps changed
        assert db.norm() > 0
        assert (da - db).norm() / db.norm() < 0.05, net  # same updates up to float summation order
