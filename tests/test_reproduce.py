"""The notebooks run headlessly, the reproduce command gathers their tables, and failures are named."""
import json
import os
import re
import subprocess
import sys

import nbformat
import pandas as pd
import pytest

from smis import reproduce
from smis.utils import project_root

ROOT = project_root()


def test_notebooks_are_built_from_their_sources():
    r = subprocess.run([sys.executable, "scripts/build_notebooks.py", "--check"], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, "stale notebooks, run `python scripts/build_notebooks.py`:\n" + r.stdout


def test_each_notebook_has_one_parameters_cell_first_in_code():
    for path in sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        code = [c for c in nb.cells if c.cell_type == "code"]
        tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
        assert len(tagged) == 1 and code[0] is tagged[0], path.name
        assert "SMOKE" in tagged[0].source, path.name
        assert nb.cells[0].cell_type == "markdown" and "In this notebook we" in nb.cells[0].source, path.name


def _params_of(stem: str) -> set[str]:
    nb = nbformat.read(ROOT / "notebooks" / f"{stem}.ipynb", as_version=4)
    cell = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    return {line.split("=")[0].strip() for line in cell.source.splitlines() if re.match(r"^[A-Z][A-Z0-9_]*\s*=", line)}


@pytest.mark.parametrize("profile", sorted(reproduce.PROFILES))
def test_profiles_name_existing_notebooks_and_parameters(profile):
    for stem, params in reproduce.PROFILES[profile].items():
        assert (ROOT / "notebooks" / f"{stem}.ipynb").exists(), f"{profile}: notebook {stem} is not built"
        unknown = set(params) - _params_of(stem)
        assert not unknown, f"{profile}: {stem} has no parameters {sorted(unknown)}"


@pytest.mark.slow
def test_smoke_profile_end_to_end(tmp_path):
    out = reproduce.run_profile("smoke", out_root=tmp_path, log=lambda *a: None)
    report = (out / "REPORT.md").read_text()
    assert "## 01_prepare_data" in report and "factor_recovery" in report
    for name in ["samples.png", "label_statistics.png", "one_mask_many_images.png", "factor_recovery.csv"]:
        assert (out / "01_prepare_data" / name).stat().st_size > 100, name
    expected = {"03_reconstruction_rq1": ["table1_reconstruction.csv", "fig6_reconstructions.png"],
                "04_diversity_rq2": ["table2_diversity_top1.csv", "paired_clvae_vs_baseline.csv", "per_class_diversity.csv",
                                     "factors_in_distribution.csv", "style_guided_factors.csv", "fig7_samples_clvae.png",
                                     "fig10_hist_diversity.png"],
                "05_ablations": ["table5_ablations.csv", "fig11_ablation_samples.png"]}
    for stem, names in expected.items():
        assert f"## {stem}" in report, stem
        for name in names:
            assert (out / stem / name).stat().st_size > 100, f"{stem}/{name}"
    table2 = pd.read_csv(out / "04_diversity_rq2" / "table2_diversity_top1.csv", index_col=0)
    assert list(table2.index) == ["clvae", "gaugan_vae"]
    lpips_cols = [c for c in table2.columns if c.startswith("diversity (lpips_")]
    assert len(lpips_cols) == 2 and (table2[lpips_cols[0]] > 0).all()
    if "lpips_effnet" in lpips_cols[0]:      # a fallback metric never appears under the paper's name
        assert "lpips_alex" not in report and "(fid)" not in report
    table5 = pd.read_csv(out / "05_ablations" / "table5_ablations.csv", index_col=0)
    assert len(table5) == 5 and "trained here" in (out / "05_ablations" / "table5_ablations.md").read_text()
    nb = nbformat.read(out / "01_prepare_data.ipynb", as_version=4)
    assert nb.metadata.papermill.parameters["SMOKE"] is True
    state = json.loads((out / ".completed.json").read_text())
    assert set(state) == set(reproduce.PROFILES["smoke"])
    # --resume skips what is done
    said = []
    reproduce.run_profile("smoke", out_root=tmp_path, resume=True, log=said.append)
    assert sum("skipped" in s for s in said) == len(reproduce.PROFILES["smoke"])


def _echo_notebook(folder, stem="98_echo"):
    """A notebook that writes its parameters to OUT_DIR/params.json."""
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "smis", "display_name": "Python (smis)", "language": "python"}
    params = nbformat.v4.new_code_cell('SMOKE = False\nA = 0\nB = ""\nRUN = ""\nOUT_DIR = ""')
    params.metadata["tags"] = ["parameters"]
    body = nbformat.v4.new_code_cell("import json, os, pathlib\np = pathlib.Path(OUT_DIR); p.mkdir(parents=True)\n"
                                     "(p / 'params.json').write_text(json.dumps(dict(A=A, B=B, RUN=RUN, "
                                     "BLAS=os.environ.get('OPENBLAS_NUM_THREADS'), OMP=os.environ.get('OMP_NUM_THREADS'), "
                                     "WAIT=os.environ.get('OMP_WAIT_POLICY'))))")
    nb.cells = [params, body]
    folder.mkdir(exist_ok=True)
    nbformat.write(nb, folder / f"{stem}.ipynb")


def test_overrides_and_out_placeholder(tmp_path):
    _echo_notebook(tmp_path / "nbs")
    omp_before = os.environ.get("OMP_NUM_THREADS")
    profiles = {"p": {"98_echo": {"A": 1, "B": "b", "RUN": "{out}/runs"}}}
    out = reproduce.run_profile("p", out_root=tmp_path / "out", profiles=profiles, notebook_dir=tmp_path / "nbs",
                                log=lambda *a: None, overrides=["A=[2, 3]", '98.B="x"'], threads=1)
    got = json.loads((out / "98_echo" / "params.json").read_text())
    assert got["A"] == [2, 3] and got["B"] == "x" and got["RUN"] == f"{out}/runs"
    assert got["BLAS"] is not None and got["WAIT"] is not None and got["OMP"] == "1"
    assert os.environ.get("OMP_NUM_THREADS") == omp_before          # the caller's environment is restored
    assert "98_echo" in json.loads((out / "timings.json").read_text())
    with pytest.raises(SystemExit, match="match no notebook"):
        reproduce.run_profile("p", out_root=tmp_path / "out", profiles=profiles, notebook_dir=tmp_path / "nbs",
                              log=lambda *a: None, overrides=["05.K=3"])
    with pytest.raises(SystemExit, match="NAME=VALUE"):
        reproduce.parse_overrides(["K"])


def test_missing_notebook_is_named(tmp_path):
    with pytest.raises(SystemExit, match=r"notebooks \['97_missing'\].*build_notebooks"):
        reproduce.run_profile("p", out_root=tmp_path, profiles={"p": {"97_missing": {}}}, notebook_dir=tmp_path,
                              log=lambda *a: None)


def test_failure_names_notebook_and_cell(tmp_path):
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "smis", "display_name": "Python (smis)", "language": "python"}
    params = nbformat.v4.new_code_cell("SMOKE = True")
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params, nbformat.v4.new_code_cell("x = 1"), nbformat.v4.new_code_cell("raise ValueError('broken on purpose')")]
    (tmp_path / "nbs").mkdir()
    nbformat.write(nb, tmp_path / "nbs" / "99_broken.ipynb")
    with pytest.raises(reproduce.NotebookFailed, match=r"notebook 99_broken failed in cell \d.*ValueError: broken on purpose"):
        reproduce.run_profile("p", out_root=tmp_path / "out", profiles={"p": {"99_broken": {}}},
                              notebook_dir=tmp_path / "nbs", log=lambda *a: None)


def test_unknown_profile_and_only():
    with pytest.raises(SystemExit, match="unknown profile"):
        reproduce.run_profile("nope")
    with pytest.raises(SystemExit, match="matches no notebook"):
        reproduce.run_profile("smoke", only=["77"])


SAMPLES = ROOT.parent / "shared" / "samples"


@pytest.mark.skipif(not (SAMPLES / "ade20k").is_dir(), reason="../shared/samples is not beside this clone")
def test_prepare_data_notebook_checks_a_real_dataset(tmp_path):
    import papermill as pm

    out = tmp_path / "nb01"
    pm.execute_notebook(str(ROOT / "notebooks" / "01_prepare_data.ipynb"), str(tmp_path / "nb01.ipynb"), kernel_name="smis",
                        cwd=str(ROOT), progress_bar=False,
                        parameters={"SMOKE": True, "OUT_DIR": str(out), "DATA_DIR": str(tmp_path / "ss"),
                                    "DATA_ROOT": str(SAMPLES / "ade20k"), "DATA_FORMAT": "ade20k"})
    report = json.loads((out / "check_ade20k.json").read_text())
    assert report["ok"] is True
    assert (out / "samples_ade20k.png").stat().st_size > 1000


@pytest.mark.slow
def test_train_notebook_fresh_and_continue(tmp_path):
    """02_train: FRESH=True starts the run anew; FRESH=False continues it (a long run is never wiped)."""
    import papermill as pm

    def run(fresh, steps, **extra):
        pm.execute_notebook(str(ROOT / "notebooks" / "02_train.ipynb"), str(tmp_path / "nb02.ipynb"), kernel_name="smis",
                            cwd=str(ROOT), progress_bar=False,
                            parameters={"SMOKE": True, "RUN_DIR": str(tmp_path / "run"), "OUT_DIR": str(tmp_path / "out"),
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
    assert json.loads((tmp_path / "run" / "config.json").read_text())["channels_last"] is True  # the parameter reaches the trainer
    assert (tmp_path / "out" / "samples_this_run.png").exists()
