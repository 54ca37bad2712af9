import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("MPLBACKEND", "Agg")
# Tests use tiny tensors: one intra-op thread is as fast, and immune to OpenMP spin-waiting when the
# machine is busy (benchmarks/RESULTS.md, "Measurements formerly in comments").
torch.set_num_threads(1)
if os.environ.get("PYTEST_XDIST_WORKER"):
    # `bash run.sh test` runs two pytest-xdist workers, one per core: the notebooks, scripts and trainings the tests
    # start in subprocesses take one thread too (two workers' subprocesses spinning two OpenMP threads each on two
    # cores slow every job down).
    os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = "1"

REPO = Path(__file__).resolve().parents[1]
# The user's results and datasets: no test may write here (tests write under tmp_path).
GUARDED = ("outputs", "data")


class RepoSnapshot:
    """`snap(root)`: relative path -> (mtime_ns, size) of everything under root/outputs and root/data,
    those folders included (absent ones: nothing). `changes(before, after)`: the paths added, removed or
    modified, sorted. A walk of the folders' metadata only: milliseconds for thousands of files."""

    def __call__(self, root: Path = REPO) -> dict[str, tuple[int, int]]:
        snap = {}
        for top in GUARDED:
            base = root / top
            paths = [str(base)] if base.exists() else []
            for dirpath, dirnames, filenames in os.walk(base):
                paths += [os.path.join(dirpath, name) for name in dirnames + filenames]
            for path in paths:
                try:
                    st = os.lstat(path)
                except FileNotFoundError:      # removed during the walk
                    continue
                snap[os.path.relpath(path, root)] = (st.st_mtime_ns, st.st_size)
        return snap

    @staticmethod
    def changes(before: dict, after: dict) -> list[str]:
        return sorted(p for p in before.keys() | after.keys() if before.get(p) != after.get(p))


LONGEST_FIRST = ("test_main_demo_command",)       # the README's demo: ~8 of the suite's ~20 minutes
LONGEST_LAST = ("test_paper_profile_end_to_end", "test_smoke_profile_end_to_end", "test_reproduce_smoke_command")


def pytest_collection_modifyitems(config, items):
    """With pytest-xdist workers (`-n`, `--dist worksteal`): the demo first, so that one worker starts it at once
    while the other runs the rest, and the other whole-profile runs last, so that whichever worker is free first
    takes them over (worksteal hands an idle worker the tail of the other's queue). Without workers: unchanged."""
    if not hasattr(config, "workerinput"):     # the xdist controller schedules what its workers collected
        return
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    last = {name: i for i, name in enumerate(LONGEST_LAST)}

    def key(item):
        name = item.originalname or item.name
        return (0, rank[name]) if name in rank else (2, last[name]) if name in last else (1, 0)
    items.sort(key=key)                 # stable: the rest keep their order


@pytest.fixture(scope="session")
def repo_snapshot() -> RepoSnapshot:
    """The snapshot function of the repository's outputs/ and data/ (see RepoSnapshot)."""
    return RepoSnapshot()


@pytest.fixture(scope="session", autouse=True)
def _repository_outputs_and_data_untouched(repo_snapshot):
    """Fail the session (an error at the last test's teardown, non-zero exit) when any test added, removed
    or modified something under the repository's outputs/ or data/, naming the paths."""
    before = repo_snapshot()
    yield
    changed = repo_snapshot.changes(before, repo_snapshot())
    if changed:
        shown = ", ".join(changed[:20]) + (f" and {len(changed) - 20} more" if len(changed) > 20 else "")
        pytest.fail(f"the tests changed the repository's outputs/ or data/ ({REPO}): {shown}. Fix: write under "
                    "tmp_path (e.g. --out / --run-dir / OUT_DIR to a temporary folder); a test must never touch a "
                    "user's results.",
                    pytrace=False)


@pytest.fixture
def g():
    """A seeded torch.Generator."""
    return torch.Generator().manual_seed(0)


@pytest.fixture
def hub_dir(tmp_path):
    """Point the torch hub cache at an empty temporary folder for the test, then restore it."""
    old = torch.hub.get_dir()
    (tmp_path / "checkpoints").mkdir()
    torch.hub.set_dir(str(tmp_path))
    yield tmp_path
    torch.hub.set_dir(old)


# ---- Datasets in the paper's real layouts and published-format weights, generated (smis.data.fixtures) ----
# A clone without ../shared runs every dataset and checkpoint test on these. Where ../shared/samples exists
# (CI; SMIS_SHARED_DIR or SMIS_SAMPLES move it), the `*_source` fixtures add the real files as a second case.
from dataclasses import dataclass  # noqa: E402

from smis.data.fixtures import WRITERS, samples_dir  # noqa: E402
from smis.weight_fixtures import write_official_weights, write_segmenter_weights  # noqa: E402

FIXTURE_PAIRS = 3                                   # pairs per split the writers make by default


def _dataset_root(tmp_path_factory, name: str) -> Path:
    return WRITERS[name](tmp_path_factory.mktemp(f"{name}_fixture"))


@pytest.fixture(scope="session")
def ade20k_root(tmp_path_factory) -> Path:
    """ADEChallengeData2016 layout, 3 pairs per split (smis.data.fixtures.write_ade20k); read-only by convention."""
    return _dataset_root(tmp_path_factory, "ade20k")


@pytest.fixture(scope="session")
def deepfashion_root(tmp_path_factory) -> Path:
    """DeepFashion layout, 3 pairs per split: 256x256 pre-padded and 128x88 portrait photos (write_deepfashion)."""
    return _dataset_root(tmp_path_factory, "deepfashion")


@pytest.fixture(scope="session")
def gta5_root(tmp_path_factory) -> Path:
    """GTA-5 layout (RGB256Full + LabelgrayFull20, 512x256), 3 pairs per split (write_gta5)."""
    return _dataset_root(tmp_path_factory, "gta5")


@pytest.fixture(scope="session")
def cityscapes_root(tmp_path_factory) -> Path:
    """Cityscapes layout (leftImg8bit + gtFine, raw label ids), 3 pairs per split (write_cityscapes)."""
    return _dataset_root(tmp_path_factory, "cityscapes")


@pytest.fixture(scope="session")
def official_weights(tmp_path_factory):
    """`official_weights(dataset)` -> (latest_net_G.pth, latest_net_E.pth) in <tmp>/<dataset>/, random weights in
    the published format (write_official_weights, seed 0), written once per dataset and deleted after the session
    (0.5 GB for ade20k / gta5, 2.2 GB for deepfashion)."""
    import shutil

    base, written = tmp_path_factory.mktemp("official_weights"), {}

    def get(dataset: str) -> tuple[Path, Path]:
        if dataset not in written:
            written[dataset] = write_official_weights(base / dataset, dataset)
        return written[dataset]

    yield get
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def segmenter_weights(tmp_path_factory):
    """`segmenter_weights(dataset)` -> the folder holding the published segmenter file(s) of `dataset` with random
    weights (smis.weight_fixtures.write_segmenter_weights, seed 0): ade20k's encoder_epoch_50.pth +
    decoder_epoch_50.pth (240 MB), DRN-D-105's drn-d-105_ms_cityscapes.pth for gta5 / cityscapes (220 MB, one file
    for both); written once and deleted after the session."""
    import shutil

    base, written = tmp_path_factory.mktemp("segmenter_weights"), {}

    def get(dataset: str) -> Path:
        key = "ade20k" if dataset == "ade20k" else "drn"
        if key not in written:
            written[key] = write_segmenter_weights(base / key, dataset)[0].parent
        return written[key]

    yield get
    shutil.rmtree(base, ignore_errors=True)


@dataclass(frozen=True)
class DatasetSource:
    kind: str                   # "fixture" (generated) or "samples" (the real files in ../shared/samples)
    root: Path                  # what make_dataset / check_dataset take
    pairs: dict[str, int]       # split -> number of image/label pairs


REAL_SAMPLE_PAIRS = {"ade20k": {"train": 4, "val": 2}, "deepfashion": {"train": 4, "test": 2}}  # samples/README.md
FIXTURE_SPLITS = {"ade20k": ("train", "val"), "deepfashion": ("train", "test")}


def _sources(name: str) -> list[str]:
    return ["fixture"] + (["samples"] if (samples_dir() / name).is_dir() else [])


def _source(request, name: str) -> DatasetSource:
    if request.param == "samples":
        return DatasetSource("samples", samples_dir() / name, REAL_SAMPLE_PAIRS[name])
    return DatasetSource("fixture", request.getfixturevalue(f"{name}_root"),
                         {split: FIXTURE_PAIRS for split in FIXTURE_SPLITS[name]})


@pytest.fixture(params=_sources("ade20k"))
def ade20k_source(request) -> DatasetSource:
    """The generated ADE20K, then the real samples where ../shared/samples/ade20k exists."""
    return _source(request, "ade20k")


@pytest.fixture(params=_sources("deepfashion"))
def deepfashion_source(request) -> DatasetSource:
    """The generated DeepFashion, then the real samples where ../shared/samples/deepfashion exists."""
    return _source(request, "deepfashion")


# ---- Tiny training runs (test_train, test_checkpoint, test_options, test_rundir, test_runlog, test_build) ----
# Plain helpers, imported by those modules (`from conftest import cfg, ...`): each takes the test's tmp_path.
import sys  # noqa: E402

from smis.options import TrainConfig  # noqa: E402
from smis.train import Trainer  # noqa: E402
from smis.utils import project_root  # noqa: E402

from smis.config import TINY  # noqa: E402  (the tiny networks' preset fields; conftest's helpers and tests import it here)


def cfg(tmp_path: Path,      # the test's tmp_path: the run goes to tmp_path / "run"
        **kw,                # TrainConfig fields replacing the defaults below
        ) -> TrainConfig:
    """A 4-step clvae run of the TINY nets on 32 SynthScenes images, batch 2, checkpoints every 2 steps, no
    perceptual net, TensorBoard, progress bar or images."""
    base = dict(run_dir=str(tmp_path / "run"), preset_overrides=TINY, data_length=32, steps=4, batch_size=2,
                perceptual="none", tensorboard=False, progress=False, ckpt_every=2, log_every=1, image_every=0)
    base.update(kw)
    return TrainConfig(**base)


def trained(tmp_path: Path, **kw) -> Trainer:
    """The Trainer of `cfg(tmp_path, **kw)` after fit()."""
    t = Trainer(cfg(tmp_path, **kw))
    t.fit()
    return t


def cli(tmp_path: Path,           # (unused: the run folder is `run`)
        run: Path,                # --run-dir
        steps: int,               # --steps
        extra=(),                 # further arguments
        ) -> list[str]:
    """The `python -m smis.train` command of a TINY run on 16 images, batch 2, checkpoints every 2 steps, one
    thread (argv[3:] is what smis.train.main takes)."""
    return [sys.executable, "-m", "smis.train", "--run-dir", str(run), "--steps", str(steps), "--batch-size", "2",
            "--data-length", "16", "--perceptual", "none", "--no-tensorboard", "--no-progress", "--ckpt-every", "2",
            "--threads", "1", "--image-every", "0", "--log-every", "1",
            "--set"] + [f"{k}={v}" for k, v in TINY.items()] + list(extra)


def cli_env() -> dict[str, str]:
    """The environment of a `cli` subprocess: this one, with the repository on PYTHONPATH."""
    return {**os.environ, "PYTHONPATH": str(project_root())}


def run_files(run: Path) -> list[str]:
    """Every path under a run folder, relative to it, sorted."""
    return sorted(str(p.relative_to(run)) for p in run.rglob("*"))


# ---- Tiny untrained networks on the SynthScenes test set (test_evaluate, test_sampling) ----
from smis import evaluate as ev  # noqa: E402
from smis.config import get_preset  # noqa: E402
from smis.networks import build_networks  # noqa: E402

EVAL_TINY = dict(ngf=4, nef=4, ndf=4, spade_hidden=8, z_dim=8, z_dim_local=4, norm_G="instance")   # preset fields


def tiny(variant: str):
    """`variant`'s networks at the EVAL_TINY sizes, seeded (0), without D, in eval mode."""
    torch.manual_seed(0)
    return build_networks(variant, get_preset("synthscenes", **EVAL_TINY), discriminator=False).eval()


@pytest.fixture(scope="module")
def clvae():
    """tiny("clvae"), once per module."""
    return tiny("clvae")


@pytest.fixture(scope="module")
def data():
    """(SynthScenes test set at 64x64, its first 4 indices)."""
    return ev.test_set("synthscenes", "", "test", 64, 4)


# -- a tiny notebook for the smis.reproduce tests --------------------------------------------------

ECHO_PARAMS = 'SMOKE = False\nA: \"Union[int, list]\" = 0\nB = ""\nRUN_DIR = ""'


def _write_echo_notebook(folder, stem="98_echo", params=ECHO_PARAMS):
    """A notebook declaring `params` and OUT_DIR that writes its upper-case globals and thread settings
    to OUT_DIR/params.json."""
    import nbformat

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


@pytest.fixture
def echo_notebook():
    """echo_notebook(folder, stem="98_echo", params=ECHO_PARAMS) writes folder/<stem>.ipynb (_write_echo_notebook)."""
    return _write_echo_notebook


# -- the README's smoke profile, run once per session (tests/test_readme.py checks the command,
# tests/test_reproduce_runner.py what it wrote) ---------------------------------------------------------------
import subprocess  # noqa: E402

SMOKE_COMMAND = "python -m smis.reproduce --profile smoke"     # the README's command, run with --out <tmp>


@dataclass
class SmokeRun:
    root: Path                        # the --out folder
    out: Path                         # root / "smoke": the profile's folder
    process: subprocess.CompletedProcess
    repo_changes: list[str]           # paths under the repository's outputs/ and data/ the run changed (none expected)


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory, repo_snapshot) -> SmokeRun:
    """SMOKE_COMMAND with `--out <tmp>` in a subprocess of this environment's Python, once per session (it takes a
    minute): the run's folder, the finished process and what it changed in the repository."""
    import shlex
    import sys

    root = tmp_path_factory.mktemp("smoke_run")
    env = {**os.environ, "PATH": str(Path(sys.executable).parent) + os.pathsep + os.environ["PATH"],
           "PYTHONPATH": str(REPO), "SMIS_VENV": str(Path(sys.executable).parents[1])}
    before = repo_snapshot()
    r = subprocess.run(shlex.split(SMOKE_COMMAND) + ["--out", str(root)], cwd=REPO, env=env, capture_output=True,
                       text=True, timeout=1800)
    return SmokeRun(root, root / "smoke", r, repo_snapshot.changes(before, repo_snapshot()))


@pytest.fixture(scope="module")
def tiny_study():
    """smis.study.Study of tiny clvae, gaugan (no encoder) and clvae_L3 on the first 3 SynthScenes test masks at
    64x64: EfficientNet-Lite0 LPIPS and FD, the shipped segmenter (test_study, test_eval_figures)."""
    from smis.metrics import LPIPS
    from smis.models import load_segmenter_for
    from smis.study import Study

    test, indices = ev.test_set("synthscenes", "", "test", 64, 3)
    models = {v: tiny(v) for v in ("clvae", "gaugan", "clvae_L3")}
    for nets in models.values():
        nets.meta = {"step": 0}                       # what an exported model records (smis.models.trained)
    return Study(models, test, indices, LPIPS("effnet", device="cpu"),
                 ev.real_frechet(test, indices, "effnet", "cpu", 3, progress=False),
                 load_segmenter_for("synthscenes", "auto", "cpu"), torch.device("cpu"), batch=3)
