"""Run the numbered notebooks headlessly with papermill, one profile of parameters at a time.

    python -m smis.reproduce --profile demo            # SynthScenes demo (the README's main command)
    python -m smis.reproduce --profile smoke           # tiny, CPU, minutes (CI)
    python -m smis.reproduce --profile demo --only 01  # some notebooks only
    python -m smis.reproduce --profile demo --resume   # skip notebooks already run with the same parameters

Each executed notebook lands in `outputs/<profile>/NN_topic.ipynb`, its figures and tables in
`outputs/<profile>/NN_topic/`, and `outputs/<profile>/REPORT.md` gathers every table (`*.md`).
A failing notebook stops the run with a non-zero exit that names the notebook and the cell.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path

from smis.utils import atomic_write_json, atomic_write_text, project_root

# profile -> notebook stem -> papermill parameters (OUT_DIR is added per notebook)
PROFILES: dict[str, dict[str, dict]] = {
    "smoke": {
        "01_prepare_data": {"SMOKE": True, "DATA_DIR": "outputs/smoke/data/synthscenes"},
    },
    "demo": {
        "01_prepare_data": {"SIZE": 128, "N_TRAIN": 2000, "N_TEST": 200, "DATA_DIR": "data/synthscenes"},
    },
}


class NotebookFailed(RuntimeError):
    pass


def _digest(params: dict) -> str:
    return hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:16]


def run_profile(profile: str, only: list[str] | None = None, resume: bool = False, out_root: str | Path = "outputs",
                kernel: str = "smis", log=print, profiles: dict | None = None, notebook_dir: Path | None = None) -> Path:
    """Execute the profile's notebooks in order; return the profile's output folder."""
    import papermill as pm

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
    for stem, params in notebooks.items():
        params = {**params, "OUT_DIR": str((out / stem).relative_to(root)) if out.is_relative_to(root) else str(out / stem)}
        key = _digest(params)
        if resume and state.get(stem) == key and (out / f"{stem}.ipynb").exists():
            log(f"[reproduce] {stem}: already done with these parameters, skipped (--resume)")
            continue
        src = (notebook_dir or root / "notebooks") / f"{stem}.ipynb"
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
        log(f"[reproduce] {stem} done in {time.time() - t0:.0f} s -> {dst.relative_to(root) if dst.is_relative_to(root) else dst}")
    write_report(out, profile)
    return out


def write_report(out: Path, profile: str) -> Path:
    """REPORT.md: every Markdown table the notebooks wrote, under its notebook's heading."""
    parts = [f"# smis report: profile `{profile}`\n",
             "Tables written by the notebooks (metric and backbone names as measured; a fallback metric is never "
             "reported under the paper's name).\n"]
    for nb_dir in sorted(p for p in out.iterdir() if p.is_dir() and p.name[:2].isdigit()):
        tables = sorted(nb_dir.glob("*.md"))
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
    a = p.parse_args(argv)
    try:
        out = run_profile(a.profile, a.only, a.resume, a.out, a.kernel)
    except NotebookFailed as e:
        print(f"[reproduce] FAILED: {e}", file=sys.stderr)
        return 1
    print(f"[reproduce] profile {a.profile} complete: {out / 'REPORT.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
