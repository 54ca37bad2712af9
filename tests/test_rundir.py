"""smis.rundir: the run folder's lock (one run per folder, stale locks taken over), stale temporaries deleted under
it, fresh starts deleting only a run's own files."""
import ast
import os
import subprocess
import sys

import pytest

from conftest import cfg, cli, cli_env, run_files, trained
from smis import train as T
from smis.rundir import RunDirBusy, RunDirLock
from smis.utils import project_root


def test_second_run_on_a_locked_run_dir_is_refused(tmp_path):
    run = tmp_path / "run"
    with RunDirLock(run):                                     # another run holds the folder
        with pytest.raises(RunDirBusy, match=rf"in use by another run \(pid {os.getpid()} on "):
            T.Trainer(cfg(tmp_path)).fit()
        assert T.main(cli(tmp_path, run, 2)[3:]) == 2     # the CLI: exit 2 with the message
        assert not (run / "config.json").exists() and not (run / "checkpoints").exists()   # nothing mixed in
    T.Trainer(cfg(tmp_path, steps=2)).fit()                   # released: the folder is usable again
    assert not (run / ".lock").exists()


def test_stale_lock_of_a_killed_process_is_taken_over(tmp_path, capsys):
    run = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", "import sys; from smis.rundir import RunDirLock; "
                               f"RunDirLock({str(run)!r}).acquire(); print('locked', flush=True); sys.stdin.read()"],
                              env=cli_env(), stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "locked"
    with pytest.raises(T.RunDirBusy, match=f"pid {holder.pid}"):
        T.Trainer(cfg(tmp_path)).fit()
    holder.kill()
    holder.wait()
    assert (run / ".lock").exists()                            # left behind by the killed holder
    T.Trainer(cfg(tmp_path, steps=2)).fit()
    assert f"taking over a stale lock of pid {holder.pid}" in capsys.readouterr().err


def test_stale_temporaries_are_deleted_under_the_lock_on_start_and_resume(tmp_path, capsys):
    """What a killed atomic write leaves (checkpoints/.step_*.pt.XXXX.tmp, .config.json.XXXX.tmp) is deleted
    when the next run takes the folder, and kept while another process holds it."""
    trained(tmp_path, steps=2)
    run = tmp_path / "run"
    stale = [run / "checkpoints" / ".step_00000004.pt.k2j4x9ab.tmp", run / ".config.json.q8w1e2r3.tmp"]
    for p in stale:
        p.write_bytes(b"\0" * 66_000)
    with RunDirLock(run):
        with pytest.raises(RunDirBusy):
            T.Trainer(cfg(tmp_path, steps=4)).fit(resume=True)
        assert all(p.exists() for p in stale)             # a live run's temporary is never touched
    capsys.readouterr()
    T.Trainer(cfg(tmp_path, steps=4)).fit(resume=True)
    assert not any(p.exists() for p in stale)
    err = capsys.readouterr().err
    assert "deleted 2 temporary file(s) of an interrupted write (0.1 MB)" in err and ".step_00000004.pt." in err
    assert not list(run.rglob("*.tmp")) and not (run / ".lock").exists()
    # a fresh run in a folder holding only a temporary: deleted too
    (tmp_path / "new" / "checkpoints").mkdir(parents=True)
    (tmp_path / "new" / "checkpoints" / ".step_00000002.pt.aaaa.tmp").write_bytes(b"x")
    T.Trainer(cfg(tmp_path, run_dir=str(tmp_path / "new"), steps=2)).fit()
    assert not list((tmp_path / "new").rglob("*.tmp"))


def test_fresh_start_goes_through_the_lock_and_deletes_only_a_runs_own_files(tmp_path, capsys):
    """fit(fresh=True), what notebook 02's FRESH = True does: refused while another process holds the folder
    (naming it) and in a folder that holds no smis run; otherwise it deletes the previous run's files only."""
    trained(tmp_path, steps=4)
    run = tmp_path / "run"
    (run / "notes.txt").write_text("mine")
    before = run_files(run)
    holder = subprocess.Popen([sys.executable, "-c", "import sys; from smis.rundir import RunDirLock; "
                               f"RunDirLock({str(run)!r}).acquire(); print('locked', flush=True); sys.stdin.read()"],
                              env=cli_env(), stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(RunDirBusy, match=f"in use by another run \\(pid {holder.pid} "):
            T.Trainer(cfg(tmp_path, steps=2)).fit(fresh=True)
        assert run_files(run) == sorted(before + [".lock"])   # nothing deleted under the live holder
    finally:
        holder.kill()
        holder.wait()
    T.Trainer(cfg(tmp_path, steps=2)).fit(fresh=True)
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step_00000002.pt"]   # the new run only
    assert (run / "notes.txt").read_text() == "mine"         # not a run's file: kept
    assert "fresh start: deleted the previous run's checkpoints, losses.csv, config.json" in capsys.readouterr().err
    # a folder holding other things (a mistyped RUN_DIR, <out>/<profile> itself): refused, untouched
    other = tmp_path / "other"
    (other / "checkpoints").mkdir(parents=True)
    (other / "checkpoints" / "model.pt").write_bytes(b"precious")
    (other / "REPORT.md").write_text("x")
    with pytest.raises(FileExistsError, match=r"holds REPORT\.md, checkpoints but no smis training run"):
        T.Trainer(cfg(tmp_path, run_dir=str(other), steps=2)).fit(fresh=True)
    assert (other / "checkpoints" / "model.pt").read_bytes() == b"precious" and not (other / ".lock").exists()
    with pytest.raises(ValueError, match="choose one"):
        T.Trainer(cfg(tmp_path, steps=2)).fit(resume=True, fresh=True)


def test_notebook_02_deletes_nothing_itself():
    """The notebook leaves deleting to Trainer.fit(fresh=...) (under the lock): no rmtree / unlink of its own."""
    src = (project_root() / "notebooks" / "src" / "02_train.py").read_text()
    calls = {n.func.attr if isinstance(n.func, ast.Attribute) else getattr(n.func, "id", "")
             for n in ast.walk(ast.parse(src)) if isinstance(n, ast.Call)}
    assert not calls & {"rmtree", "unlink", "remove", "rmdir"}
    assert "fresh=FRESH" in src
