"""The paper profiles (ade20k, deepfashion, gta5) of `python -m smis.reproduce`: the preflight that lists every
input and its state (`--check`, and before every paper run), and, slow, each profile end to end (notebooks 01-05)
on the generated datasets with published-format random weights and ablation runs trained for 2 steps."""
import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

from smis.reproduce import profiles
from smis.reproduce.cli import main
from smis.reproduce.plan import plan_profile
from smis.reproduce.preflight import Input, PreflightFailed, preflight
from smis.reproduce.runner import run_profile
from smis.utils import project_root

ROOT = project_root()
PAPER = profiles.PAPER_PROFILES
ABLATIONS = profiles.ABLATIONS.split(",")[1:]                # the variants besides clvae that notebook 05 reads
TINY = ["ngf=8", "nef=8", "ndf=8", "spade_hidden=16", "z_dim=8"]   # preset fields of the 2-step test runs
EVAL_SPLIT = {"ade20k": "val", "deepfashion": "test", "gta5": "test"}


def _inputs(dataset: str, weights: Path, runs: Path, data_root: Path) -> list[str]:
    """`--set` items pointing a paper profile at inputs under the test's folders (the profiles' defaults are
    the repository's data/, checkpoints/official/ and outputs/runs/)."""
    clvae = f"clvae:official:{dataset}:{weights}"
    return [f"DATA_ROOT={data_root}", f"MODELS={clvae},gaugan_vae:{{out}}/runs/{dataset}_gaugan_vae",
            "05.MODELS=" + ",".join([clvae] + [f"{v}:{runs}/{dataset}_{v}" for v in ABLATIONS])]


def _lines(text: str, state: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip().startswith(state)]


def _finished_run(folder: Path, variant: str, dataset: str, step: int, batch: int,
                  overrides: dict | None = None) -> Path:
    """A training run folder as `smis.train` leaves it, for the preflight (which reads config.json and the newest
    checkpoint's name, never the weights): config.json with the options it records and checkpoints/step_N.pt."""
    (folder / "checkpoints").mkdir(parents=True)
    config = {"variant": variant, "preset": dataset, "preset_overrides": overrides or {}, "dataset": dataset,
              "batch_size": None, "resolved": {"global_batch": batch, "total_steps": step}}
    (folder / "config.json").write_text(json.dumps(config))
    torch.save({"step": step}, folder / "checkpoints" / f"step_{step:08d}.pt")
    return folder


# ---------------------------------------------------------------------------------------------
# --check


@pytest.mark.parametrize("profile", PAPER)
def test_check_names_every_missing_input(tmp_path, capsys, profile):
    """With no dataset, no published weights and no ablation runs, --check exits 1 and names each of them (the
    folder, latest_net_G.pth and latest_net_E.pth, every run), and creates nothing."""
    data = tmp_path / "data" / profile
    rc = main(["--profile", profile, "--check", "--out", str(tmp_path / "out"), "--set",
               *_inputs(profile, tmp_path / "weights", tmp_path / "runs", data)])
    text = capsys.readouterr().out
    assert rc == 1
    missing = _lines(text, "MISSING")
    assert any(f"{data}: no such folder" in line for line in missing), text
    for name in ("latest_net_G.pth", "latest_net_E.pth"):
        assert any(f"{tmp_path / 'weights' / name}: not found" in line for line in missing), name
    for v in ABLATIONS:
        assert any(line.startswith(f"MISSING  run {v}: {tmp_path / 'runs' / f'{profile}_{v}'}: no such folder")
                   and f"python -m smis.train --variant {v} --preset {profile}" in line for line in missing), v
    assert len(missing) == 1 + 2 + len(ABLATIONS), text
    assert "result: INCOMPLETE (7 missing); a run stops before its first notebook" in text
    assert not (tmp_path / "out").exists()


@pytest.mark.skipif((ROOT / "data" / "ADEChallengeData2016").exists() or (ROOT / "checkpoints" / "official").exists()
                    or any((ROOT / "outputs").glob("runs/ade20k_*")) or (ROOT / "outputs" / "ade20k").exists(),
                    reason="this clone holds ADE20K inputs under data/, checkpoints/official/ or outputs/")
def test_check_on_the_default_paths_of_a_fresh_clone():
    """`python -m smis.reproduce --profile ade20k --check` in a clone without the inputs: exit 1, each default
    path named (data/ADEChallengeData2016, checkpoints/official/ade20k/latest_net_{G,E}.pth, outputs/runs/*)."""
    r = subprocess.run([sys.executable, "-m", "smis.reproduce", "--profile", "ade20k", "--check"], cwd=ROOT,
                       capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=300)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "MISSING  dataset ade20k (splits train, val): data/ADEChallengeData2016: no such folder" in r.stdout
    assert "MISSING  published generator (ade20k): checkpoints/official/ade20k/latest_net_G.pth: not found" in r.stdout
    assert "MISSING  published encoder (ade20k): checkpoints/official/ade20k/latest_net_E.pth: not found" in r.stdout
    assert all(f"run {v}: outputs/runs/ade20k_{v}: no such folder" in r.stdout for v in ABLATIONS)
    assert "todo     run gaugan_vae (notebook 02 trains it): outputs/ade20k/runs/ade20k_gaugan_vae" in r.stdout


def test_paper_run_stops_before_any_notebook_when_inputs_are_missing(tmp_path, capsys):
    """A paper profile runs the preflight first: missing inputs stop it with PreflightFailed (main: exit 1)
    before its folder exists, so no notebook starts."""
    sets = _inputs("gta5", tmp_path / "weights", tmp_path / "runs", tmp_path / "gta5")
    with pytest.raises(PreflightFailed, match=r"(?s)latest_net_G\.pth: not found.*a run stops before"):
        run_profile("gta5", out_root=tmp_path / "out", overrides=sets, log=lambda *a: None)
    assert main(["--profile", "gta5", "--out", str(tmp_path / "out"), "--set", *sets]) == 1
    assert "STOPPED before the first notebook" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_check_passes_when_every_input_is_in_place(tmp_path, capsys, ade20k_root, official_weights):
    """Dataset, published weights and ablation runs of the whole schedule in place: exit 0, every input ok, the
    baseline notebook 02 trains listed as todo with its estimate. Then each way an input falls short: a run
    stopped early or trained with other preset fields is partial (exit 1), a run of another variant, weights of
    another dataset, a truncated weight file and a broken dataset are invalid."""
    weights = Path(official_weights("ade20k")[0]).parent
    runs = tmp_path / "runs"
    schedule = 200                                           # 200 epochs x ceil(3 pairs / batch 32)
    for v in ABLATIONS:
        _finished_run(runs / f"ade20k_{v}", v, "ade20k", schedule, 32)

    def check(data=ade20k_root, weights_dir=weights) -> tuple[int, str]:
        rc = main(["--profile", "ade20k", "--check", "--out", str(tmp_path / "out"), "--set",
                   *_inputs("ade20k", weights_dir, runs, data)])
        return rc, capsys.readouterr().out

    rc, text = check()
    assert rc == 0, text
    assert text.rstrip().endswith("result: COMPLETE, every input is in place")
    assert f"ok       dataset ade20k, split train: {ade20k_root}: 3 pairs; 3 opened, 3 valid" in text
    assert f"ok       dataset ade20k, split val: {ade20k_root}: 3 pairs; 3 opened, 3 valid" in text
    assert "every key and shape of the ade20k configuration" in _lines(text, "ok       published generator (ade20k)")[0]
    assert len(_lines(text, "ok       published encoder (ade20k)")) == 1
    for v in ABLATIONS:
        assert f"ok       run {v}: {runs / f'ade20k_{v}'}: {v} run, 200 of 200 steps" in text
    todo = _lines(text, "todo")
    assert len(todo) == 1 and "run gaugan_vae (notebook 02 trains it)" in todo[0] and "200 steps of batch 32" in todo[0]
    assert len(_lines(text, "info     GPU" if not torch.cuda.is_available() else "ok       GPU")) == 1

    (runs / "ade20k_clvae_L3" / "checkpoints" / "step_00000200.pt").rename(
        runs / "ade20k_clvae_L3" / "checkpoints" / "step_00000150.pt")
    _finished_run(runs / "ade20k_clvae_L5_small", "clvae_L5", "ade20k", schedule, 32, {"ngf": 8})
    (runs / "ade20k_clvae_L5").rename(runs / "ade20k_clvae_L5_full")
    (runs / "ade20k_clvae_L5_small").rename(runs / "ade20k_clvae_L5")
    rc, text = check()
    assert rc == 1
    partial = _lines(text, "PARTIAL")
    assert len(partial) == 2 and "result: INCOMPLETE (2 partial); a run would start, with a warning" in text
    assert "run clvae_L3" in partial[0] and "partial: 150 of 200 steps" in partial[0] and "with --resume" in partial[0]
    assert "run clvae_L5" in partial[1] and "preset fields changed from the paper's: ngf=8" in partial[1]

    (runs / "ade20k_clvae_L5").rename(runs / "ade20k_clvae_L5_small")
    (runs / "ade20k_no_layerwise").rename(runs / "ade20k_clvae_L5")          # a run of another variant
    other = tmp_path / "other_weights"
    other.mkdir()
    (other / "latest_net_G.pth").symlink_to(Path(official_weights("gta5")[0]))   # GTA-5's generator
    (other / "latest_net_E.pth").write_bytes(Path(weights / "latest_net_E.pth").read_bytes()[:1000])  # truncated
    rc, text = check(weights_dir=other)
    assert rc == 1
    invalid = _lines(text, "INVALID")
    assert any(line.startswith("INVALID  run clvae_L5") and "holds a no_layerwise run" in line
               for line in invalid), text
    assert any(line.startswith("INVALID  published generator (ade20k)") and "shape-mismatched" in line
               for line in invalid)
    assert any(line.startswith("INVALID  published encoder (ade20k)") and "truncated or corrupt" in line
               for line in invalid)
    assert "a run stops before its first notebook" in text


def test_check_reports_a_broken_dataset_split(tmp_path, capsys, ade20k_root):
    """A label missing from the training split: the dataset check's finding is named, the split is invalid."""
    import shutil

    data = tmp_path / "ADEChallengeData2016"
    shutil.copytree(ade20k_root, data)
    label = sorted((data / "annotations" / "training").glob("*.png"))[0]
    label.unlink()
    rc = main(["--profile", "ade20k", "--only", "01", "--check", "--out", str(tmp_path / "out"),
               "--set", f"DATA_ROOT={data}"])
    text = capsys.readouterr().out
    assert rc == 1
    invalid = _lines(text, "INVALID  dataset ade20k, split train")
    assert len(invalid) == 1 and "3 pairs" not in invalid[0]
    assert "2 pairs" in invalid[0] and "has no label" in invalid[0]
    assert f"ok       dataset ade20k, split val: {data}: 3 pairs" in text


def _segmenter_input(profile: str, tmp_path: Path, root: Path, segmenter: str | None) -> Input:
    sets = [f"DATA_ROOT={root}"] + ([f"SEGMENTER={segmenter}"] if segmenter is not None else [])
    _, plan = plan_profile(profile, ["03", "04"], tmp_path, overrides=sets)
    found = [i for i in preflight(profile, plan, sample=1).inputs if i.what.startswith("segmenter")]
    assert len(found) == 1, found
    assert found[0].used_by == ("03_reconstruction_rq1", "04_diversity_rq2")
    return found[0]


def test_check_lists_the_segmenter_as_an_optional_input(tmp_path, ade20k_root, deepfashion_root):
    """The mask-fidelity segmenter of a real dataset is listed, optional: absent it is 'info' and says the column
    will read 'not measured (missing <file>)'; a file of another class count is invalid (a run stops before its
    first notebook, so before any generator pass); DeepFashion says that no standard segmenter exists."""
    absent = _segmenter_input("ade20k", tmp_path, ade20k_root, str(tmp_path / "nothing"))
    assert absent.state == "info" and absent.what == "segmenter for mask mIoU (ade20k, optional)"
    assert f"not measured (missing {tmp_path / 'nothing' / 'encoder_epoch_50.pth'})" in absent.detail
    assert "sceneparsing.csail.mit.edu" in absent.detail
    bad = tmp_path / "bad"
    bad.mkdir()
    for name, key in (("encoder_epoch_50.pth", "conv1.weight"), ("decoder_epoch_50.pth", "conv_last.1.weight")):
        torch.save({key: torch.zeros(20, 256, 1, 1)}, bad / name)            # a 20-class decoder: another dataset
    invalid = _segmenter_input("ade20k", tmp_path, ade20k_root, str(bad))
    assert invalid.state == "invalid" and "predicts 20 classes, the ade20k protocol needs 150" in invalid.detail
    none = _segmenter_input("deepfashion", tmp_path, deepfashion_root, None)
    assert none.state == "info" and "no standard segmenter exists for DeepFashion" in none.detail
    assert "'not measured (no standard segmenter" in none.detail


@pytest.mark.slow
def test_check_names_the_segmenter_its_file_and_scales(tmp_path, ade20k_root, segmenter_weights):
    folder = segmenter_weights("ade20k")
    ok = _segmenter_input("ade20k", tmp_path, ade20k_root, str(folder))
    assert ok.state == "ok" and ok.where == f"{folder / 'encoder_epoch_50.pth'} + {folder / 'decoder_epoch_50.pth'}"
    assert "UperNet-ResNet101 (CSAIL, ADE20K)" in ok.detail and "short side 300, 375, 450, 525, 600" in ok.detail


def test_check_of_the_demo_profile_reads_the_shipped_models(capsys):
    """A non-paper profile is not judged against the paper's schedules: the demo's shipped models are in place."""
    assert main(["--profile", "demo", "--check"]) == 0
    text = capsys.readouterr().out
    assert "ok       model clvae: checkpoints/synthscenes_clvae.pt" in text
    assert "ok       model gaugan_vae: checkpoints/synthscenes_gaugan_vae.pt" in text
    for v in ("gaugan", "no_classwise", "no_layerwise", "clvae_L3", "clvae_L5",       # 05 loads, trains nothing
              "gaugan_vae_lowkl", "groupdnet", "cimle"):                              # 04: every system (issue 21)
        assert f"ok       model {v}: checkpoints/synthscenes_{v}.pt" in text, v


# ---------------------------------------------------------------------------------------------
# GPU estimates


def test_estimate_of_the_run_notebook_02_trains(tmp_path, ade20k_root):
    """ADE20K fixture (3 training pairs), preset batch 32, 200 epochs: 200 steps of 32 images."""
    _, plan = plan_profile("ade20k", ["02"], tmp_path, overrides=[f"DATA_ROOT={ade20k_root}"])
    report = preflight("ade20k", plan)
    todo = [i for i in report.inputs if i.state == "todo"]
    assert len(todo) == 1 and todo[0].used_by == ("02_train",)
    assert todo[0].gpu_hours["fp32"] == pytest.approx(200 * 32 / 60.8 / 3600)
    assert report.complete and report.gpu_hours()["fp32"] == todo[0].gpu_hours["fp32"]
    _, plan = plan_profile("ade20k", ["02"], tmp_path, overrides=[f"DATA_ROOT={ade20k_root}", "02.STEPS=10"])
    partial = preflight("ade20k", plan)
    assert not partial.complete and partial.runnable
    assert "STEPS=10 is short of the preset's schedule (200 steps)" in partial.to_text()


# ---------------------------------------------------------------------------------------------
# End to end (slow)


def _report_tables(report: str) -> dict[str, pd.DataFrame]:
    """The Markdown tables of REPORT.md by their heading ("### table1_reconstruction" -> DataFrame, index = first
    column)."""
    tables = {}
    for match in re.finditer(r"^### (\S+)\n\n(?:[^|\n].*\n\n)?((?:\|.*\|\n)+)", report, flags=re.M):
        rows = [[c.strip() for c in line.strip().strip("|").split("|")] for line in match.group(2).strip().splitlines()]
        tables[match.group(1)] = pd.DataFrame(rows[2:], columns=rows[0]).set_index(rows[0][0])
    return tables


@pytest.mark.slow
@pytest.mark.parametrize("profile, root_fixture", [("ade20k", "ade20k_root"), ("deepfashion", "deepfashion_root"),
                                                   ("gta5", "gta5_root")])
def test_paper_profile_end_to_end(tmp_path, request, official_weights, segmenter_weights, profile, root_fixture):
    """Notebooks 01-05 of the paper profile on the generated dataset, the published-format weights (full size:
    the real checkpoint layout) and the four ablations trained for 2 steps with `python -m smis.train` (tiny
    preset fields), shrunk only by --set (2 test masks, K = 2, notebook 02: 2 steps of tiny networks).
    REPORT.md holds Tables 1, 2 and 5 with a finite number in every cell of every variant, and names the
    partial inputs. Mask mIoU: ade20k and gta5 run their published segmenter (published-format fixture files,
    SEGMENTER=<folder>@64: one scale at short side 64 to keep the test short), which fills the mIoU column of
    every variant and the real images' ceiling row, named with its file and scale in the captions and the
    preflight; deepfashion's column reads "not measured" with the reason. Whole test on this 2-core CPU (AMD EPYC)
    shared with other jobs (load 3-5): ade20k 96-104 s, gta5 159-170 s, deepfashion 175-283 s (its generator alone
    is 2 GB, read by four processes), before the segmenters."""
    from smis.train import main as train

    root = request.getfixturevalue(root_fixture)
    weights = Path(official_weights(profile)[0]).parent
    runs = tmp_path / "runs"
    for v in ABLATIONS:          # the real training path, into the folders the profile reads
        assert train(["--variant", v, "--preset", profile, "--dataset", profile, "--data-root", str(root),
                      "--run-dir", str(runs / f"{profile}_{v}"), "--steps", "2", "--batch-size", "1",
                      "--ckpt-every", "2", "--perceptual", "none", "--no-tensorboard", "--no-progress",
                      "--device", "cpu", "--set", *TINY]) == 0
    sets = _inputs(profile, weights, runs, root) + [
        "02.STEPS=2", "02.BATCH=1", "02.PRESET_SET=" + json.dumps({k: int(v) for k, v in (t.split("=") for t in TINY)}),
        "N_TEST=2", "K=2"]
    folder = segmenter_weights(profile) if profile in ("ade20k", "gta5") else None
    if folder is not None:
        sets.append(f"SEGMENTER={folder}@64")
    said = []
    out = run_profile(profile, out_root=tmp_path / "out", overrides=sets, log=said.append)
    assert any("WARNING: some inputs are partial" in s for s in said)
    report = (out / "REPORT.md").read_text()
    assert "PARTIAL  run no_classwise" in report and "partial: 2 of" in report   # the report says what it rests on
    tables = _report_tables(report)
    expect = {"table1_reconstruction": ["clvae", "gaugan_vae"], "table2_diversity_top1": ["clvae", "gaugan_vae"],
              "table5_ablations": [f"{label} [{v}]" for v, label in
                                   zip(["clvae"] + ABLATIONS,
                                       ["full (L = 6)", "w/o class-wise", "w/o layer-wise", "L = 3", "L = 5"])]}
    ceiling = {"table5_ablations": "real test images (mIoU ceiling)"}
    for name, rows in expect.items():
        assert name in tables, f"{name} missing from REPORT.md: {sorted(tables)}"
        table = tables[name]
        real = ceiling.get(name, "real test images (ceiling)")
        assert list(table.index) == rows + [real], name
        if folder is None:                                   # deepfashion: no segmenter, the column says so
            assert (table["mask mIoU"] == "not measured (no standard segmenter exists for DeepFashion (the field "
                                          "reports no mask mIoU on it))").all(), name
            table = table.drop(columns="mask mIoU")
        else:
            assert math.isfinite(float(table.loc[real, "mask mIoU"])), name
            assert 0 <= table["mask mIoU"].map(float).min() and table["mask mIoU"].map(float).max() <= 1, name
        values = table.loc[rows].map(float)                  # every cell of every variant a number
        assert values.map(math.isfinite).all().all(), f"{name}:\n{table}"
        assert any(c.startswith("FD (") for c in table.columns), name
    table2 = tables["table2_diversity_top1"].loc[expect["table2_diversity_top1"]]
    assert (table2["masks"].map(float) == 2).all() and (table2["samples per mask"].map(float) == 2).all()
    assert f"on 2 {profile} {EVAL_SPLIT[profile]} pairs" in report
    assert "clvae (the authors' published weights)" in report
    if folder is not None:                                   # the segmenter, its file and its scale, named
        name = "UperNet-ResNet101 (CSAIL, ADE20K)" if profile == "ade20k" else "DRN-D-105 (fyu/drn, Cityscapes)"
        file = folder / ("encoder_epoch_50.pth" if profile == "ade20k" else "drn-d-105_ms_cityscapes.pth")
        assert f"Segmenter: {name}, {file}" in report and "short side 64 (1 scale" in report
        assert f"ok       segmenter for mask mIoU ({profile}, optional): {file}" in report
    else:
        assert "info     segmenter for mask mIoU (deepfashion, optional): none: no standard segmenter" in report
    state = json.loads((out / ".completed.json").read_text())
    assert set(state) == set(profiles.PROFILES[profile])
    assert (out / "02_train" / "samples_this_run.png").stat().st_size > 1000
    assert json.loads((out / "runs" / f"{profile}_gaugan_vae" / "config.json").read_text())["preset"] == profile


def _readme_real_data_commands() -> list[str]:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("### Reproducing the paper on real data", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```bash\n(.*?)```", section, flags=re.S).group(1)
    return [line.strip() for line in block.splitlines() if line.strip()]


@pytest.mark.slow
def test_readme_real_data_commands_run(tmp_path, ade20k_root):
    """The README's three commands for real data, with its folders swapped for the fixture's and temporary ones:
    --check names what is missing, the training command writes the run the profile reads (2 steps of tiny networks
    appended), and --check then sees it (partial). The third, the profile run, is test_paper_profile_end_to_end."""
    check, train, run = _readme_real_data_commands()
    assert check == "python -m smis.reproduce --profile ade20k --check"
    assert run == "python -m smis.reproduce --profile ade20k"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    sets = ["--out", str(tmp_path / "out"),
            "--set", *_inputs("ade20k", tmp_path / "weights", tmp_path / "runs", ade20k_root)]
    first = subprocess.run(check.split() + sets, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert first.returncode == 1 and "MISSING  run no_classwise" in first.stdout, first.stdout + first.stderr
    argv = [str(ade20k_root) if a == "data/ADEChallengeData2016" else a.replace("outputs/runs", str(tmp_path / "runs"))
            for a in train.split()]
    assert str(tmp_path / "runs" / "ade20k_no_classwise") in argv
    r = subprocess.run(argv + ["--steps", "2", "--batch-size", "1", "--ckpt-every", "2", "--perceptual", "none",
                               "--no-tensorboard", "--no-progress", "--device", "cpu", "--set", *TINY],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    second = subprocess.run(check.split() + sets, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    line = _lines(second.stdout, "PARTIAL  run no_classwise")
    assert second.returncode == 1 and len(line) == 1, second.stdout
    assert "partial: 2 of 600 steps of the preset's schedule (batch 1)" in line[0], second.stdout
