"""Every command in README.md is run by a test (or by CI), so the README stays true."""
import os
import re
import shlex
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from conftest import SMOKE_COMMAND
import torch

from smis.utils import project_root

ROOT = project_root()
README = (ROOT / "README.md").read_text()


def blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", README, flags=re.S)


def commands() -> list[str]:
    return [line.split("#")[0].strip() for b in blocks("bash") for line in b.splitlines() if line.split("#")[0].strip()]


COVERED = {
    "bash run.sh demo": "test_main_demo_command",
    "bash run.sh test": "CI: .ci/run",
    "bash run.sh lab": "test_lab_command_serves_jupyterlab",
    "bash run.sh lint": "CI: .ci/run",
    "python -m smis.data.synthetic --out data/synthscenes --train 2000 --test 200 --size 128": "test_dataset_commands",
    "python -m smis.data.check data/synthscenes --format synthscenes": "test_dataset_commands",
    "python -m smis.train --variant clvae --preset synthscenes --steps 3000 --run-dir outputs/runs/clvae":
        "test_train_command",
    "python -m smis.train --variant cimle --preset synthscenes --run-dir outputs/runs/cimle":
        "test_cimle_train_command",
    "python -m smis.reproduce --profile smoke": "test_reproduce_smoke_command",
    # Reproducing the paper on real data (tests/test_paper_profiles.py, on the generated ADE20K)
    "python -m smis.reproduce --profile ade20k --check": "test_readme_real_data_commands_run",
    "python -m smis.train --variant no_classwise --preset ade20k --dataset ade20k "
    "--data-root data/ADEChallengeData2016 "
    "--run-dir outputs/runs/ade20k_no_classwise": "test_readme_real_data_commands_run",
    "python -m smis.reproduce --profile ade20k": "test_paper_profile_end_to_end[ade20k]",
}


def env():
    venv_bin = str(Path(sys.executable).parent)
    return {**os.environ, "PATH": venv_bin + os.pathsep + os.environ["PATH"], "PYTHONPATH": str(ROOT),
            "SMIS_VENV": str(Path(sys.executable).parents[1])}


def test_every_readme_command_is_covered():
    assert set(commands()) == set(COVERED), "README commands changed: cover the new ones in this file"
    ci = (ROOT / ".ci" / "run").read_text()
    assert "bash run.sh test" in ci and "bash run.sh lint" in ci


def test_two_command_quick_start_comes_first():
    first = blocks("bash")[0]
    assert [l.split("#")[0].strip() for l in first.strip().splitlines()] == ["bash run.sh demo", "bash run.sh test"]


@pytest.mark.slow
def test_dataset_commands(tmp_path):
    """The README's commands, with its dataset folder data/synthscenes swapped for a temporary one."""
    data = tmp_path / "synthscenes"
    for cmd in [c for c, t in COVERED.items() if t == "test_dataset_commands"]:
        assert "data/synthscenes" in cmd, cmd
        argv = [str(data) if a == "data/synthscenes" else a for a in shlex.split(cmd)]
        r = subprocess.run(argv, cwd=ROOT, env=env(), capture_output=True, text=True, timeout=900)
        assert r.returncode == 0, f"{cmd}\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}"
    assert len(list((data / "test" / "images").glob("*.png"))) == 200


def test_train_command(tmp_path):
    cmd = next(c for c, t in COVERED.items() if t == "test_train_command")
    # the README's command, with a short run in a temporary folder appended (argparse: the last value wins)
    extra = ["--steps", "2", "--batch-size", "2", "--run-dir", str(tmp_path / "run"), "--data-length", "8",
             "--perceptual", "none", "--no-tensorboard", "--no-progress", "--set", "ngf=8", "nef=8", "ndf=8"]
    r = subprocess.run(shlex.split(cmd) + extra, cwd=ROOT, env=env(), capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert (tmp_path / "run" / "checkpoints" / "step_00000002.pt").exists()


@pytest.mark.slow
def test_cimle_train_command(tmp_path):
    """The README's cIMLE command, shortened (argparse: the last value wins), trains and checkpoints."""
    cmd = next(c for c, t in COVERED.items() if t == "test_cimle_train_command")
    extra = ["--steps", "2", "--batch-size", "2", "--run-dir", str(tmp_path / "run"), "--data-length", "8",
             "--no-tensorboard", "--no-progress", "--threads", "1", "--imle", "pool_size=2", "samples=2",
             "resample_every=2"]
    r = subprocess.run(shlex.split(cmd) + extra, cwd=ROOT, env=env(), capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "cimle on synthscenes" in r.stdout and (tmp_path / "run" / "checkpoints" / "step_00000002.pt").exists()
    config = (tmp_path / "run" / "config.json").read_text()
    assert '"pool_size": 2' in config and '"variant": "cimle"' in config


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_lab_command_serves_jupyterlab():
    port = _free_port()
    cmd = shlex.split(next(c for c, t in COVERED.items() if t == "test_lab_command_serves_jupyterlab"))
    p = subprocess.Popen(cmd + ["--no-browser", f"--port={port}", "--ServerApp.ip=127.0.0.1",
                                "--IdentityProvider.token=t"],
                         cwd=ROOT, env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                         start_new_session=True)
    try:
        deadline, body = time.time() + 120, ""
        while time.time() < deadline:
            try:
                url = f"http://127.0.0.1:{port}/api/kernelspecs?token=t"
                body = urllib.request.urlopen(url, timeout=5).read().decode()
                break
            except OSError:
                time.sleep(1)
        assert '"smis"' in body  # the workbook's kernel is offered
        url = f"http://127.0.0.1:{port}/api/contents/notebooks?token=t"
        nb = urllib.request.urlopen(url, timeout=10).read().decode()
        assert "01_prepare_data.ipynb" in nb
    finally:
        os.killpg(p.pid, 15)
        p.wait(timeout=30)


@pytest.mark.slow
def test_reproduce_smoke_command(smoke_run):
    """The README's smoke command (run once per session by conftest.smoke_run, whose output
    tests/test_reproduce_runner.py checks in detail) with `--out <tmp>`."""
    assert next(c for c, t in COVERED.items() if t == "test_reproduce_smoke_command") == SMOKE_COMMAND
    r = smoke_run.process
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    report = (smoke_run.out / "REPORT.md").read_text()
    for nb in ("01_prepare_data", "03_reconstruction_rq1", "04_diversity_rq2", "05_ablations",
               "06_interactive_editing"):
        assert f"## {nb}" in report, nb
    assert smoke_run.repo_changes == []    # everything under --out (no outputs/smoke/data)


@pytest.mark.slow
def test_main_demo_command(tmp_path, repo_snapshot):
    """The README's main command with `--out <tmp>` appended (run.sh passes it on to smis.reproduce), so a
    user's outputs/demo is never overwritten; the repository's outputs/ and data/ stay as they were."""
    cmd = next(c for c, t in COVERED.items() if t == "test_main_demo_command")
    before = repo_snapshot()
    r = subprocess.run(shlex.split(cmd) + ["--out", str(tmp_path)], cwd=ROOT, env=env(), capture_output=True, text=True,
                       timeout=3600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    report = (tmp_path / "demo" / "REPORT.md").read_text()
    for nb in ("01_prepare_data", "03_reconstruction_rq1", "04_diversity_rq2", "05_ablations",
               "06_interactive_editing"):
        assert f"## {nb}" in report, nb
        assert (tmp_path / "demo" / f"{nb}.ipynb").exists()
    assert repo_snapshot.changes(before, repo_snapshot()) == []
    # the README's results are this demo's: every number agrees (the models are fixed and seeded; a machine
    # changes the last float bits only), the timings line aside
    readme = tmp_path / "README.md"
    readme.write_text(README)
    r = subprocess.run([sys.executable, "scripts/demo_results.py", str(tmp_path / "demo"), "--readme", str(readme),
                        "--json", str(tmp_path / "demo_results.json")],
                       cwd=ROOT, env=env(), capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    now, shipped = results_block(readme.read_text()), results_block(README)
    assert NUMBER.sub("#", now) == NUMBER.sub("#", shipped)
    for a, b in zip(NUMBER.findall(now), NUMBER.findall(shipped)):
        assert float(a) == pytest.approx(float(b), abs=2e-3, rel=2e-3), (a, b)


NUMBER = re.compile(r"[-+]?\d+(?:\.\d+)?(?:e[-+]?\d+)?")


def results_block(text: str) -> str:
    """The README's demo-results block without its first line (the run's timings)."""
    block = text.split("<!-- demo-results:start -->\n", 1)[1].split("<!-- demo-results:end -->", 1)[0]
    return block.split("\n", 1)[1]


def test_readme_results_are_rendered_from_the_recorded_run():
    """The block between the demo-results markers is exactly what scripts/demo_results.py renders from the
    numbers it recorded (docs/demo_results.json) and the shipped curves: nothing typed in by hand."""
    import importlib.util
    import json

    spec = importlib.util.spec_from_file_location("demo_results", ROOT / "scripts" / "demo_results.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    recorded = json.loads((ROOT / "docs" / "demo_results.json").read_text())
    curves = json.loads((ROOT / recorded["curves_file"]).read_text())
    block = README.split(mod.START + "\n", 1)[1].split(mod.END, 1)[0]
    assert block == mod.render(recorded["data"], curves)
    assert "holds" in block or "not resolved" in block


def test_readme_layer_experiment_is_rendered_from_its_json():
    """The layer section's table, split sentences and paired line come from docs/layer_experiment.json (what
    scripts/layer_experiment.py measured), and the verdict it states is the JSON's."""
    from smis import edit_measures

    exp = edit_measures.read_layer_experiment(ROOT / "docs" / "layer_experiment.json")
    assert edit_measures.experiment_markdown(exp) in README
    for split in exp["splits"].values():
        assert split["sentence"] in README
    assert not any(s["appears"] for s in exp["splits"].values()) and "appears in neither model" in README
    verdict = exp["models"]["freebits"]["verdict"]
    assert not verdict["ship"] and "free bits is not shipped" in README
    assert edit_measures.versus_line(exp["versus"]["freebits"]) in README
    shipped = edit_measures.read_layer_experiment(ROOT / "docs" / "layer_table_clvae.json")
    assert shipped["splits"]["shipped"]["sentence"] in README
    for layer, r in shipped["tables"]["shipped"].iterrows():           # the shipped clvae's line, per layer
        assert (f"layer {layer}: KL {r['KL']:.2f}, {int(r['active units'])} active units, colour mode "
                f"{100 * r['colour mode changed']:.0f} %, texture kind "
                f"{100 * r['texture kind changed']:.0f} %") in README


@pytest.mark.slow
def test_official_checkpoint_snippet(official_weights, monkeypatch):
    """The README's Python snippet, on files in the published format (key names, order and shapes of the
    authors' latest_net_G/E.pth; random values), written by smis.weight_fixtures.write_official_weights."""
    g, _ = official_weights("ade20k")                          # <tmp>/ade20k/latest_net_{G,E}.pth
    monkeypatch.chdir(g.parent.parent)
    label = torch.randint(0, 151, (1, 256, 256))
    photo = torch.rand(1, 3, 256, 256) * 2 - 1
    scope = {"label": label, "photo": photo}
    with torch.no_grad():
        exec(blocks("python")[0], scope)
    assert scope["images"].shape == (1, 3, 256, 256)
    assert scope["mu"].zc.shape[:3] == (1, 5, 151)
