"""smis.reproduce.cli: `python -m smis.reproduce`'s exit codes and one-line messages: a busy folder, an
interrupt (SIGINT, SIGTERM), a read-only --out, an --out at the repository root or /, an unknown --only."""
import functools
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pandas as pd
import pytest

from smis.reproduce import cli
from smis.reproduce.cli import main
from smis.reproduce.runner import run_profile
from smis.rundir import RunDirBusy, RunDirLock
from smis.utils import project_root

ROOT = project_root()


def test_prepare_data_writes_only_under_out(tmp_path, repo_snapshot):
    """`--profile smoke --out DIR` (notebook 01, the one that writes a dataset) leaves the repository's
    outputs/ and data/ as they were; the dataset and figures land under DIR."""
    before = repo_snapshot()
    assert main(["--profile", "smoke", "--only", "01", "--out", str(tmp_path)]) == 0
    assert repo_snapshot.changes(before, repo_snapshot()) == []
    data = tmp_path / "smoke" / "data" / "synthscenes_smoke"
    assert len(list((data / "test" / "images").glob("*.png"))) == 8
    assert (tmp_path / "smoke" / "01_prepare_data" / "samples.png").stat().st_size > 100
    nb = nbformat.read(tmp_path / "smoke" / "01_prepare_data.ipynb", as_version=4)
    assert nb.metadata.papermill.parameters["DATA_DIR"] == f"{tmp_path}/smoke/data/synthscenes"
    # "What we learnt" is computed from the run: the last cell renders this run's factor recovery
    recovered = pd.read_csv(tmp_path / "smoke" / "01_prepare_data" / "factor_recovery.csv", index_col=0).loc["all"]
    learnt = "".join(o["data"]["text/markdown"] for o in nb.cells[-1].outputs if "text/markdown" in o.get("data", {}))
    assert f"{100 * recovered['colour ok']:.1f} % of the regions' colour modes" in learnt
    assert f"{100 * recovered['texture ok']:.1f} % of\n  their texture kinds" in learnt


def test_unknown_only_creates_no_folder(tmp_path):
    with pytest.raises(SystemExit, match=r"--only \['99'\] matches no notebook of profile 'smoke'"):
        main(["--profile", "smoke", "--only", "99", "--out", str(tmp_path / "x")])
    assert not (tmp_path / "x").exists()


def _main_with(monkeypatch, profiles, nb_dir, argv):
    """main on `profiles` (notebooks from nb_dir), as the command line runs it."""
    monkeypatch.setattr(cli, "run_profile", functools.partial(run_profile, profiles=profiles, notebook_dir=nb_dir))
    return main(argv)


def test_a_second_run_on_the_same_out_is_refused(tmp_path, monkeypatch, capsys, echo_notebook):
    """<out>/<profile> is locked for a run's whole life: a second run on it stops at once, naming the holder,
    before any notebook (nothing of the first run's folder is touched); the lock goes with the run."""
    echo_notebook(tmp_path / "nbs", params="SMOKE = False")
    profiles = {"p": {"98_echo": {}}}
    with RunDirLock(tmp_path / "out" / "p"):
        with pytest.raises(RunDirBusy, match=rf"out/p is in use by another run \(pid {os.getpid()} .*another --out"):
            run_profile("p", out_root=tmp_path / "out", profiles=profiles, notebook_dir=tmp_path / "nbs",
                        log=lambda *a: None)
        argv = ["--profile", "p", "--out", str(tmp_path / "out")]
        assert _main_with(monkeypatch, profiles, tmp_path / "nbs", argv) == 2
        err = capsys.readouterr().err
        assert err.startswith("[reproduce] ERROR: ") and "in use by another run" in err and "Traceback" not in err
        assert sorted(os.listdir(tmp_path / "out" / "p")) == [".lock"]
    out = run_profile("p", out_root=tmp_path / "out", profiles=profiles, notebook_dir=tmp_path / "nbs",
                      log=lambda *a: None)
    assert (out / "98_echo.ipynb").is_file() and not (out / ".lock").exists()
    assert not list(out.glob(".*.ipynb"))                  # the temporary was renamed


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_interrupt_leaves_no_half_written_notebook(tmp_path, sig, echo_notebook):
    """Ctrl-C (SIGINT to the whole process group, as a terminal sends it) or SIGTERM during a notebook: one line,
    exit 128 + signal, no traceback; the notebook in progress is gone, the finished one kept, the lock released,
    the kernel ended; --resume then skips the finished notebook."""
    nbs = tmp_path / "nbs"
    echo_notebook(nbs, stem="97_fast", params="SMOKE = False")
    echo_notebook(nbs, stem="98_slow", params="SMOKE = False")
    nb = nbformat.read(nbs / "98_slow.ipynb", as_version=4)
    nb.cells.append(nbformat.v4.new_code_cell("(p / 'pid').write_text(str(os.getpid()))\nimport time\ntime.sleep(300)"))
    nbformat.write(nb, nbs / "98_slow.ipynb")
    drive = ("import functools, sys\nfrom pathlib import Path\nfrom smis.reproduce import cli, runner\n"
             "cli.run_profile = functools.partial(runner.run_profile, profiles={'p': {'97_fast': {}, '98_slow': {}}}, "
             f"notebook_dir=Path({str(nbs)!r}))\n"
             "sys.exit(cli.main(sys.argv[1:]))\n")
    out = tmp_path / "out" / "p"
    proc = subprocess.Popen([sys.executable, "-c", drive, "--profile", "p", "--out", str(tmp_path / "out")],
                            env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True,
                            # a run started in the background by a shell (`cmd &`, as CI may be) inherits SIGINT
                            # ignored; a terminal's Ctrl-C reaches a foreground run with it at its default
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 300
    while not (out / "98_slow" / "pid").exists():
        assert proc.poll() is None and time.time() < deadline, proc.communicate()
        time.sleep(0.1)
    kernel = int((out / "98_slow" / "pid").read_text())
    if sig == signal.SIGINT:
        os.killpg(proc.pid, sig)
    else:
        proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + sig, err
    assert err.strip() == (f"[reproduce] {sig.name}: interrupted while running 98_slow: its partial notebook was "
                           "deleted, the notebooks finished before it are kept (97_fast); rerun with --resume to skip "
                           "the finished ones."), err
    assert sorted(p.name for p in out.glob("*.ipynb")) == ["97_fast.ipynb"] and not list(out.glob(".*.ipynb"))
    assert not (out / ".lock").exists()
    for _ in range(100):                                     # the kernel is shut down with the run
        try:
            os.kill(kernel, 0)
        except ProcessLookupError:
            break
        time.sleep(0.1)
    else:
        os.kill(kernel, signal.SIGKILL)
        pytest.fail("the kernel outlived the interrupted run")


@pytest.mark.parametrize("where", ["repository root", "/"])
def test_out_at_the_repository_root_or_slash_touches_nothing_else(tmp_path, monkeypatch, capsys, where, echo_notebook):
    """--out at the repository root or at /: the run writes only its <out>/<profile> folder; every other entry of
    the out folder (and the notebooks it reads) is left as it was. Where / is not writable (a normal user), the run
    stops with one line instead."""
    base = ROOT if where == "repository root" else Path("/")
    profile = f"zz_issue25_{os.getpid()}"
    echo_notebook(tmp_path / "nbs", params="SMOKE = False")
    def snap():   # every entry's name; a file's time and size too (folders' times move with other processes)
        entries = [p for p in base.iterdir() if p.name != profile] + list((tmp_path / "nbs").iterdir())
        return {str(p): (p.stat().st_mtime_ns, p.stat().st_size) if p.is_file() and not p.is_symlink() else None
                for p in entries}
    before = snap()
    try:
        rc = _main_with(monkeypatch, {profile: {"98_echo": {}}}, tmp_path / "nbs",
                        ["--profile", profile, "--out", str(base)])
        err = capsys.readouterr().err
        if os.access(base, os.W_OK):
            assert rc == 0, err
            assert sorted(p.name for p in (base / profile).iterdir()) == [".completed.json", "98_echo", "98_echo.ipynb",
                                                                         "REPORT.md", "timings.json"]
        else:
            assert rc == 2 and err.startswith(f"[reproduce] ERROR: cannot write {base / profile}"), err
        after = snap()
        assert after == before, sorted(set(after.items()) ^ set(before.items()))
    finally:
        import shutil
        shutil.rmtree(base / profile, ignore_errors=True)


def _unprivileged() -> list[str]:
    if os.geteuid() != 0:
        return []
    import shutil
    if shutil.which("setpriv") is None:
        pytest.skip("running as root without setpriv: cannot drop the capabilities that ignore permission bits")
    return ["setpriv", "--inh-caps=-all", "--bounding-set=-all", "--"]


def test_read_only_out_is_one_clear_line(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir(mode=0o555)
    try:
        r = subprocess.run(_unprivileged() + [sys.executable, "-m", "smis.reproduce", "--profile", "smoke", "--only",
                                              "01", "--out", str(ro)], env={**os.environ, "PYTHONPATH": str(ROOT)},
                           capture_output=True, text=True, timeout=300, cwd=ROOT)
    finally:
        ro.chmod(0o755)
    assert r.returncode == 2, r.stderr[-2000:]
    assert r.stderr.startswith(f"[reproduce] ERROR: cannot write {ro / 'smoke'}") and "Fix: choose an --out" in \
        r.stderr and "Traceback" not in r.stderr, r.stderr[-2000:]
    assert os.listdir(ro) == []
