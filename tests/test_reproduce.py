"""The notebooks run headlessly, the reproduce command gathers their tables, and failures are named."""
import functools
import json
import os
import signal
import subprocess
import sys
import time

from pathlib import Path

import nbformat
import pandas as pd
import pytest

from smis import reproduce
from smis.rundir import RunDirBusy, RunDirLock
from smis.utils import project_root

ROOT = project_root()


def test_notebooks_are_built_from_their_sources():
    r = subprocess.run([sys.executable, "scripts/build_notebooks.py", "--check"], cwd=ROOT, capture_output=True,
                       text=True)
    assert r.returncode == 0, "stale notebooks, run `python scripts/build_notebooks.py`:\n" + r.stdout


def test_each_notebook_has_one_parameters_cell_first_in_code():
    paths = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    assert len(paths) >= 6, paths                                       # the notebooks, not an empty glob
    for path in paths:
        nb = nbformat.read(path, as_version=4)
        code = [c for c in nb.cells if c.cell_type == "code"]
        tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
        assert len(tagged) == 1 and code[0] is tagged[0], path.name
        assert "SMOKE" in tagged[0].source, path.name
        assert nb.cells[0].cell_type == "markdown" and "In this notebook we" in nb.cells[0].source, path.name


def _params_of(stem: str) -> list[str]:
    return reproduce.declared_parameters(ROOT / "notebooks" / f"{stem}.ipynb")


@pytest.mark.parametrize("profile", sorted(reproduce.PROFILES))
def test_profiles_name_existing_notebooks_and_parameters(profile):
    for stem, params in reproduce.PROFILES[profile].items():
        assert (ROOT / "notebooks" / f"{stem}.ipynb").exists(), f"{profile}: notebook {stem} is not built"
        unknown = set(params) - set(_params_of(stem))
        assert not unknown, f"{profile}: {stem} has no parameters {sorted(unknown)}"


def test_declared_parameters_reads_the_tagged_cell(tmp_path):
    _echo_notebook(tmp_path, params="SMOKE = False\nA: int = 0   # typed\nB, C = 1, 2\nif SMOKE:\n    D = 3")
    assert reproduce.declared_parameters(tmp_path / "98_echo.ipynb") == ["SMOKE", "A", "B", "C", "OUT_DIR"]
    assert "N_TRAIN" in _params_of("01_prepare_data") and "SMOKE" in _params_of("06_interactive_editing")


def test_default_parameters_are_the_literals_of_the_tagged_cell(tmp_path):
    """What a run gets for a parameter its profile leaves alone (the preflight reads it): literals only."""
    _echo_notebook(tmp_path, params="SMOKE = False\nA: int = 3\nB = [1, {'x': None}]\nC = __import__('os').sep\n"
                                    "D = E = 1")
    assert reproduce.default_parameters(tmp_path / "98_echo.ipynb") == {"SMOKE": False, "A": 3, "B": [1, {"x": None}],
                                                                        "OUT_DIR": ""}
    nb02 = reproduce.default_parameters(ROOT / "notebooks" / "02_train.ipynb")
    assert nb02["SPLIT"] == "test" and nb02["PRESET_SET"] == {} and nb02["STEPS"] == 300


def test_folder_parameters_are_classified():
    """Every *_DIR / *_ROOT parameter is known as written (kept under the run's folder) or read; a new
    one must be classified in smis/reproduce.py, or a run could write outside --out unnoticed."""
    known = set(reproduce.WRITTEN_FOLDERS) | set(reproduce.READ_FOLDERS)
    paths = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    assert len(paths) >= 6, paths                                       # the notebooks, not an empty glob
    for path in paths:
        names = reproduce.declared_parameters(path)
        assert "OUT_DIR" in names, path.name
        folders = {n for n in names if n.endswith(("_DIR", "_ROOT"))}
        assert folders <= known, f"{path.name}: classify {sorted(folders - known)} in WRITTEN_FOLDERS or READ_FOLDERS"


@pytest.mark.parametrize("profile", sorted(reproduce.PROFILES))
@pytest.mark.parametrize("relative", [False, True])
def test_every_profile_writes_only_under_out(tmp_path, profile, relative):
    """Each folder a notebook of the profile writes (its declared WRITTEN_FOLDERS) is given and lies under
    <out>/<profile>, for an absolute --out and for the default, repository-relative one."""
    out_root = "outputs/some_run" if relative else tmp_path
    out, plan = reproduce.plan_profile(profile, out_root=out_root)
    assert out == (ROOT / "outputs" / "some_run" / profile if relative else tmp_path / profile)
    assert [stem for stem, _ in plan] == list(reproduce.PROFILES[profile])
    for stem, params in plan:
        written = [n for n in reproduce.WRITTEN_FOLDERS if n in _params_of(stem)]
        assert "OUT_DIR" in written and (stem != "01_prepare_data" or "DATA_DIR" in written), stem
        for name in written:
            path = (ROOT / params[name]).resolve()
            assert path.is_relative_to(out.resolve()), f"{profile}: {stem}.{name} = {params[name]} is outside {out}"
        assert set(params) <= set(_params_of(stem)), stem            # only declared parameters go to papermill
    assert not (tmp_path / profile).exists() and not (ROOT / "outputs" / "some_run").exists()  # planning writes nothing


def test_prepare_data_writes_only_under_out(tmp_path, repo_snapshot):
    """`--profile smoke --out DIR` (notebook 01, the one that writes a dataset) leaves the repository's
    outputs/ and data/ as they were; the dataset and figures land under DIR."""
    before = repo_snapshot()
    assert reproduce.main(["--profile", "smoke", "--only", "01", "--out", str(tmp_path)]) == 0
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


def test_unknown_only_creates_no_folder(tmp_path):
    with pytest.raises(SystemExit, match=r"--only \['99'\] matches no notebook of profile 'smoke'"):
        reproduce.main(["--profile", "smoke", "--only", "99", "--out", str(tmp_path / "x")])
    assert not (tmp_path / "x").exists()


@pytest.mark.slow
def test_smoke_profile_end_to_end(tmp_path):
    out = reproduce.run_profile("smoke", out_root=tmp_path, log=lambda *a: None)
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
    assert set(state) == set(reproduce.PROFILES["smoke"])
    # --resume skips what is done
    said = []
    reproduce.run_profile("smoke", out_root=tmp_path, resume=True, log=said.append)
    assert sum("skipped" in s for s in said) == len(reproduce.PROFILES["smoke"])


ECHO_PARAMS = 'SMOKE = False\nA: \"Union[int, list]\" = 0\nB = ""\nRUN_DIR = ""'


def _echo_notebook(folder, stem="98_echo", params=ECHO_PARAMS):
    """A notebook declaring `params` and OUT_DIR that writes its upper-case globals and thread settings
    to OUT_DIR/params.json."""
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "smis", "display_name": "Python (smis)", "language": "python"}
    cell = nbformat.v4.new_code_cell(params + '\nOUT_DIR = ""')
    cell.metadata["tags"] = ["parameters"]
    body = nbformat.v4.new_code_cell("import json, os, pathlib\np = pathlib.Path(OUT_DIR); p.mkdir(parents=True)\n"
                                     "(p / 'params.json').write_text(json.dumps({**{k: v for k, v in "
                                     "dict(globals()).items() if k.isupper()}, "
                                     "'BLAS': os.environ.get('OPENBLAS_NUM_THREADS'), "
                                     "'OMP': os.environ.get('OMP_NUM_THREADS'), "
                                     "'WAIT': os.environ.get('OMP_WAIT_POLICY')}))")
    nb.cells = [cell, body]
    folder.mkdir(exist_ok=True)
    nbformat.write(nb, folder / f"{stem}.ipynb")


def test_overrides_and_out_placeholder(tmp_path):
    _echo_notebook(tmp_path / "nbs")
    omp_before = os.environ.get("OMP_NUM_THREADS")
    profiles = {"p": {"98_echo": {"A": 1, "B": "b", "RUN_DIR": "{out}/runs"}}}
    out = reproduce.run_profile("p", out_root=tmp_path / "out", profiles=profiles, notebook_dir=tmp_path / "nbs",
                                log=lambda *a: None, overrides=["A=[2, 3]", '98.B="x"'], threads=1)
    got = json.loads((out / "98_echo" / "params.json").read_text())
    assert got["A"] == [2, 3] and got["B"] == "x" and got["RUN_DIR"] == f"{out}/runs"
    assert got["BLAS"] is not None and got["WAIT"] is not None and got["OMP"] == "1"
    assert os.environ.get("OMP_NUM_THREADS") == omp_before          # the caller's environment is restored
    assert "98_echo" in json.loads((out / "timings.json").read_text())
    with pytest.raises(SystemExit, match="match no notebook"):
        reproduce.run_profile("p", out_root=tmp_path / "out", profiles=profiles, notebook_dir=tmp_path / "nbs",
                              log=lambda *a: None, overrides=["05.K=3"])
    with pytest.raises(SystemExit, match="NAME=VALUE"):
        reproduce.parse_overrides(["K"])


ECHO_RUN = {"98_echo": {"RUN_DIR": "{out}/runs"}}


@pytest.mark.parametrize("profile, overrides, message", [
    (ECHO_RUN, ["99.A=1"], r"--set prefixes \['99'\] match no notebook"),
    (ECHO_RUN, ["AA=5"], r"--set AA: AA is not a parameter of any notebook of this run \(98_echo\)\. Did you mean A\? "
                         r"Valid names: A, B, RUN_DIR, SMOKE\."),
    (ECHO_RUN, ["98.Z=1"], r"--set 98\.Z: Z is not a parameter of notebooks \['98_echo'\]"),
    (ECHO_RUN, ["OUT_DIR=x"], r"reproduce sets OUT_DIR itself.*--out"),
    (ECHO_RUN, ["RUN_DIR=/elsewhere/runs"], r"98_echo: RUN_DIR='/elsewhere/runs' is outside the run's folder"),
    (ECHO_RUN, ["RUN_DIR={out}/../runs"], r"is outside the run's folder"),
    ({"98_echo": {}}, [], r"profile 'p' gives 98_echo no RUN_DIR"),
    ({"98_echo": {"RUN_DIR": "{out}/runs", "N_TRAINN": 5}}, [],
     r"gives 98_echo the parameters \['N_TRAINN'\].*does not declare"),
    ({"98_echo": {}, "97_missing": {}}, [], r"notebooks \['97_missing'\].*build_notebooks"),
])
def test_bad_arguments_are_refused_before_any_folder(tmp_path, profile, overrides, message):
    """A typo'd --set name, a --set or profile parameter no notebook declares, a written folder outside the
    run: each a SystemExit naming it, raised before the run's folder exists (nothing executed)."""
    _echo_notebook(tmp_path / "nbs")
    with pytest.raises(SystemExit, match=message):
        reproduce.run_profile("p", out_root=tmp_path / "x", profiles={"p": profile}, notebook_dir=tmp_path / "nbs",
                              log=lambda *a: None, overrides=overrides)
    assert not (tmp_path / "x").exists()


def test_set_goes_only_to_notebooks_declaring_it(tmp_path, caplog, capfd, monkeypatch):
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
    _echo_notebook(tmp_path / "nbs")
    _echo_notebook(tmp_path / "nbs", stem="99_other", params="SMOKE = False\nC = 0")
    profiles = {"p": {"98_echo": {"RUN_DIR": "{out}/runs"}, "99_other": {"SMOKE": True}}}
    out = reproduce.run_profile("p", out_root=tmp_path / "out", profiles=profiles, notebook_dir=tmp_path / "nbs",
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


def test_missing_notebook_is_named(tmp_path):
    with pytest.raises(SystemExit, match=r"notebooks \['97_missing'\].*build_notebooks"):
        reproduce.run_profile("p", out_root=tmp_path, profiles={"p": {"97_missing": {}}}, notebook_dir=tmp_path,
                              log=lambda *a: None)
    assert not (tmp_path / "p").exists()


def test_failure_names_notebook_and_cell(tmp_path):
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "smis", "display_name": "Python (smis)", "language": "python"}
    params = nbformat.v4.new_code_cell('SMOKE = True\nOUT_DIR = ""')
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params, nbformat.v4.new_code_cell("x = 1"),
                nbformat.v4.new_code_cell("raise ValueError('broken on purpose')")]
    (tmp_path / "nbs").mkdir()
    nbformat.write(nb, tmp_path / "nbs" / "99_broken.ipynb")
    with pytest.raises(reproduce.NotebookFailed,
                       match=r"notebook 99_broken failed in cell \d.*ValueError: broken on purpose"):
        reproduce.run_profile("p", out_root=tmp_path / "out", profiles={"p": {"99_broken": {}}},
                              notebook_dir=tmp_path / "nbs", log=lambda *a: None)


def test_unknown_profile_and_only():
    with pytest.raises(SystemExit, match="unknown profile"):
        reproduce.run_profile("nope")
    with pytest.raises(SystemExit, match="matches no notebook"):
        reproduce.run_profile("smoke", only=["77"])


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
    assert json.loads((tmp_path / "run" / "config.json").read_text())["channels_last"] is False
    run(True, 4, CHANNELS_LAST=True)
    assert (tmp_path / "run" / "checkpoints" / first[-1]).stat().st_mtime_ns != stamp  # started anew
    # the parameter reaches the trainer
    assert json.loads((tmp_path / "run" / "config.json").read_text())["channels_last"] is True
    assert (tmp_path / "out" / "samples_this_run.png").exists()
    # FRESH = True while another process holds the run (issue 25): refused, naming it; nothing deleted
    files = sorted(p.relative_to(tmp_path / "run") for p in (tmp_path / "run").rglob("*"))
    with RunDirLock(tmp_path / "run"):
        with pytest.raises(pm.PapermillExecutionError, match=rf"RunDirBusy.*in use by another run \(pid {os.getpid()}"):
            run(True, 4)
        assert sorted(p.relative_to(tmp_path / "run") for p in (tmp_path / "run").rglob("*")) == sorted(
            files + [Path(".lock")])


# ---------------------------------------------------------------------------------------------
# Concurrency, interruption, parameter types, odd paths (issue 25)


def _main_with(monkeypatch, profiles, nb_dir, argv):
    """reproduce.main on `profiles` (notebooks from nb_dir), as the command line runs it."""
    monkeypatch.setattr(reproduce, "PROFILES", profiles)
    monkeypatch.setattr(reproduce, "run_profile", functools.partial(reproduce.run_profile, notebook_dir=nb_dir))
    return reproduce.main(argv)


def test_a_second_run_on_the_same_out_is_refused(tmp_path, monkeypatch, capsys):
    """<out>/<profile> is locked for a run's whole life: a second run on it stops at once, naming the holder,
    before any notebook (nothing of the first run's folder is touched); the lock goes with the run."""
    _echo_notebook(tmp_path / "nbs", params="SMOKE = False")
    profiles = {"p": {"98_echo": {}}}
    with RunDirLock(tmp_path / "out" / "p"):
        with pytest.raises(RunDirBusy, match=rf"out/p is in use by another run \(pid {os.getpid()} .*another --out"):
            reproduce.run_profile("p", out_root=tmp_path / "out", profiles=profiles, notebook_dir=tmp_path / "nbs",
                                  log=lambda *a: None)
        argv = ["--profile", "p", "--out", str(tmp_path / "out")]
        assert _main_with(monkeypatch, profiles, tmp_path / "nbs", argv) == 2
        err = capsys.readouterr().err
        assert err.startswith("[reproduce] ERROR: ") and "in use by another run" in err and "Traceback" not in err
        assert sorted(os.listdir(tmp_path / "out" / "p")) == [".lock"]
    out = reproduce.run_profile("p", out_root=tmp_path / "out", profiles=profiles, notebook_dir=tmp_path / "nbs",
                                log=lambda *a: None)
    assert (out / "98_echo.ipynb").is_file() and not (out / ".lock").exists()
    assert not list(out.glob(".*.ipynb"))                  # the temporary was renamed


def test_a_failed_notebook_is_kept_under_a_failed_name_and_the_last_good_one_stays(tmp_path):
    _echo_notebook(tmp_path / "nbs", params="SMOKE = False\nFAIL = False")
    nb = nbformat.read(tmp_path / "nbs" / "98_echo.ipynb", as_version=4)
    nb.cells.insert(1, nbformat.v4.new_code_cell("assert not FAIL, 'failing on purpose'"))
    nb.cells[-1].source = nb.cells[-1].source.replace("mkdir(parents=True)", "mkdir(parents=True, exist_ok=True)")
    nbformat.write(nb, tmp_path / "nbs" / "98_echo.ipynb")
    run = functools.partial(reproduce.run_profile, "p", out_root=tmp_path / "out", notebook_dir=tmp_path / "nbs",
                            log=lambda *a: None)
    out = run(profiles={"p": {"98_echo": {}}})
    good = (out / "98_echo.ipynb").read_bytes()
    with pytest.raises(reproduce.NotebookFailed, match=r"failing on purpose\. The executed copy with the traceback is "
                                                       rf"{out / '98_echo.failed.ipynb'}"):
        run(profiles={"p": {"98_echo": {"FAIL": True}}})
    assert (out / "98_echo.ipynb").read_bytes() == good      # the finished one is not replaced by a failed run
    assert "failing on purpose" in (out / "98_echo.failed.ipynb").read_text()
    run(profiles={"p": {"98_echo": {}}})
    assert not (out / "98_echo.failed.ipynb").exists() and not list(out.glob(".*.ipynb"))


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_interrupt_leaves_no_half_written_notebook(tmp_path, sig):
    """Ctrl-C (SIGINT to the whole process group, as a terminal sends it) or SIGTERM during a notebook: one line,
    exit 128 + signal, no traceback; the notebook in progress is gone, the finished one kept, the lock released,
    the kernel ended; --resume then skips the finished notebook."""
    nbs = tmp_path / "nbs"
    _echo_notebook(nbs, stem="97_fast", params="SMOKE = False")
    _echo_notebook(nbs, stem="98_slow", params="SMOKE = False")
    nb = nbformat.read(nbs / "98_slow.ipynb", as_version=4)
    nb.cells.append(nbformat.v4.new_code_cell("(p / 'pid').write_text(str(os.getpid()))\nimport time\ntime.sleep(300)"))
    nbformat.write(nb, nbs / "98_slow.ipynb")
    drive = ("import functools, sys\nfrom pathlib import Path\nfrom smis import reproduce\n"
             "reproduce.PROFILES = {'p': {'97_fast': {}, '98_slow': {}}}\n"
             f"reproduce.run_profile = functools.partial(reproduce.run_profile, notebook_dir=Path({str(nbs)!r}))\n"
             "sys.exit(reproduce.main(sys.argv[1:]))\n")
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


def test_set_values_must_fit_the_parameters_type(tmp_path):
    """`--set SIZE=NaN` was accepted (and then ignored under SMOKE): values are checked against the parameter's
    annotation or its default's type before anything runs."""
    for bad, message in ((["01.SIZE=NaN"], r"--set 01\.SIZE=nan: 01_prepare_data declares SIZE as int, and nan is not"),
                         (["SIZE=1.5"], r"SIZE as int, and 1\.5 is not.*its default is 128"),
                         (["01.SMOKE=1"], r"SMOKE as bool, and 1 is not"),
                         (["02.BATCH=\"8\""], r"BATCH as int or None, and '8' is not"),
                         (["02.PRESET_SET=[1]"], r"PRESET_SET as dict"),
                         (["02.VARIANT=3"], r"VARIANT as str, and 3 is not")):
        with pytest.raises(SystemExit, match=message):
            reproduce.plan_profile("smoke", out_root=tmp_path, overrides=bad)
    _, plan = reproduce.plan_profile("smoke", out_root=tmp_path, overrides=["02.STEPS=null", "02.BATCH=4"])
    assert dict(plan)["02_train"]["STEPS"] is None and dict(plan)["02_train"]["BATCH"] == 4
    _echo_notebook(tmp_path / "nbs", params="SMOKE = False\nLR = 0.5\nA: \"Union[int, list]\" = 0\nANY = None")
    for ok in (["LR=1", "A=[1, 2]", "ANY=\"x\""], ["LR=0.25", "A=3", "ANY=[1]"]):
        reproduce.plan_profile("p", out_root=tmp_path, profiles={"p": {"98_echo": {}}}, notebook_dir=tmp_path / "nbs",
                               overrides=ok)
    for bad in (["LR=Infinity"], ["LR=true"], ["A=1.0"], ["A={}"]):
        with pytest.raises(SystemExit, match="is not"):
            reproduce.plan_profile("p", out_root=tmp_path, profiles={"p": {"98_echo": {}}},
                                   notebook_dir=tmp_path / "nbs", overrides=bad)
    assert not (tmp_path / "smoke").exists() and not (tmp_path / "p").exists()


def test_values_a_smoke_notebook_replaces_are_reported(tmp_path):
    sets = ["02.STEPS=50", "04.K=7", "05.TRAIN_STEPS=1"]
    _, plan = reproduce.plan_profile("smoke", out_root=tmp_path, overrides=sets)
    said = {stem: reproduce.smoke_report(stem, params, ROOT / "notebooks" / f"{stem}.ipynb") for stem, params in plan}
    assert said["02_train"] == ("02_train: SMOKE=True sets STEPS itself, so the values given here are not used "
                                "(STEPS=50). Fix: --set 02.SMOKE=false to use them.")
    assert "sets K itself" in said["04_diversity_rq2"]
    assert said["05_ablations"] is None          # TRAIN_STEPS = min(TRAIN_STEPS, 2) uses the value given
    assert said["01_prepare_data"] is None and said["06_interactive_editing"] is None
    _, plan = reproduce.plan_profile("smoke", out_root=tmp_path, overrides=["02.STEPS=50", "02.SMOKE=false"])
    assert reproduce.smoke_report("02_train", dict(plan)["02_train"], ROOT / "notebooks" / "02_train.ipynb") is None
    assert reproduce.smoke_replaced(ROOT / "notebooks" / "02_train.ipynb") >= {"STEPS", "BATCH"}


def test_out_with_tilde_spaces_and_non_ascii(tmp_path, monkeypatch):
    from jupyter_core.paths import jupyter_data_dir

    monkeypatch.setenv("JUPYTER_DATA_DIR", jupyter_data_dir())   # the smis kernel stays found under another HOME
    monkeypatch.setenv("HOME", str(tmp_path / "my home"))
    out, plan = reproduce.plan_profile("smoke", out_root="~/rüns ☃")
    assert out == tmp_path / "my home" / "rüns ☃" / "smoke" and not (ROOT / "~").exists()
    assert dict(plan)["02_train"]["RUN_DIR"] == f"{out}/runs/02_clvae"
    _echo_notebook(tmp_path / "nbs")
    out = reproduce.run_profile("p", out_root="~/rüns ☃", profiles={"p": {"98_echo": {"RUN_DIR": "{out}/r ü"}}},
                                notebook_dir=tmp_path / "nbs", log=lambda *a: None, overrides=['98.B="{out}/ä b"'])
    got = json.loads((out / "98_echo" / "params.json").read_text())
    assert got["B"] == f"{out}/ä b" and got["RUN_DIR"] == f"{out}/r ü" and (out / "98_echo.ipynb").is_file()


@pytest.mark.parametrize("where", ["repository root", "/"])
def test_out_at_the_repository_root_or_slash_touches_nothing_else(tmp_path, monkeypatch, capsys, where):
    """--out at the repository root or at /: the run writes only its <out>/<profile> folder; every other entry of
    the out folder (and the notebooks it reads) is left as it was. Where / is not writable (a normal user), the run
    stops with one line instead."""
    base = ROOT if where == "repository root" else Path("/")
    profile = f"zz_issue25_{os.getpid()}"
    _echo_notebook(tmp_path / "nbs", params="SMOKE = False")
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
