"""smis.reproduce.plan: a run's plan (profile, --only and --set checked before any folder exists, odd --out paths),
and the GPU-hour estimates read from the measured speeds in benchmarks/results."""
import json

import pytest

from smis.config import PRESETS
from smis.reproduce.plan import (COST_VS_ADE20K, SPEED_SOURCES, measured_speeds, missing_speeds, no_estimate,
                                 plan_profile, training_hours)
from smis.reproduce.preflight import preflight
from smis.reproduce.runner import run_profile
from smis.utils import project_root

ROOT = project_root()


def test_unknown_profile_and_only():
    with pytest.raises(SystemExit, match="unknown profile"):
        run_profile("nope")
    with pytest.raises(SystemExit, match="matches no notebook"):
        run_profile("smoke", only=["77"])


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
def test_bad_arguments_are_refused_before_any_folder(tmp_path, profile, overrides, message, echo_notebook):
    """A typo'd --set name, a --set or profile parameter no notebook declares, a written folder outside the
    run: each a SystemExit naming it, raised before the run's folder exists (nothing executed)."""
    echo_notebook(tmp_path / "nbs")
    with pytest.raises(SystemExit, match=message):
        run_profile("p", out_root=tmp_path / "x", profiles={"p": profile}, notebook_dir=tmp_path / "nbs",
                    log=lambda *a: None, overrides=overrides)
    assert not (tmp_path / "x").exists()


def test_missing_notebook_is_named(tmp_path):
    with pytest.raises(SystemExit, match=r"notebooks \['97_missing'\].*build_notebooks"):
        run_profile("p", out_root=tmp_path, profiles={"p": {"97_missing": {}}}, notebook_dir=tmp_path,
                    log=lambda *a: None)
    assert not (tmp_path / "p").exists()


def test_out_with_tilde_spaces_and_non_ascii(tmp_path, monkeypatch, echo_notebook):
    from jupyter_core.paths import jupyter_data_dir

    monkeypatch.setenv("JUPYTER_DATA_DIR", jupyter_data_dir())   # the smis kernel stays found under another HOME
    monkeypatch.setenv("HOME", str(tmp_path / "my home"))
    out, plan = plan_profile("smoke", out_root="~/rüns ☃")
    assert out == tmp_path / "my home" / "rüns ☃" / "smoke" and not (ROOT / "~").exists()
    assert dict(plan)["02_train"]["RUN_DIR"] == f"{out}/runs/02_clvae"
    echo_notebook(tmp_path / "nbs")
    out = run_profile("p", out_root="~/rüns ☃", profiles={"p": {"98_echo": {"RUN_DIR": "{out}/r ü"}}},
                      notebook_dir=tmp_path / "nbs", log=lambda *a: None, overrides=['98.B="{out}/ä b"'])
    got = json.loads((out / "98_echo" / "params.json").read_text())
    assert got["B"] == f"{out}/ä b" and got["RUN_DIR"] == f"{out}/r ü" and (out / "98_echo.ipynb").is_file()


# ---------------------------------------------------------------------------------------------
# GPU estimates


def test_gpu_estimates_come_from_the_measured_speed():
    """The speeds are the measured ones (benchmarks), the hours follow from them and the cost ratio, and the
    preflight's estimate for notebook 02's run is the schedule's images at that speed."""
    measured = json.loads((ROOT / "benchmarks" / "results" / "train_step_ade20k_cuda.json").read_text())
    fp32 = [r for r in measured["results"] if r["batch"] == 16 and r["config"] == "fp32"][0]
    speeds = measured_speeds()
    assert round(fp32["images_per_s"], 1) == speeds["fp32"]
    assert f"**{speeds['bf16']}**" in (ROOT / "benchmarks" / "RESULTS.md").read_text()
    cpu = json.loads((ROOT / "benchmarks" / "results" / "train_step_ade20k_cpu_b1.json").read_text())
    assert cpu["results"][0]["images_per_s"] == speeds["cpu"]
    assert speeds == {"fp32": 60.8, "bf16": 88.7, "cpu": 0.144} and missing_speeds() == []
    h = training_hours("ade20k", round(60.8 * 3600))
    assert h["fp32"] == pytest.approx(1.0) and h["bf16"] == pytest.approx(60.8 / 88.7)
    assert training_hours("deepfashion", 1000)["fp32"] == pytest.approx(
        2.29 * training_hours("ade20k", 1000)["fp32"])
    assert training_hours("no_such_preset", 1000) is None
    assert set(COST_VS_ADE20K) == set(PRESETS)


def _speed_file(folder, name, rows):
    folder.mkdir(exist_ok=True)
    (folder / name).write_text(json.dumps({"benchmark": "test", "results": rows}))


def test_speeds_are_read_from_the_rows_the_sources_name(tmp_path):
    """Each speed is the images_per_s of the one row of its file with the batch and config SPEED_SOURCES names,
    to three significant figures; the hours follow from the JSON, not from numbers written in the code."""
    (fp32_file, fp32_batch, _), (bf16_file, bf16_batch, bf16_config), (cpu_file, _, _) = (
        SPEED_SOURCES["fp32"], SPEED_SOURCES["bf16"], SPEED_SOURCES["cpu"])
    _speed_file(tmp_path, fp32_file, [{"batch": 4, "config": "fp32", "images_per_s": 1.0},
                                      {"batch": fp32_batch, "config": "fp32", "images_per_s": 123.456}])
    _speed_file(tmp_path, bf16_file, [{"batch": bf16_batch, "config": bf16_config, "images_per_s": 200.04}])
    _speed_file(tmp_path, cpu_file, [{"batch": 1, "config": "fp32", "images_per_s": 0.31249}])
    assert measured_speeds(tmp_path) == {"fp32": 123.0, "bf16": 200.0, "cpu": 0.312}
    assert missing_speeds(tmp_path) == []
    h = training_hours("ade20k", 3600 * 123, results=tmp_path)
    assert h["fp32"] == pytest.approx(1.0) and h["bf16"] == pytest.approx(123 / 200) and h["cpu"] == pytest.approx(
        123 / 0.312)
    assert training_hours("gta5", 3600 * 123, results=tmp_path)["fp32"] == pytest.approx(COST_VS_ADE20K["gta5"])


def test_a_speed_not_measured_gives_no_estimate_and_says_which(tmp_path, monkeypatch, ade20k_root):
    """A missing file or a file without the named row: no number is made up; the estimate reads "no estimate"
    with the file and the row it lacks, in the preflight too."""
    fp32_file, batch, config = SPEED_SOURCES["fp32"]
    _speed_file(tmp_path, fp32_file, [{"batch": 4, "config": "fp32", "images_per_s": 1.0}])     # no batch-16 row
    _speed_file(tmp_path, SPEED_SOURCES["bf16"][0], [{"batch": 16, "config": SPEED_SOURCES["bf16"][2],
                                                      "images_per_s": 88.661}])
    missing = missing_speeds(tmp_path)                                   # the CPU file is absent
    assert len(missing) == 2 and set(measured_speeds(tmp_path)) == {"bf16"}
    assert missing[0] == (f"fp32: {tmp_path / fp32_file} has 0 rows of batch {batch}, config {config!r}, with a "
                          "positive images_per_s (want one)")
    assert missing[1].startswith(f"cpu: {tmp_path / SPEED_SOURCES['cpu'][0]} is unreadable (FileNotFoundError)")
    assert training_hours("ade20k", 1000, results=tmp_path) is None
    assert no_estimate(tmp_path) == f"no estimate (no measured speed: {missing[0]}; {missing[1]})"
    assert no_estimate() == "no estimate"
    monkeypatch.setattr("smis.reproduce.plan.BENCHMARK_RESULTS", tmp_path)
    _, planned = plan_profile("ade20k", ["02"], tmp_path, overrides=[f"DATA_ROOT={ade20k_root}"])
    report = preflight("ade20k", planned)
    todo = [i for i in report.inputs if i.state == "todo"]
    assert len(todo) == 1 and todo[0].gpu_hours is None
    assert todo[0].detail == f"will train 200 steps of batch 32: no estimate (no measured speed: {'; '.join(missing)})"
    assert "training still to do" not in report.to_text()
