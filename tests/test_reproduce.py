"""The notebooks run headlessly, the reproduce command gathers their tables, and failures are named."""
import json
import os
import subprocess
import sys

import nbformat
import pandas as pd
import pytest

from smis import reproduce
from smis.utils import project_root

ROOT = project_root()


def test_notebooks_are_built_from_their_sources():
    r = subprocess.run([sys.executable, "scripts/build_notebooks.py", "--check"], cwd=ROOT, capture_output=True,
                       text=True)
    assert r.returncode == 0, "stale notebooks, run `python scripts/build_notebooks.py`:\n" + r.stdout


def test_each_notebook_has_one_parameters_cell_first_in_code():
    for path in sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb")):
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
    for path in sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb")):
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


ECHO_PARAMS = 'SMOKE = False\nA = 0\nB = ""\nRUN_DIR = ""'


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


def test_set_goes_only_to_notebooks_declaring_it(tmp_path, caplog, capfd):
    """A global --set NAME reaches the notebooks that declare NAME and no other (no papermill "Passed unknown
    parameter" warning); the kernel runs without its "TCP without encryption" warning."""
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
    assert "without encryption" not in capfd.readouterr().err


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
