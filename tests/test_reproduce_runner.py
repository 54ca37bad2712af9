"""smis.reproduce.runner: the notebooks run headlessly with papermill, --set values reach the notebooks that
declare them, REPORT.md gathers their tables, a failing notebook is named and kept, and nothing is written outside
the run's folder."""
import functools
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import nbformat
import pandas as pd
import pytest

from smis.reproduce.profiles import PROFILES
from smis.reproduce.runner import NotebookFailed, run_profile
from smis.rundir import RunDirLock
from smis.utils import project_root

ROOT = project_root()


def test_notebooks_are_built_from_their_sources():
    r = subprocess.run([sys.executable, "scripts/build_notebooks.py", "--check"], cwd=ROOT, capture_output=True,
                       text=True)
    assert r.returncode == 0, "stale notebooks, run `python scripts/build_notebooks.py`:\n" + r.stdout


def test_repo_snapshot_names_changed_paths(tmp_path, repo_snapshot):
    """The session guard of tests/conftest.py sees a file added, modified or removed under outputs/ or
    data/ (and folders appearing), and nothing elsewhere."""
    (tmp_path / "outputs" / "demo").mkdir(parents=True)
    (tmp_path / "outputs" / "demo" / "a.csv").write_text("1")
    (tmp_path / "outputs" / "old.md").write_text("x")
    before = repo_snapshot(tmp_path)
    assert set(before) == {"outputs", "outputs/demo", "outputs/demo/a.csv", "outputs/old.md"}
    assert repo_snapshot.changes(before, repo_snapshot(tmp_path)) == []
    (tmp_path / "outputs" / "demo" / "a.csv").write_text("12")
    (tmp_path / "outputs" / "old.md").unlink()
    (tmp_path / "data" / "synthscenes").mkdir(parents=True)
    (tmp_path / "notebooks").mkdir()
    assert repo_snapshot.changes(before, repo_snapshot(tmp_path)) == [
        "data", "data/synthscenes", "outputs", "outputs/demo/a.csv", "outputs/old.md"]


@pytest.mark.slow
def test_smoke_profile_end_to_end(smoke_run):
    """What the README's smoke command (conftest.smoke_run, shared with test_readme) wrote, then --resume."""
    assert smoke_run.process.returncode == 0, smoke_run.process.stdout[-3000:] + smoke_run.process.stderr[-3000:]
    out = smoke_run.out
    report = (out / "REPORT.md").read_text()
    assert "## 01_prepare_data" in report and "factor_recovery" in report
    for name in ["samples.png", "label_statistics.png", "one_mask_many_images.png", "factor_recovery.csv"]:
        assert (out / "01_prepare_data" / name).stat().st_size > 100, name
    expected = {"03_reconstruction_rq1": ["table1_reconstruction.csv", "fig6_reconstructions.png"],
                "04_diversity_rq2": ["table2_diversity_top1.csv", "paired_clvae_vs_baseline.csv",
                                     "per_class_diversity.csv", "factors_in_distribution.csv",
                                     "style_guided_factors.csv", "fig7_samples_clvae.png",
                                     "fig10_hist_diversity.png"],
                "05_ablations": ["table5_ablations.csv", "fig11_ablation_samples.png"]}
    for stem, names in expected.items():
        assert f"## {stem}" in report, stem
        for name in names:
            assert (out / stem / name).stat().st_size > 100, f"{stem}/{name}"
    table2 = pd.read_csv(out / "04_diversity_rq2" / "table2_diversity_top1.csv", index_col=0)
    assert list(table2.index) == ["clvae", "gaugan_vae", "gaugan", "real test images (ceiling)"]
    assert 0 < table2.loc["clvae", "mask mIoU"] < table2.loc["real test images (ceiling)", "mask mIoU"] <= 1
    lpips_cols = [c for c in table2.columns if c.startswith("diversity (lpips_")]
    assert len(lpips_cols) == 3 and (table2.loc[["clvae", "gaugan_vae"], lpips_cols[0]] > 0).all()   # mean, std, ±95%
    assert table2.loc["gaugan", lpips_cols[0]] == 0                         # no latents: one image per mask
    if "lpips_effnet" in lpips_cols[0]:      # a fallback metric never appears under the paper's name
        assert "lpips_alex" not in report and "(fid)" not in report
    table5 = pd.read_csv(out / "05_ablations" / "table5_ablations.csv", index_col=0)
    assert (len(table5) == 6 and table5.index[-1].startswith("real")
            and "trained here" in (out / "05_ablations" / "table5_ablations.md").read_text())
    nb = nbformat.read(out / "01_prepare_data.ipynb", as_version=4)
    assert nb.metadata.papermill.parameters["SMOKE"] is True
    # "What we learnt" is computed from the run: the last cell of 02-06 renders Markdown holding this run's numbers
    table1 = pd.read_csv(out / "03_reconstruction_rq1" / "table1_reconstruction.csv", index_col=0)
    learnt = {}
    for stem in ("02_train", "03_reconstruction_rq1", "04_diversity_rq2", "05_ablations", "06_interactive_editing"):
        last = nbformat.read(out / f"{stem}.ipynb", as_version=4).cells[-1]
        assert last.cell_type == "code", stem
        learnt[stem] = "".join(o["data"]["text/markdown"] for o in last.outputs if "text/markdown" in o.get("data", {}))
        assert learnt[stem].startswith("- "), stem
    gt = [c for c in table1.columns if c.startswith("GT-similarity (") and c.endswith(")")][0]
    assert f"GT-similarity {table1.loc['clvae', gt]:.3f}" in learnt["03_reconstruction_rq1"]
    assert f"diversity {table2.loc['clvae', lpips_cols[0]]:.3f}" in learnt["04_diversity_rq2"]
    state = json.loads((out / ".completed.json").read_text())
    assert set(state) == set(PROFILES["smoke"])
    # --resume skips what is done
    said = []
    run_profile("smoke", out_root=smoke_run.root, resume=True, log=said.append)
    assert sum("skipped" in s for s in said) == len(PROFILES["smoke"])


def test_overrides_and_out_placeholder(tmp_path, echo_notebook):
    echo_notebook(tmp_path / "nbs")
    omp_before = os.environ.get("OMP_NUM_THREADS")
    profiles = {"p": {"98_echo": {"A": 1, "B": "b", "RUN_DIR": "{out}/runs"}}}
    out = run_profile("p", out_root=tmp_path / "out", profiles=profiles, notebook_dir=tmp_path / "nbs",
                      log=lambda *a: None, overrides=["A=[2, 3]", '98.B="x"'], threads=1)
    got = json.loads((out / "98_echo" / "params.json").read_text())
    assert got["A"] == [2, 3] and got["B"] == "x" and got["RUN_DIR"] == f"{out}/runs"
    assert got["BLAS"] is not None and got["WAIT"] is not None and got["OMP"] == "1"
    assert os.environ.get("OMP_NUM_THREADS") == omp_before          # the caller's environment is restored
    assert "98_echo" in json.loads((out / "timings.json").read_text())
    with pytest.raises(SystemExit, match="match no notebook"):
        run_profile("p", out_root=tmp_path / "out", profiles=profiles, notebook_dir=tmp_path / "nbs",
                    log=lambda *a: None, overrides=["05.K=3"])


def test_set_goes_only_to_notebooks_declaring_it(tmp_path, caplog, capfd, monkeypatch, echo_notebook):
    """A global --set NAME reaches the notebooks that declare NAME and no other (no papermill "Passed unknown
    parameter" warning); the kernel runs without its "TCP without encryption" warning, and is shut down without
    the SIGINT that jupyter_client sends first (ipykernel logged it, depending on timing, as "[IPKernelApp] ERROR |
    KeyboardInterrupt caught in kernel.")."""
    from jupyter_client.manager import KernelManager

    signals, send = [], KernelManager._async_signal_kernel

    async def spy(self, signum):
        signals.append(signum)
        await send(self, signum)

    monkeypatch.setattr(KernelManager, "_async_signal_kernel", spy)
    echo_notebook(tmp_path / "nbs")
    echo_notebook(tmp_path / "nbs", stem="99_other", params="SMOKE = False\nC = 0")
    profiles = {"p": {"98_echo": {"RUN_DIR": "{out}/runs"}, "99_other": {"SMOKE": True}}}
    out = run_profile("p", out_root=tmp_path / "out", profiles=profiles, notebook_dir=tmp_path / "nbs",
                      log=lambda *a: None, overrides=["A=7", "C=5", "SMOKE=true"])
    echo = nbformat.read(out / "98_echo.ipynb", as_version=4).metadata.papermill.parameters
    other = nbformat.read(out / "99_other.ipynb", as_version=4).metadata.papermill.parameters
    assert echo["A"] == 7 and "C" not in echo and echo["SMOKE"] is True
    assert other["C"] == 5 and "A" not in other and other["SMOKE"] is True
    assert json.loads((out / "99_other" / "params.json").read_text())["C"] == 5
    assert not [r for r in caplog.records if "unknown parameter" in r.getMessage()]
    err = capfd.readouterr().err
    assert "without encryption" not in err
    assert "KeyboardInterrupt caught in kernel" not in err      # the kernel's shutdown is quiet (issue 25)
    assert signal.SIGINT not in signals


def test_failure_names_notebook_and_cell(tmp_path):
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "smis", "display_name": "Python (smis)", "language": "python"}
    params = nbformat.v4.new_code_cell('SMOKE = True\nOUT_DIR = ""')
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params, nbformat.v4.new_code_cell("x = 1"),
                nbformat.v4.new_code_cell("raise ValueError('broken on purpose')")]
    (tmp_path / "nbs").mkdir()
    nbformat.write(nb, tmp_path / "nbs" / "99_broken.ipynb")
    with pytest.raises(NotebookFailed,
                       match=r"notebook 99_broken failed in cell \d.*ValueError: broken on purpose"):
        run_profile("p", out_root=tmp_path / "out", profiles={"p": {"99_broken": {}}},
                    notebook_dir=tmp_path / "nbs", log=lambda *a: None)


def test_a_failed_notebook_is_kept_under_a_failed_name_and_the_last_good_one_stays(tmp_path, echo_notebook):
    echo_notebook(tmp_path / "nbs", params="SMOKE = False\nFAIL = False")
    nb = nbformat.read(tmp_path / "nbs" / "98_echo.ipynb", as_version=4)
    nb.cells.insert(1, nbformat.v4.new_code_cell("assert not FAIL, 'failing on purpose'"))
    nb.cells[-1].source = nb.cells[-1].source.replace("mkdir(parents=True)", "mkdir(parents=True, exist_ok=True)")
    nbformat.write(nb, tmp_path / "nbs" / "98_echo.ipynb")
    run = functools.partial(run_profile, "p", out_root=tmp_path / "out", notebook_dir=tmp_path / "nbs",
                            log=lambda *a: None)
    out = run(profiles={"p": {"98_echo": {}}})
    good = (out / "98_echo.ipynb").read_bytes()
    with pytest.raises(NotebookFailed, match=r"failing on purpose\. The executed copy with the traceback is "
                                                       rf"{out / '98_echo.failed.ipynb'}"):
        run(profiles={"p": {"98_echo": {"FAIL": True}}})
    assert (out / "98_echo.ipynb").read_bytes() == good      # the finished one is not replaced by a failed run
    assert "failing on purpose" in (out / "98_echo.failed.ipynb").read_text()
    run(profiles={"p": {"98_echo": {}}})
    assert not (out / "98_echo.failed.ipynb").exists() and not list(out.glob(".*.ipynb"))


# ---------------------------------------------------------------------------------------------
# Notebooks 01 and 02 executed directly with papermill, as the runner executes them


def test_prepare_data_notebook_checks_a_real_dataset(tmp_path, ade20k_source):
    """01 on an ADE20K folder: the generated one in the real layout, and the real samples where present."""
    import papermill as pm

    out = tmp_path / "nb01"
    pm.execute_notebook(str(ROOT / "notebooks" / "01_prepare_data.ipynb"), str(tmp_path / "nb01.ipynb"),
                        kernel_name="smis", cwd=str(ROOT), progress_bar=False,
                        parameters={"SMOKE": True, "OUT_DIR": str(out), "DATA_DIR": str(tmp_path / "ss"),
                                    "DATA_ROOT": str(ade20k_source.root), "DATA_FORMAT": "ade20k"})
    report = json.loads((out / "check_ade20k.json").read_text())
    assert report["ok"] is True
    assert (out / "samples_ade20k.png").stat().st_size > 1000


@pytest.mark.slow
def test_train_notebook_fresh_and_continue(tmp_path):
    """02_train: FRESH=True starts the run anew; FRESH=False continues it (a long run is never wiped)."""
    import papermill as pm

    def run(fresh, steps, **extra):
        pm.execute_notebook(str(ROOT / "notebooks" / "02_train.ipynb"), str(tmp_path / "nb02.ipynb"),
                            kernel_name="smis", cwd=str(ROOT), progress_bar=False,
                            parameters={"SMOKE": True, "RUN_DIR": str(tmp_path / "run"),
                                        "OUT_DIR": str(tmp_path / "out"),
                                        "FRESH": fresh, "DEMO_MODEL": "", **extra})
        return sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir())

    first = run(True, 4)
    assert first[-1] == "step_00000004.pt"
    stamp = (tmp_path / "run" / "checkpoints" / first[-1]).stat().st_mtime_ns
    assert run(False, 4) == first  # continued: already at its last step, nothing retrained
    assert (tmp_path / "run" / "checkpoints" / first[-1]).stat().st_mtime_ns == stamp
    assert json.loads((tmp_path / "run" / "config.json").read_text())["channels_last"] is True   # the default
    run(True, 4, CHANNELS_LAST=False)
    assert (tmp_path / "run" / "checkpoints" / first[-1]).stat().st_mtime_ns != stamp  # started anew
    # the parameter reaches the trainer
    assert json.loads((tmp_path / "run" / "config.json").read_text())["channels_last"] is False
    assert (tmp_path / "out" / "samples_this_run.png").exists()
    # FRESH = True while another process holds the run (issue 25): refused, naming it; nothing deleted
    files = sorted(p.relative_to(tmp_path / "run") for p in (tmp_path / "run").rglob("*"))
    with RunDirLock(tmp_path / "run"):
        with pytest.raises(pm.PapermillExecutionError, match=rf"RunDirBusy.*in use by another run \(pid {os.getpid()}"):
            run(True, 4)
        assert sorted(p.relative_to(tmp_path / "run") for p in (tmp_path / "run").rglob("*")) == sorted(
            files + [Path(".lock")])
