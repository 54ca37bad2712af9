"""Run the numbered notebooks headlessly with papermill, one profile of parameters at a time.

    python -m smis.reproduce --profile demo            # SynthScenes demo (the README's main command)
    python -m smis.reproduce --profile smoke           # tiny, CPU, minutes (CI)
    python -m smis.reproduce --profile demo --only 01  # some notebooks only
    python -m smis.reproduce --profile demo --resume   # skip notebooks already run with the same parameters
    python -m smis.reproduce --profile ade20k --set DATA_ROOT=/data/ADEChallengeData2016 05.MODELS=...

Profiles: `smoke` (CI), `demo` (SynthScenes with the shipped checkpoints in `checkpoints/`), and the
paper's settings `ade20k`, `deepfashion`, `gta5` (K = 40 samples, full test sets; they need the
dataset under `data/` or `--set DATA_ROOT=...`, the authors' CLVAE weights under
`checkpoints/official/<dataset>/latest_net_{G,E}.pth`, and the other variants trained with
`python -m smis.train --run-dir outputs/runs/<dataset>_<variant>`).

Each executed notebook lands in `outputs/<profile>/NN_topic.ipynb`, its figures and tables in
`outputs/<profile>/NN_topic/`, and `outputs/<profile>/REPORT.md` gathers every table (`*.md`).
A parameter string may hold `{out}`, replaced by the profile's output folder. `--set NAME=VALUE`
(VALUE read as JSON, else as a string) overrides a parameter in every notebook, `--set 05.NAME=VALUE`
in the notebooks starting with `05`. A failing notebook stops the run with a non-zero exit that
names the notebook and the cell.

Threads: kernels run with OMP_WAIT_POLICY=PASSIVE and OPENBLAS_NUM_THREADS=1 unless these are set.
On a 2-core machine shared with other jobs, spinning OpenMP / OpenBLAS threads made a training step
5.9 s instead of 1.1 s (PASSIVE) and a Fréchet distance's eigendecomposition 40x slower. `--threads N`
also sets the kernels' torch threads (OMP_NUM_THREADS); on that busy machine 1 thread was fastest
(0.64 s per step).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from contextlib import contextmanager
from pathlib import Path

from smis.utils import atomic_write_json, atomic_write_text, project_root

# The shipped SynthScenes demo models (scripts/train_demo_models.py).
DEMO_MODELS = "clvae:checkpoints/synthscenes_clvae.pt,gaugan_vae:checkpoints/synthscenes_gaugan_vae.pt"
ABLATIONS = "clvae,no_classwise,no_layerwise,clvae_L3,clvae_L5"


def _paper_profile(dataset: str, root: str, split: str, batch: int) -> dict[str, dict]:
    """The paper's evaluation of one dataset: full test split, K = 40, the published CLVAE weights,
    GauGAN-VAE and the ablations from the user's training runs (outputs/runs/<dataset>_<variant>)."""
    runs = f"outputs/runs/{dataset}"
    data = {"DATASET": dataset, "DATA_ROOT": root, "SPLIT": split, "N_TEST": 0, "BATCH": batch}
    clvae = f"clvae:official:{dataset}:checkpoints/official/{dataset}"
    return {
        "01_prepare_data": {"DATA_ROOT": root, "DATA_FORMAT": dataset},
        # the baseline has no published weights: 02 trains it (the preset's full schedule; GPUs)
        "02_train": {"VARIANT": "gaugan_vae", "PRESET": dataset, "DATASET": dataset, "DATA_ROOT": root, "STEPS": None,
                     "BATCH": None, "RUN_DIR": f"{runs}_gaugan_vae", "FRESH": False},
        "03_reconstruction_rq1": {**data, "MODELS": f"{clvae},gaugan_vae:{runs}_gaugan_vae"},
        "04_diversity_rq2": {**data, "MODELS": f"{clvae},gaugan_vae:{runs}_gaugan_vae", "K": 40, "N_STYLE": 0,
                             "FACTORS": False, "MASKS_PER_BATCH": 4},
        "05_ablations": {**data, "TRAIN_STEPS": 0, "K": 40, "VARIANTS": ABLATIONS,
                         "MODELS": ",".join([clvae] + [f"{v}:{runs}_{v}" for v in ABLATIONS.split(",")[1:]])},
    }


# profile -> notebook stem -> papermill parameters (OUT_DIR is added per notebook)
PROFILES: dict[str, dict[str, dict]] = {
    "smoke": {
        "01_prepare_data": {"SMOKE": True, "DATA_DIR": "outputs/smoke/data/synthscenes"},
        "02_train": {"SMOKE": True, "VARIANT": "clvae", "RUN_DIR": "{out}/runs/02_clvae"},
        "03_reconstruction_rq1": {"SMOKE": True, "MODELS": DEMO_MODELS},
        "04_diversity_rq2": {"SMOKE": True, "MODELS": DEMO_MODELS},
        "05_ablations": {"SMOKE": True, "TRAIN_STEPS": 2, "RUN_ROOT": "{out}/runs_ablation"},
        "06_interactive_editing": {"SMOKE": True},
    },
    "demo": {
        "01_prepare_data": {"SIZE": 128, "N_TRAIN": 2000, "N_TEST": 200, "DATA_DIR": "data/synthscenes"},
        "02_train": {"STEPS": 300, "VARIANT": "clvae", "RUN_DIR": "{out}/runs/02_clvae"},
        "03_reconstruction_rq1": {"MODELS": DEMO_MODELS, "N_TEST": 200},
        "04_diversity_rq2": {"MODELS": DEMO_MODELS, "N_TEST": 100, "K": 20, "N_STYLE": 100},
        "05_ablations": {"VARIANTS": ABLATIONS, "TRAIN_STEPS": 100, "TRAIN_BATCH": 8, "N_TEST": 50, "K": 10,
                         "RUN_ROOT": "{out}/runs_ablation"},
        "06_interactive_editing": {"N_TEST": 200, "N_EVAL": 100},
    },
    "ade20k": _paper_profile("ade20k", "data/ADEChallengeData2016", "val", 16),
    "deepfashion": _paper_profile("deepfashion", "data/deepfashion", "test", 16),
    "gta5": _paper_profile("gta5", "data/gta5", "test", 8),
}


def parse_overrides(items: list[str] | None) -> list[tuple[str, str, object]]:
    """`NAME=VALUE` / `NN.NAME=VALUE` -> [(notebook prefix or "", NAME, value)]; VALUE as JSON, else a string."""
    out = []
    for item in items or []:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise SystemExit(f"--set {item!r}: write NAME=VALUE or NN.NAME=VALUE (e.g. N_TEST=50, 05.K=20)")
        prefix, _, name = key.rpartition(".")
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        out.append((prefix, name, value))
    return out


class NotebookFailed(RuntimeError):
    pass


def _digest(params: dict) -> str:
    return hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:16]


def run_profile(profile: str, only: list[str] | None = None, resume: bool = False, out_root: str | Path = "outputs",
                kernel: str = "smis", log=print, profiles: dict | None = None, notebook_dir: Path | None = None,
                overrides: list[str] | None = None, threads: int | None = None) -> Path:
    """Execute the profile's notebooks in order; return the profile's output folder."""
    if threads is not None and threads < 1:
        raise SystemExit(f"--threads {threads}: give at least 1")
    with _kernel_env(threads):
        return _run_profile(profile, only, resume, out_root, kernel, log, profiles, notebook_dir, overrides)


@contextmanager
def _kernel_env(threads: int | None):
    """Thread settings the kernels inherit (see the module docstring); the caller's environment is restored."""
    keys = ("OMP_WAIT_POLICY", "OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
    saved = {k: os.environ.get(k) for k in keys}
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    if threads is not None:
        os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = str(threads)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _run_profile(profile, only, resume, out_root, kernel, log, profiles, notebook_dir, overrides) -> Path:
    import papermill as pm

    sets = parse_overrides(overrides)
    profiles = PROFILES if profiles is None else profiles
    if profile not in profiles:
        raise SystemExit(f"unknown profile {profile!r}. Fix: use one of {sorted(profiles)}.")
    root = project_root()
    out = (root / out_root / profile) if not Path(out_root).is_absolute() else Path(out_root) / profile
    out.mkdir(parents=True, exist_ok=True)
    state_path = out / ".completed.json"
    state = json.loads(state_path.read_text()) if state_path.exists() else {}
    notebooks = profiles[profile]
    if only:
        unknown = [o for o in only if not any(nb.startswith(o) for nb in notebooks)]
        if unknown:
            raise SystemExit(f"--only {unknown} matches no notebook of profile {profile!r}: {list(notebooks)}")
        notebooks = {nb: p for nb, p in notebooks.items() if any(nb.startswith(o) for o in only)}
    bad = sorted({p for p, _, _ in sets if p and not any(nb.startswith(p) for nb in notebooks)})
    if bad:
        raise SystemExit(f"--set prefixes {bad} match no notebook to run: {list(notebooks)}")
    out_str = str(out.relative_to(root)) if out.is_relative_to(root) else str(out)
    nb_dir = notebook_dir or root / "notebooks"
    absent = [stem for stem in notebooks if not (nb_dir / f"{stem}.ipynb").exists()]
    if absent:
        raise SystemExit(f"notebooks {absent} of profile {profile!r} are not in {nb_dir}. Fix: build them with "
                         "`python scripts/build_notebooks.py`, or leave them out with --only.")
    for stem, params in notebooks.items():
        params = {**params, **{n: v for p, n, v in sets if stem.startswith(p)}}
        params = {k: v.replace("{out}", out_str) if isinstance(v, str) else v for k, v in params.items()}
        params["OUT_DIR"] = f"{out_str}/{stem}"
        key = _digest(params)
        if resume and state.get(stem) == key and (out / f"{stem}.ipynb").exists():
            log(f"[reproduce] {stem}: already done with these parameters, skipped (--resume)")
            continue
        src = nb_dir / f"{stem}.ipynb"
        dst = out / f"{stem}.ipynb"
        log(f"[reproduce] {profile}: running {stem} with {params}")
        t0 = time.time()
        try:
            pm.execute_notebook(str(src), str(dst), parameters=params, kernel_name=kernel, cwd=str(root),
                                progress_bar=False, log_output=False)
        except pm.PapermillExecutionError as e:
            raise NotebookFailed(f"notebook {stem} failed in cell {e.cell_index} (execution count {e.exec_count}): "
                                 f"{e.ename}: {e.evalue}. The executed copy with the traceback is {dst}.") from None
        state[stem] = key
        atomic_write_json(state, state_path)
        timings_path = out / "timings.json"
        timings = json.loads(timings_path.read_text()) if timings_path.exists() else {}
        timings[stem] = round(time.time() - t0, 1)
        atomic_write_json(timings, timings_path)
        log(f"[reproduce] {stem} done in {time.time() - t0:.0f} s -> {dst.relative_to(root) if dst.is_relative_to(root) else dst}")
    write_report(out, profile)
    return out


def write_report(out: Path, profile: str) -> Path:
    """REPORT.md: every Markdown table the notebooks wrote, under its notebook's heading."""
    parts = [f"# smis report: profile `{profile}`\n",
             "Tables written by the notebooks (metric and backbone names as measured; a fallback metric is never "
             "reported under the paper's name).\n"]
    timings_path = out / "timings.json"
    if timings_path.exists():
        timings = json.loads(timings_path.read_text())
        parts.append("\nWall time of the last run of each notebook: "
                     + ", ".join(f"{k} {v:.0f} s" for k, v in sorted(timings.items())) + ".\n")
    for nb_dir in sorted(p for p in out.iterdir() if p.is_dir() and p.name[:2].isdigit()):
        tables = sorted(nb_dir.glob("*.md"), key=lambda t: (t.stat().st_mtime_ns, t.name))   # the order written
        if not tables:
            continue
        parts.append(f"\n## {nb_dir.name}\n")
        for t in tables:
            parts.append(f"\n### {t.stem}\n\n{t.read_text().strip()}\n")
        figs = sorted(nb_dir.glob("*.png"))
        if figs:
            parts.append("\nFigures: " + ", ".join(f"[{f.name}]({nb_dir.name}/{f.name})" for f in figs) + "\n")
    return atomic_write_text("".join(parts), out / "REPORT.md")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--profile", default="demo", help=f"one of {sorted(PROFILES)}")
    p.add_argument("--only", nargs="+", help="notebook numbers or names to run (e.g. 01 03)")
    p.add_argument("--resume", action="store_true", help="skip notebooks already run with the same parameters")
    p.add_argument("--out", default="outputs", help="output root (relative to the repository)")
    p.add_argument("--kernel", default="smis", help="Jupyter kernel name")
    p.add_argument("--set", nargs="+", metavar="[NN.]NAME=VALUE", help="override notebook parameters (VALUE as JSON)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads in the notebooks (default: torch's)")
    a = p.parse_args(argv)
    try:
        out = run_profile(a.profile, a.only, a.resume, a.out, a.kernel, overrides=a.set, threads=a.threads)
    except NotebookFailed as e:
        print(f"[reproduce] FAILED: {e}", file=sys.stderr)
        return 1
    print(f"[reproduce] profile {a.profile} complete: {out / 'REPORT.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
