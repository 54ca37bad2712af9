"""smis.reproduce.parameters: a notebook's parameters cell (names, literal defaults, types a --set value must fit,
what SMOKE replaces) and the parsing of --set items."""
import json

import nbformat
import pytest

from smis.reproduce.parameters import (declared_parameters, default_parameters, parse_set_arguments, smoke_replaced,
                                       smoke_report)
from smis.reproduce.plan import plan_profile
from smis.utils import project_root

ROOT = project_root()


def _params_of(stem: str) -> list[str]:
    return declared_parameters(ROOT / "notebooks" / f"{stem}.ipynb")


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


def test_declared_parameters_reads_the_tagged_cell(tmp_path, echo_notebook):
    echo_notebook(tmp_path, params="SMOKE = False\nA: int = 0   # typed\nB, C = 1, 2\nif SMOKE:\n    D = 3")
    assert declared_parameters(tmp_path / "98_echo.ipynb") == ["SMOKE", "A", "B", "C", "OUT_DIR"]
    assert "N_TRAIN" in _params_of("01_prepare_data") and "SMOKE" in _params_of("06_interactive_editing")


def test_default_parameters_are_the_literals_of_the_tagged_cell(tmp_path, echo_notebook):
    """What a run gets for a parameter its profile leaves alone (the preflight reads it): literals only."""
    echo_notebook(tmp_path, params="SMOKE = False\nA: int = 3\nB = [1, {'x': None}]\nC = __import__('os').sep\n"
                                    "D = E = 1")
    assert default_parameters(tmp_path / "98_echo.ipynb") == {"SMOKE": False, "A": 3, "B": [1, {"x": None}],
                                                              "OUT_DIR": ""}
    nb02 = default_parameters(ROOT / "notebooks" / "02_train.ipynb")
    assert nb02["SPLIT"] == "test" and nb02["PRESET_SET"] == {} and nb02["STEPS"] == 300


def test_set_values_must_fit_the_parameters_type(tmp_path, echo_notebook):
    """`--set SIZE=NaN` was accepted (and then ignored under SMOKE): values are checked against the parameter's
    annotation or its default's type before anything runs."""
    for bad, message in ((["01.SIZE=NaN"], r"--set 01\.SIZE=nan: 01_prepare_data declares SIZE as int, and nan is not"),
                         (["SIZE=1.5"], r"SIZE as int, and 1\.5 is not.*its default is 128"),
                         (["01.SMOKE=1"], r"SMOKE as bool, and 1 is not"),
                         (["02.BATCH=\"8\""], r"BATCH as int or None, and '8' is not"),
                         (["02.PRESET_SET=[1]"], r"PRESET_SET as dict"),
                         (["02.VARIANT=3"], r"VARIANT as str, and 3 is not")):
        with pytest.raises(SystemExit, match=message):
            plan_profile("smoke", out_root=tmp_path, overrides=bad)
    _, plan = plan_profile("smoke", out_root=tmp_path, overrides=["02.STEPS=null", "02.BATCH=4"])
    assert dict(plan)["02_train"]["STEPS"] is None and dict(plan)["02_train"]["BATCH"] == 4
    echo_notebook(tmp_path / "nbs", params="SMOKE = False\nLR = 0.5\nA: \"Union[int, list]\" = 0\nANY = None")
    for ok in (["LR=1", "A=[1, 2]", "ANY=\"x\""], ["LR=0.25", "A=3", "ANY=[1]"]):
        plan_profile("p", out_root=tmp_path, profiles={"p": {"98_echo": {}}}, notebook_dir=tmp_path / "nbs",
                     overrides=ok)
    for bad in (["LR=Infinity"], ["LR=true"], ["A=1.0"], ["A={}"]):
        with pytest.raises(SystemExit, match="is not"):
            plan_profile("p", out_root=tmp_path, profiles={"p": {"98_echo": {}}},
                         notebook_dir=tmp_path / "nbs", overrides=bad)
    assert not (tmp_path / "smoke").exists() and not (tmp_path / "p").exists()


def test_values_a_smoke_notebook_replaces_are_reported(tmp_path):
    sets = ["02.STEPS=50", "04.K=7", "05.TRAIN_STEPS=1"]
    _, plan = plan_profile("smoke", out_root=tmp_path, overrides=sets)
    said = {stem: smoke_report(stem, params, ROOT / "notebooks" / f"{stem}.ipynb") for stem, params in plan}
    assert said["02_train"] == ("02_train: SMOKE=True sets STEPS itself, so the values given here are not used "
                                "(STEPS=50). Fix: --set 02.SMOKE=false to use them.")
    assert "sets K itself" in said["04_diversity_rq2"]
    assert said["05_ablations"] is None          # TRAIN_STEPS = min(TRAIN_STEPS, 2) uses the value given
    assert said["01_prepare_data"] is None and said["06_interactive_editing"] is None
    _, plan = plan_profile("smoke", out_root=tmp_path, overrides=["02.STEPS=50", "02.SMOKE=false"])
    assert smoke_report("02_train", dict(plan)["02_train"], ROOT / "notebooks" / "02_train.ipynb") is None
    assert smoke_replaced(ROOT / "notebooks" / "02_train.ipynb") >= {"STEPS", "BATCH"}


def test_set_arguments_are_split_into_prefix_name_and_json_value():
    """`--set NAME=VALUE` / `NN.NAME=VALUE`: the value read as JSON, else kept as the string typed; an item without
    NAME= is refused with the form to write."""
    assert parse_set_arguments(["K=20", "05.MODELS=a:b.pt", "02.PRESET_SET={\"ngf\": 16}", "A=[1, 2]"]) == [
        ("", "K", 20), ("05", "MODELS", "a:b.pt"), ("02", "PRESET_SET", {"ngf": 16}), ("", "A", [1, 2])]
    assert parse_set_arguments(None) == []
    with pytest.raises(SystemExit, match="NAME=VALUE"):
        parse_set_arguments(["K"])
    with pytest.raises(SystemExit, match=r"--set '=3': write NAME=VALUE or NN\.NAME=VALUE"):
        parse_set_arguments(["=3"])


def test_a_parameters_cell_missing_doubled_or_not_python_is_named(tmp_path, echo_notebook):
    """reproduce needs exactly one cell tagged `parameters`, in Python: otherwise SystemExit naming the file and
    the fix, from each reader of the cell."""
    echo_notebook(tmp_path)
    path = tmp_path / "98_echo.ipynb"
    nb = json.loads(path.read_text())
    nb["cells"][1]["metadata"]["tags"] = ["parameters"]
    path.write_text(json.dumps(nb))
    for read in (declared_parameters, default_parameters):
        with pytest.raises(SystemExit, match=rf"{path}: 2 cells tagged 'parameters', reproduce needs exactly one"):
            read(path)
    nb["cells"][1]["metadata"]["tags"] = []
    nb["cells"][0]["source"] = "A = (\n"
    path.write_text(json.dumps(nb))
    with pytest.raises(SystemExit, match=rf"{path}: its parameters cell is not Python .*Fix the cell"):
        declared_parameters(path)
