"""smis.reproduce.preflight: what it checks follows each notebook's declaration (NOTEBOOK_INPUTS), a notebook
without one is refused, and a run's steps are those of its newest checkpoint. The paper profiles' inputs, each
way one falls short, and the estimates of the run notebook 02 trains: tests/test_paper_profiles.py."""
import json

import pytest
import torch

from smis.checkpoint import Checkpointer, list_checkpoints
from smis.reproduce.plan import plan_profile
from smis.reproduce.preflight import preflight


def _what(report, state=None) -> list[tuple[str, tuple[str, ...]]]:
    return [(i.what, i.used_by) for i in report.inputs if state is None or i.state == state]


def test_notebook_05_reads_the_train_split_when_it_trains_and_its_models_when_it_loads(tmp_path, ade20k_root):
    """05 declares TRAIN_STEPS as what makes it train and MODELS (restricted by VARIANTS) as what it loads: with
    TRAIN_STEPS > 0 the preflight checks the training split and no model; with 0, the models and only the split it
    evaluates."""
    sets = [f"DATA_ROOT={ade20k_root}", f"05.MODELS=clvae:official:ade20k:{tmp_path}/w,no_classwise:{tmp_path}/r1,"
            f"clvae_L3:{tmp_path}/r2,unlisted:{tmp_path}/r3", "05.VARIANTS=clvae,no_classwise,clvae_L3"]
    _, plan = plan_profile("ade20k", ["05"], tmp_path, overrides=sets + ["05.TRAIN_STEPS=3"])
    trains = preflight("ade20k", plan, sample=1, strict=False)
    assert _what(trains)[:2] == [("dataset ade20k, split train", ("05_ablations",)),
                                 ("dataset ade20k, split val", ("05_ablations",))]
    assert not [w for w, _ in _what(trains) if w.startswith(("run ", "published"))]
    _, plan = plan_profile("ade20k", ["05"], tmp_path, overrides=sets)
    loads = preflight("ade20k", plan, sample=1, strict=False)
    assert [w for w, _ in _what(loads) if w.startswith("dataset")] == ["dataset ade20k, split val"]
    assert [w for w, _ in _what(loads, "missing")] == ["published generator (ade20k)", "published encoder (ade20k)",
                                                       "run no_classwise", "run clvae_L3"]   # not `unlisted`


def test_notebook_06_reads_its_two_model_files(tmp_path):
    """06 declares MODEL and BASELINE as one model file each, checked under the parameter's name; an empty one
    is not read."""
    _, plan = plan_profile("demo", ["06"], tmp_path)
    assert _what(preflight("demo", plan), "ok")[:2] == [("model model", ("06_interactive_editing",)),
                                                        ("model baseline", ("06_interactive_editing",))]
    _, plan = plan_profile("demo", ["06"], tmp_path, overrides=['06.BASELINE=""', f"06.MODEL={tmp_path}/none.pt"])
    report = preflight("demo", plan)
    assert _what(report, "missing") == [("model model", ("06_interactive_editing",))]
    missing = [i for i in report.inputs if i.state == "missing"][0]
    assert "train_demo_models.py" in missing.detail and "--run-dir" not in missing.detail     # a file, not a run
    assert not [w for w, _ in _what(report) if "baseline" in w]


def test_a_notebook_without_a_declaration_is_refused(tmp_path, echo_notebook):
    echo_notebook(tmp_path / "nbs")
    _, plan = plan_profile("p", None, tmp_path, profiles={"p": {"98_echo": {"RUN_DIR": "{out}/runs"}}},
                           notebook_dir=tmp_path / "nbs")
    with pytest.raises(SystemExit, match=r"notebook 98_echo declares no inputs.*NOTEBOOK_INPUTS in "
                                         r"smis/reproduce/profiles\.py"):
        preflight("p", plan, notebook_dir=tmp_path / "nbs")


def test_the_steps_of_a_run_are_its_newest_checkpoints(tmp_path, ade20k_root):
    """The one checkpoint listing (smis.checkpoint.list_checkpoints): by step, not by name, other files ignored;
    the preflight reports the newest step of a run against the schedule."""
    run = tmp_path / "runs" / "ade20k_no_classwise"
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.json").write_text(json.dumps({"variant": "no_classwise", "preset": "ade20k",
                                                 "resolved": {"global_batch": 32}}))
    for name in ("step_00000150.pt", "step_00000020.pt", "step_latest.pt", ".step_00000300.pt.x.tmp"):
        torch.save({}, run / "checkpoints" / name)
    assert list_checkpoints(run) == [run / "checkpoints" / "step_00000020.pt", run / "checkpoints" / "step_00000150.pt"]
    assert Checkpointer(run).list() == list_checkpoints(run) and list_checkpoints(tmp_path) == []
    _, plan = plan_profile("ade20k", ["05"], tmp_path, overrides=[f"DATA_ROOT={ade20k_root}",
                                                                  f"05.MODELS=no_classwise:{run}"])
    line = [i for i in preflight("ade20k", plan, sample=1).inputs if i.what == "run no_classwise"][0]
    assert line.state == "partial" and line.detail.startswith("partial: 150 of 200 steps of the preset's schedule")
