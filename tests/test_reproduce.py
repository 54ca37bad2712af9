"""The notebooks run headlessly, the reproduce command gathers their tables, and failures are named."""
import json
import subprocess
import sys

import nbformat
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


def test_smoke_profile_end_to_end(tmp_path):
    out = reproduce.run_profile("smoke", out_root=tmp_path, log=lambda *a: None)
    report = (out / "REPORT.md").read_text()
    assert "## 01_prepare_data" in report and "factor_recovery" in report
    for name in ["samples.png", "label_statistics.png", "one_mask_many_images.png", "factor_recovery.csv"]:
        assert (out / "01_prepare_data" / name).stat().st_size > 100, name
    nb = nbformat.read(out / "01_prepare_data.ipynb", as_version=4)
    assert nb.metadata.papermill.parameters["SMOKE"] is True
    state = json.loads((out / ".completed.json").read_text())
    assert set(state) == set(reproduce.PROFILES["smoke"])
    # --resume skips what is done
    said = []
    reproduce.run_profile("smoke", out_root=tmp_path, resume=True, log=said.append)
    assert any("skipped" in s for s in said)


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
