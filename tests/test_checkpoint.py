"""smis.checkpoint: Checkpointer (save, keep_last, the newest intact), RNG states, exact resume after SIGKILL,
export_model / load_model, and refusing hostile or broken files."""
import csv
import os
import random
import signal
import subprocess
import time

import numpy as np
import pytest
import torch

from conftest import cfg, cli, cli_env, trained
from smis import train as T
from smis.checkpoint import (CKPT_FORMAT, Checkpointer, checkpoint_step, export_model, list_checkpoints, load_model,
                             rng_state, set_rng_state)
from smis.networks import Latents
from smis.utils import project_root


def test_checkpointer_keeps_the_newest_and_skips_a_cut_one(tmp_path, capsys):
    ck = Checkpointer(tmp_path, keep_last=2)
    assert ck.list() == [] and ck.latest() is None and ck.load_latest_intact() == (None, None)
    for step in (1, 2, 3):
        ck.save(step, {"format": CKPT_FORMAT, "step": step, "w": torch.full((3,), float(step))})
    assert [p.name for p in ck.list()] == ["step_00000002.pt", "step_00000003.pt"]     # keep_last=2, oldest first
    (ck.dir / "step_00000010.pt").write_bytes(b"")                  # sorted by step, not by name, whatever the width
    (ck.dir / "step_1.pt").write_bytes(b"")
    (ck.dir / "step_last.pt").write_bytes(b"")                      # not step_<digits>.pt: not a checkpoint
    assert [checkpoint_step(p) for p in list_checkpoints(tmp_path)] == [1, 2, 3, 10] == \
        [checkpoint_step(p) for p in ck.list()]
    for name in ("step_00000010.pt", "step_1.pt", "step_last.pt"):
        (ck.dir / name).unlink()
    with pytest.raises(FileNotFoundError, match="holds no checkpoints.*Fix"):
        list_checkpoints(tmp_path / "empty", missing_ok=False)
    assert torch.equal(ck.load(ck.latest())["w"], torch.full((3,), 3.0))
    ck.latest().write_bytes(ck.latest().read_bytes()[:50])                              # cut short
    path, state = ck.load_latest_intact()
    assert path.name == "step_00000002.pt" and state["step"] == 2
    assert "skipping" in capsys.readouterr().err
    torch.save({"format": "other"}, tmp_path / "checkpoints" / "step_00000009.pt")
    with pytest.raises(T.CheckpointError, match=r"step_00000009\.pt is not an smis training checkpoint"):
        ck.load_latest_intact()


def test_rng_state_round_trip():
    state = rng_state()
    a = (torch.rand(2), np.random.rand(2), random.random())
    set_rng_state(state)
    b = (torch.rand(2), np.random.rand(2), random.random())
    assert torch.equal(a[0], b[0]) and np.array_equal(a[1], b[1]) and a[2] == b[2]


def test_export_and_load_model(tmp_path):
    t = T.Trainer(cfg(tmp_path, steps=2))
    run = t.fit()
    out = export_model(run / "checkpoints" / "step_00000002.pt", tmp_path / "model.pt",
                         extra={"provenance": {"x": 1}})
    nets = load_model(out)
    assert nets.D is None and not nets.training and nets.meta["provenance"] == {"x": 1}
    t.nets.eval()
    lab = torch.stack([t.dataset[i]["label"] for i in range(2)])
    z = Latents.prior(nets.spec, lab, generator=torch.Generator().manual_seed(0))
    a, b = t.nets.G(lab, z), nets.G(lab, z)
    assert (a - b).abs().max() < 0.02  # fp16 storage
    with pytest.raises(ValueError, match="not an smis model"):
        torch.save({"x": 1}, tmp_path / "bad.pt")
        load_model(tmp_path / "bad.pt")


@pytest.mark.slow
def test_sigkill_then_resume_matches_uninterrupted_run(tmp_path):
    full = tmp_path / "full"
    subprocess.run(cli(tmp_path, full, 8), check=True, env=cli_env(), cwd=project_root(), capture_output=True)
    cut = tmp_path / "cut"
    p = subprocess.Popen(cli(tmp_path, cut, 8), env=cli_env(), cwd=project_root(), stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not (cut / "checkpoints" / "step_00000004.pt").exists():
        assert p.poll() is None and time.time() < deadline, "training ended before the kill"
        time.sleep(0.05)
    p.send_signal(signal.SIGKILL)
    p.wait()
    assert not (cut / "checkpoints" / "step_00000008.pt").exists()
    r = subprocess.run(cli(tmp_path, cut, 8, ["--resume"]), env=cli_env(), cwd=project_root(), capture_output=True,
                       text=True)
    assert r.returncode == 0, r.stderr
    a = torch.load(full / "checkpoints" / "step_00000008.pt", weights_only=True)
    b = torch.load(cut / "checkpoints" / "step_00000008.pt", weights_only=True)
    for net in ("G", "E", "D"):
        for k in a[net]:
            assert torch.equal(a[net][k], b[net][k]), f"{net}.{k} differs after resume"
    rows = list(csv.DictReader(open(cut / "losses.csv")))
    assert [int(r["step"]) for r in rows] == list(range(1, 9))  # no duplicated rows after the kill


def test_truncated_latest_checkpoint_falls_back_to_the_newest_intact_one(tmp_path, capsys):
    trained(tmp_path, steps=4, ckpt_every=2)
    ckpts = tmp_path / "run" / "checkpoints"
    want = torch.load(ckpts / "step_00000004.pt", weights_only=True)
    data = (ckpts / "step_00000004.pt").read_bytes()
    (ckpts / "step_00000004.pt").write_bytes(data[: len(data) // 3])   # a copy cut short / a full disk
    t = T.Trainer(cfg(tmp_path, steps=4, ckpt_every=2))
    t.fit(resume=True)
    err = capsys.readouterr().err
    assert "skipping" in err and "step_00000004.pt" in err and "truncated or corrupt" in err
    assert "resumed from step_00000002.pt (step 2)" in err
    got = torch.load(ckpts / "step_00000004.pt", weights_only=True)   # retrained: the same weights, bit for bit
    for net in ("G", "E", "D"):
        for k in want[net]:
            assert torch.equal(want[net][k], got[net][k]), f"{net}.{k}"


def test_resume_with_only_corrupt_checkpoints_says_so(tmp_path):
    trained(tmp_path, steps=2)
    (tmp_path / "run" / "checkpoints" / "step_00000002.pt").write_bytes(b"\0" * 100)
    with pytest.raises(T.CheckpointError, match=r"no checkpoint is readable \(step_00000002\.pt"):
        T.Trainer(cfg(tmp_path, steps=2)).fit(resume=True)


def test_load_model_errors_name_the_file_and_the_fix(tmp_path):
    trained(tmp_path, steps=2)
    ck = tmp_path / "run" / "checkpoints" / "step_00000002.pt"
    model = export_model(ck, tmp_path / "m.pt")
    data = model.read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    (tmp_path / "random.pt").write_bytes(random.Random(0).randbytes(4096))   # deterministic
    with pytest.raises(T.CheckpointError, match=r"cut\.pt \(\d+ bytes\) is truncated or corrupt.*Fix:"):
        load_model(tmp_path / "cut.pt")
    with pytest.raises(T.CheckpointError, match=r"random\.pt .*not a readable torch checkpoint.*Fix:"):
        load_model(tmp_path / "random.pt")
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        load_model(tmp_path / "missing.pt")
    m = torch.load(model, weights_only=True)
    m["preset"]["ngf"] = 16                                     # weights of another size than their preset
    torch.save(m, tmp_path / "other.pt")
    want = r"(?s)other\.pt: G of a clvae synthscenes model.*shape-mismatched keys\). Fix: .*shape mismatch"
    with pytest.raises(T.CheckpointError, match=want):
        load_model(tmp_path / "other.pt")


def test_legacy_v1_checkpoint_with_numpy_rng_still_resumes(tmp_path):
    trained(tmp_path, steps=2)
    path = tmp_path / "run" / "checkpoints" / "step_00000002.pt"
    ck = torch.load(path, weights_only=True)
    np.random.seed(7)
    want = np.random.get_state()
    ck.update(format="smis-train-v1", rng={**ck["rng"], "numpy": want})
    torch.save(ck, path)
    np.random.seed(0)
    T.Trainer(cfg(tmp_path, steps=2)).load_checkpoint(path)
    assert np.array_equal(np.random.get_state()[1], want[1])


class _Evil:
    """Pickles to a call of os.system: what a hostile checkpoint does."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("entry", ["load_model", "export_model", "load_checkpoint", "resume"])
def test_malicious_pickle_is_refused_without_running(tmp_path, entry):
    marker = tmp_path / "pwned"
    evil = {"format": CKPT_FORMAT, "variant": "clvae", "step": 1, "payload": _Evil(marker)}
    path = tmp_path / "run" / "checkpoints" / "step_00000009.pt"
    path.parent.mkdir(parents=True)
    torch.save(evil, path)
    with pytest.raises(T.CheckpointError, match=r"step_00000009\.pt was refused: its pickle calls posix\.system"):
        if entry == "load_model":
            load_model(path)
        elif entry == "export_model":
            export_model(path, tmp_path / "out.pt")
        elif entry == "load_checkpoint":
            T.Trainer(cfg(tmp_path)).load_checkpoint(path)
        else:
            T.Trainer(cfg(tmp_path)).fit(resume=True)   # never skipped like a corrupt file: refused
    assert not marker.exists(), "the pickle ran code"
    assert not (tmp_path / "out.pt").exists()


def test_checkpoints_and_exports_hold_plain_data_only(tmp_path):
    """New files need no allow-listed globals at all (the legacy list only serves older files)."""
    trained(tmp_path, steps=2)
    ck = tmp_path / "run" / "checkpoints" / "step_00000002.pt"
    out = export_model(ck, tmp_path / "m.pt", extra={"provenance": {"torch": torch.__version__, "shape": (1, 2)}})
    for path in (ck, out):
        assert torch.serialization.get_unsafe_globals_in_checkpoint(path) == [], path
        torch.load(path, weights_only=True)   # bare, no safe_globals
    assert load_model(out).meta["provenance"] == {"torch": str(torch.__version__), "shape": [1, 2]}
