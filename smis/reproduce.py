"""Run the numbered notebooks headlessly with papermill, one profile of parameters at a time.

    python -m smis.reproduce --profile demo            # SynthScenes demo (the README's main command)
    python -m smis.reproduce --profile smoke           # tiny, CPU, minutes (CI)
    python -m smis.reproduce --profile demo --only 01  # some notebooks only
    python -m smis.reproduce --profile demo --resume   # skip notebooks already run with the same parameters
    python -m smis.reproduce --profile ade20k --set DATA_ROOT=/data/ADEChallengeData2016 05.MODELS=...

Profiles: `smoke` (CI), `demo` (SynthScenes with the shipped checkpoints in `checkpoints/`), and the
paper's settings `ade20k`, `deepfashion`, `gta5` (K = 40 samples, full test sets; they need the
dataset under `data/` or `--set DATA_ROOT=...`, the authors' CLVAE weights under
`checkpoints/official/<dataset>/latest_net_{G,E}.pth`, and the ablation variants trained with
`python -m smis.train --run-dir outputs/runs/<dataset>_<variant>`; notebook 02 trains the GauGAN-VAE
baseline into the run's folder, `<out>/<profile>/runs/<dataset>_gaugan_vae`).

Everything a run writes lies under `--out` (default `outputs/`), in `<out>/<profile>/`: each executed
notebook as `NN_topic.ipynb`, its figures and tables in `NN_topic/`, SynthScenes in `data/`, training
runs in `runs*/`, and `REPORT.md` gathering every table (`*.md`). A parameter string may hold `{out}`,
replaced by that folder. The parameters that name a folder a notebook writes (`WRITTEN_FOLDERS`) must
lie under it; inputs (datasets, models) may be anywhere.

`--set NAME=VALUE` (VALUE read as JSON, else as a string) overrides a parameter in every notebook of the
run that declares NAME, `--set 05.NAME=VALUE` in the notebooks starting with `05`. A name no notebook
of the run declares (in its cell tagged `parameters`) is an error that lists the valid ones. Everything
(profile, --only, --set, the notebooks and their parameters) is checked before any folder is created.
A failing notebook stops the run with a non-zero exit that names the notebook and the cell.

Threads: kernels run with OMP_WAIT_POLICY=PASSIVE and OPENBLAS_NUM_THREADS=1 unless these are set.
On a 2-core machine shared with other jobs, spinning OpenMP / OpenBLAS threads made a training step
5.9 s instead of 1.1 s (PASSIVE) and a Fréchet distance's eigendecomposition 40x slower. `--threads N`
also sets the kernels' torch threads (OMP_NUM_THREADS); on that busy machine 1 thread was fastest
(0.64 s per step).
"""
from __future__ import annotations

import argparse
import ast
import difflib
import hashlib
import json
import os
import sys
import time
from contextlib import contextmanager
from pathlib import Path

from smis.utils import atomic_write_json, atomic_write_text, project_root, resolve

# The shipped SynthScenes demo models (scripts/train_demo_models.py).
DEMO_MODELS = "clvae:checkpoints/synthscenes_clvae.pt,gaugan_vae:checkpoints/synthscenes_gaugan_vae.pt"
ABLATIONS = "clvae,no_classwise,no_layerwise,clvae_L3,clvae_L5"

# Notebook parameters naming a folder the notebook writes into: in a run, each one a notebook declares
# must be given (by the profile, `--set`, or for OUT_DIR by reproduce) and lie under the run's folder.
WRITTEN_FOLDERS = ("OUT_DIR", "DATA_DIR", "RUN_DIR", "RUN_ROOT")
# Folder parameters a notebook only reads (a dataset): anywhere. Every *_DIR / *_ROOT parameter of a
# numbered notebook is in one of the two lists (tests/test_reproduce.py checks it).
READ_FOLDERS = ("DATA_ROOT",)


def _paper_profile(dataset: str, root: str, split: str, batch: int) -> dict[str, dict]:
    """The paper's evaluation of one dataset: full test split, K = 40, the published CLVAE weights,
    GauGAN-VAE trained by notebook 02 into the run's folder, the ablations from the user's training
    runs (outputs/runs/<dataset>_<variant>, read only)."""
    runs = f"outputs/runs/{dataset}"
    baseline = f"{{out}}/runs/{dataset}_gaugan_vae"
    data = {"DATASET": dataset, "DATA_ROOT": root, "SPLIT": split, "N_TEST": 0, "BATCH": batch}
    clvae = f"clvae:official:{dataset}:checkpoints/official/{dataset}"
    return {
        "01_prepare_data": {"DATA_ROOT": root, "DATA_FORMAT": dataset, "DATA_DIR": "{out}/data/synthscenes"},
        # the baseline has no published weights: 02 trains it (the preset's full schedule; GPUs)
        "02_train": {"VARIANT": "gaugan_vae", "PRESET": dataset, "DATASET": dataset, "DATA_ROOT": root, "STEPS": None,
                     "BATCH": None, "RUN_DIR": baseline, "FRESH": False},
        "03_reconstruction_rq1": {**data, "MODELS": f"{clvae},gaugan_vae:{baseline}"},
        "04_diversity_rq2": {**data, "MODELS": f"{clvae},gaugan_vae:{baseline}", "K": 40, "N_STYLE": 0,
                             "FACTORS": False, "MASKS_PER_BATCH": 4},
        "05_ablations": {**data, "TRAIN_STEPS": 0, "K": 40, "VARIANTS": ABLATIONS, "RUN_ROOT": "{out}/runs_ablation",
                         "MODELS": ",".join([clvae] + [f"{v}:{runs}_{v}" for v in ABLATIONS.split(",")[1:]])},
    }


# profile -> notebook stem -> papermill parameters (OUT_DIR is added per notebook). Every parameter must
# be declared by its notebook; every folder the notebooks write is under {out} (WRITTEN_FOLDERS).
# Notebooks 03-06 read no files of 01: without DATA_ROOT they generate SynthScenes on the fly
# (deterministic from seed, split and index).
PROFILES: dict[str, dict[str, dict]] = {
    "smoke": {
        "01_prepare_data": {"SMOKE": True, "DATA_DIR": "{out}/data/synthscenes"},
        "02_train": {"SMOKE": True, "VARIANT": "clvae", "RUN_DIR": "{out}/runs/02_clvae"},
        "03_reconstruction_rq1": {"SMOKE": True, "MODELS": DEMO_MODELS},
        "04_diversity_rq2": {"SMOKE": True, "MODELS": DEMO_MODELS},
        "05_ablations": {"SMOKE": True, "TRAIN_STEPS": 2, "RUN_ROOT": "{out}/runs_ablation"},
        "06_interactive_editing": {"SMOKE": True},
    },
    "demo": {
        "01_prepare_data": {"SIZE": 128, "N_TRAIN": 2000, "N_TEST": 200, "DATA_DIR": "{out}/data/synthscenes"},
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


def declared_parameters(notebook: str | Path,   # an .ipynb file
                        ) -> list[str]:
    """The names the notebook's one cell tagged `parameters` assigns at its top level, in order
    (papermill overrides exactly these). SystemExit naming the file when the cell is missing, doubled
    or not Python."""
    notebook = Path(notebook)
    cells = [c for c in json.loads(notebook.read_text())["cells"]
             if "parameters" in c.get("metadata", {}).get("tags", [])]
    if len(cells) != 1:
        raise SystemExit(f"{notebook}: {len(cells)} cells tagged 'parameters', reproduce needs exactly one. Fix: tag "
                         "the cell of parameters (`# %% tags=[\"parameters\"]` in notebooks/src) and rebuild.")
    source = cells[0]["source"]
    source = "".join(source) if isinstance(source, list) else source
    try:
        tree = ast.parse(source)
    except SyntaxError as e:
        raise SystemExit(f"{notebook}: its parameters cell is not Python ({e.msg}, line {e.lineno}). Fix the cell.") from None
    names: list[str] = []
    for node in tree.body:
        targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(node, ast.AnnAssign) else []
        for t in targets:
            for n in (t.elts if isinstance(t, ast.Tuple) else [t]):
                if isinstance(n, ast.Name) and n.id not in names:
                    names.append(n.id)
    return names


class NotebookFailed(RuntimeError):
    pass


def _digest(params: dict) -> str:
    return hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:16]


def run_profile(profile: str,                          # a key of `profiles`
                only: list[str] | None = None,         # notebook numbers / name prefixes to run; None: all
                resume: bool = False,                  # skip notebooks already run with the same parameters
                out_root: str | Path = "outputs",      # the run writes only under out_root/profile (relative: to the repo)
                kernel: str = "smis",                  # Jupyter kernel name
                log=print,                             # progress lines go here
                profiles: dict | None = None,          # profile -> stem -> parameters; None: PROFILES
                notebook_dir: Path | None = None,      # where the NN_topic.ipynb files are; None: notebooks/
                overrides: list[str] | None = None,    # `--set` items: NAME=VALUE or NN.NAME=VALUE
                threads: int | None = None,            # the kernels' torch threads; None: torch's default
                ) -> Path:
    """Execute the profile's notebooks in order; return the profile's output folder. Every argument and
    parameter is checked (`plan_profile`) before the first folder is created."""
    if threads is not None and threads < 1:
        raise SystemExit(f"--threads {threads}: give at least 1")
    out, plan = plan_profile(profile, only, out_root, profiles, notebook_dir, overrides)
    with _kernel_env(threads):
        return _run_plan(profile, out, plan, resume, kernel, log, notebook_dir or project_root() / "notebooks")


def plan_profile(profile: str,                         # a key of `profiles`
                 only: list[str] | None = None,        # notebook numbers / name prefixes to run; None: all
                 out_root: str | Path = "outputs",     # the run's folder is out_root/profile
                 profiles: dict | None = None,         # profile -> stem -> parameters; None: PROFILES
                 notebook_dir: Path | None = None,     # where the NN_topic.ipynb files are; None: notebooks/
                 overrides: list[str] | None = None,   # `--set` items: NAME=VALUE or NN.NAME=VALUE
                 ) -> tuple[Path, list[tuple[str, dict]]]:
    """(the run's folder, [(notebook stem, its final papermill parameters)]) without writing anything.
    SystemExit, naming the value and the fix, for an unknown profile or --only, a --set prefix or name no
    notebook of the run declares, a missing notebook, a profile parameter its notebook does not declare,
    or a written folder (WRITTEN_FOLDERS) that is not given or not under the run's folder."""
    sets = parse_overrides(overrides)
    profiles = PROFILES if profiles is None else profiles
    if profile not in profiles:
        raise SystemExit(f"unknown profile {profile!r}. Fix: use one of {sorted(profiles)}.")
    root = project_root()
    out = Path(os.path.normpath(Path(out_root) / profile if Path(out_root).is_absolute() else root / out_root / profile))
    notebooks = profiles[profile]
    if only:
        unknown = [o for o in only if not any(nb.startswith(o) for nb in notebooks)]
        if unknown:
            raise SystemExit(f"--only {unknown} matches no notebook of profile {profile!r}: {list(notebooks)}")
        notebooks = {nb: p for nb, p in notebooks.items() if any(nb.startswith(o) for o in only)}
    bad = sorted({p for p, _, _ in sets if p and not any(nb.startswith(p) for nb in notebooks)})
    if bad:
        raise SystemExit(f"--set prefixes {bad} match no notebook to run: {list(notebooks)}")
    nb_dir = notebook_dir or root / "notebooks"
    absent = [stem for stem in notebooks if not (nb_dir / f"{stem}.ipynb").exists()]
    if absent:
        raise SystemExit(f"notebooks {absent} of profile {profile!r} are not in {nb_dir}. Fix: build them with "
                         "`python scripts/build_notebooks.py`, or leave them out with --only.")
    declared = {stem: declared_parameters(nb_dir / f"{stem}.ipynb") for stem in notebooks}
    for stem, params in notebooks.items():
        undeclared = sorted(set(params) - set(declared[stem]))
        if undeclared:
            raise SystemExit(f"profile {profile!r} gives {stem} the parameters {undeclared}, which "
                             f"{nb_dir / f'{stem}.ipynb'} does not declare (it has {declared[stem]}). Fix: declare them "
                             f"in its parameters cell (notebooks/src/{stem}.py, then rebuild) or drop them from the profile.")
        if "OUT_DIR" not in declared[stem]:
            raise SystemExit(f"{nb_dir / f'{stem}.ipynb'} declares no OUT_DIR parameter, so reproduce cannot keep its "
                             "outputs in the run's folder. Fix: add `OUT_DIR = \"...\"` to its parameters cell.")
    targets = []   # per --set item: the notebooks it goes to
    for prefix, name, _ in sets:
        key = f"{prefix}.{name}" if prefix else name
        if name == "OUT_DIR":
            raise SystemExit(f"--set {key}: reproduce sets OUT_DIR itself, to <out>/<profile>/NN_topic. "
                             "Fix: choose the folder with --out.")
        scope = [stem for stem in notebooks if stem.startswith(prefix)]
        takers = [stem for stem in scope if name in declared[stem]]
        if not takers:
            valid = sorted({n for stem in scope for n in declared[stem]} - {"OUT_DIR"})
            close = difflib.get_close_matches(name, valid, n=3)
            hint = f" Did you mean {' or '.join(close)}?" if close else ""
            where = f"notebooks {scope}" if prefix else f"any notebook of this run ({', '.join(scope)})"
            raise SystemExit(f"--set {key}: {name} is not a parameter of {where}.{hint} Valid names: {', '.join(valid)}. "
                             "Fix: use one of them (a notebook's parameters are its first code cell).")
        targets.append(takers)
    out_str = str(out.relative_to(root)) if out.is_relative_to(root) else str(out)
    plan = []
    for stem, params in notebooks.items():
        params = {**params, **{n: v for (_, n, v), takers in zip(sets, targets) if stem in takers}}
        params = {k: v.replace("{out}", out_str) if isinstance(v, str) else v for k, v in params.items()}
        params["OUT_DIR"] = f"{out_str}/{stem}"
        for name in WRITTEN_FOLDERS:
            if name not in declared[stem]:
                continue
            if not isinstance(params.get(name), str) or not params[name]:
                raise SystemExit(f"profile {profile!r} gives {stem} no {name}: its default would write outside the run's "
                                 f"folder {out}. Fix: set it under '{{out}}' in the profile or with --set {stem[:2]}.{name}=...")
            if not resolve(params[name]).resolve().is_relative_to(out.resolve()):
                raise SystemExit(f"{stem}: {name}={params[name]!r} is outside the run's folder {out}, and a run writes "
                                 f"only there. Fix: a path under it ('{{out}}/...' in --set or the profile), or another --out.")
        plan.append((stem, params))
    return out, plan


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


def _engine_kwargs() -> dict:
    """papermill/nbclient options: CurveZMQ transport encryption for kernels whose kernelspec declares it
    (ipykernel's does), which also silences the kernel's "running over TCP without encryption" warning.
    Nothing on a jupyter_client without the option or a pyzmq without CurveZMQ."""
    import zmq
    from jupyter_client.manager import KernelManager
    from traitlets.config import Config

    if "transport_encryption" not in KernelManager.class_trait_names() or not zmq.has("curve"):
        return {}
    return {"config": Config({"KernelManager": {"transport_encryption": "auto"}})}


def _run_plan(profile: str, out: Path, plan: list[tuple[str, dict]], resume: bool, kernel: str, log,
              nb_dir: Path) -> Path:
    import papermill as pm

    root = project_root()
    out.mkdir(parents=True, exist_ok=True)
    state_path = out / ".completed.json"
    state = json.loads(state_path.read_text()) if state_path.exists() else {}
    engine = _engine_kwargs()
    for stem, params in plan:
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
                                progress_bar=False, log_output=False, **engine)
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
    p.add_argument("--out", default="outputs", help="output root (relative to the repository); a run writes only under OUT/PROFILE")
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
