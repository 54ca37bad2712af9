"""The demo (`python -m smis.reproduce --profile demo`), old code against new: per-notebook wall time,
whether every number of every table stayed the same (issue 26), and whether every file is the same (issue 24).

    python benchmarks/bench_demo.py --old e82ef9a --rounds 1            # runs both, interleaved (~20 min a round)
    python benchmarks/bench_demo.py --runs OLD_RUN NEW_RUN             # only compare finished runs (pairs)
    python benchmarks/bench_demo.py --old 6a4c339 --only 04 --rounds 2 # notebook 04 alone (issue 21's new systems)

`--old REV` extracts that commit (`git archive`) into a temporary folder and runs its demo there; the new
code is this working tree. Rounds alternate old, new, old, new, ... so a change of the machine's load hits
both. Each run writes under a temporary `--out`; the notebook times are the runs' `timings.json`. The
tables: every CSV a notebook writes (`NN_topic/*.csv`), number by number, the largest relative difference
per table (0 = identical); rows and columns only the new run has (more systems) are listed and the old ones
compared, and so are tables only the new run has. Timing tables (`editor_latency`) are listed but are
measurements of speed, not results. The files (`compare_files`): REPORT.md without its wall-time line and
timing columns, every table (CSV, Markdown) and JSON a notebook wrote byte for byte (timing tables aside), every
figure (PNG) byte for byte, the text each executed notebook printed (times, progress bars' elapsed and remaining
times, timing columns and the run's folder masked) and the README results block `scripts/demo_results.py`
renders from each run (its timings line aside). Writes benchmarks/results/NAME (default demo_ab_cpu.json) with
the machine (CPU model, load).
"""
from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nbformat
import numpy as np
import pandas as pd
import torch

from common import machine_info, write_json

ROOT = Path(__file__).resolve().parents[1]
TIMING_TABLES = ("editor_latency",)   # speed measurements: expected to differ between runs


def run_demo(tree: Path, out: Path, extra: list[str]) -> dict[str, float]:
    """Run the demo of the code in `tree` into `out`; its per-notebook seconds."""
    cmd = [sys.executable, "-m", "smis.reproduce", "--profile", "demo", "--out", str(out), *extra]
    t0 = time.time()
    subprocess.run(cmd, cwd=tree, check=True, env={**_env(), "PYTHONPATH": str(tree)})
    timings = json.loads((out / "demo" / "timings.json").read_text())
    timings["total"] = round(time.time() - t0, 1)
    return timings


def _env() -> dict:
    import os
    return {**os.environ, "MPLBACKEND": "Agg", "PYTHONUNBUFFERED": "1"}


def compare_tables(old: Path, new: Path) -> dict[str, dict]:
    """{notebook/table: {"max_rel_diff", "numbers", "same_shape"}} over the CSV tables of two demo runs."""
    out = {}
    for a in sorted(old.glob("[0-9][0-9]_*/*.csv")):
        key = f"{a.parent.name}/{a.stem}"
        b = new / a.parent.name / a.name
        if not b.exists():
            out[key] = {"missing_in_new": True}
            continue
        ta, tb = pd.read_csv(a, index_col=0), pd.read_csv(b, index_col=0)
        added = [str(i) for i in tb.index if i not in set(ta.index)] + [str(c) for c in tb.columns
                                                                         if c not in set(ta.columns)]
        if added and set(ta.index) <= set(tb.index) and set(ta.columns) <= set(tb.columns):
            tb = tb.loc[ta.index, ta.columns]   # rows / columns the new run adds (more systems): the old ones compared
        same = ta.shape == tb.shape and list(ta.columns) == list(tb.columns) and list(ta.index) == list(tb.index)
        na = ta.select_dtypes("number").to_numpy(float) if same else np.zeros(0)
        nb = tb.select_dtypes("number").to_numpy(float) if same else np.zeros(0)
        text_same = same and ta.select_dtypes(exclude="number").equals(tb.select_dtypes(exclude="number"))
        both = np.isfinite(na) & np.isfinite(nb) if same else np.zeros(0, bool)
        rel = np.abs(na - nb)[both] / np.maximum(np.abs(na[both]), 1e-300) if same else np.zeros(0)
        out[key] = {"same_shape": same, "text_cells_equal": bool(text_same),
                    "nan_pattern_equal": bool(same and np.array_equal(np.isnan(na), np.isnan(nb))),
                    "numbers": int(both.sum()), "max_rel_diff": float(rel.max()) if rel.size else 0.0,
                    "timing_table": a.stem in TIMING_TABLES, "added_in_new": added}
    for b in sorted(new.glob("[0-9][0-9]_*/*.csv")):
        if not (old / b.parent.name / b.name).exists():
            out[f"{b.parent.name}/{b.stem}"] = {"new_table": True}
    return out


TIMES = re.compile(r"\[\d\d:\d\d(?:<[\d:?]+)?\]|\b\d+(?:\.\d+)? ?(?:s|ms|min)\b|in \d+ s|/tmp/\S+|[\d.]+ ?it/s|"
                   r"ips=[\d.]+|\d+\.\d+ images/s")


TIMING_COLUMNS = ("images_per_s", "median_ms", "p90_ms")     # measured times in a printed or written table


def mask_timing_columns(text: str) -> str:
    """`text` with the values under a TIMING_COLUMNS header replaced by #: in Markdown tables (by cell) and in
    printed DataFrames (by the column's right edge, where pandas aligns the values)."""
    lines, masked_cells, edges = text.splitlines(), None, None
    for i, line in enumerate(lines):
        if line.startswith("|"):
            cells = line.split("|")
            if any(c.strip() in TIMING_COLUMNS for c in cells):
                masked_cells = [j for j, c in enumerate(cells) if c.strip() in TIMING_COLUMNS]
            elif masked_cells and not set(line) <= set("|-: "):
                lines[i] = "|".join("#" if j in masked_cells else c for j, c in enumerate(cells))
            continue
        masked_cells = None
        found = [m.end() for name in TIMING_COLUMNS for m in re.finditer(rf"\b{name}\b", line)]
        if found:
            edges = found
        elif edges and line.strip():
            lines[i] = re.sub(r"\S+", lambda m: "#" if m.end() in edges else m.group(0), line)
        else:
            edges = None
    return "\n".join(lines)


def report_text(run: Path) -> str:
    text = "\n".join(line for line in (run / "REPORT.md").read_text().splitlines()
                     if not line.startswith("Wall time of the last run"))
    return mask_timing_columns(text.replace(str(run), "<run>"))


def printed(nb_path: Path) -> str:
    """What an executed notebook showed as text, run-dependent parts masked (times, timing columns, its run's
    folder)."""
    out = []
    for cell in nbformat.read(nb_path, as_version=4).cells:
        for o in cell.get("outputs", []):
            text = o.get("text") or o.get("data", {}).get("text/markdown") or o.get("data", {}).get("text/plain") or ""
            out.append(TIMES.sub("#", mask_timing_columns("".join(text).replace(str(nb_path.parent), "<run>"))))
    return "\n".join(out)


def readme_block(run: Path) -> str:
    """The README results block scripts/demo_results.py renders from `run`, without its first (timings) line."""
    with tempfile.TemporaryDirectory() as tmp:
        readme = Path(tmp) / "README.md"
        readme.write_text((ROOT / "README.md").read_text())
        subprocess.run([sys.executable, str(ROOT / "scripts" / "demo_results.py"), str(run), "--readme", str(readme),
                        "--json", str(Path(tmp) / "d.json")], check=True, capture_output=True, cwd=ROOT)
        block = readme.read_text().split("<!-- demo-results:start -->\n", 1)[1].split("<!-- demo-results:end -->")[0]
    return block.split("\n", 1)[1]


def compare_files(old: Path, new: Path) -> dict:
    kinds: dict[str, dict] = {}

    def add(kind: str, name: str, same: bool) -> None:
        k = kinds.setdefault(kind, {"compared": 0, "differ": []})
        k["compared"] += 1
        if not same:
            k["differ"].append(name)

    add("REPORT.md (wall-time line aside)", "REPORT.md", report_text(old) == report_text(new))
    for pattern, kind in (("[0-9][0-9]_*/**/*.csv", "tables (csv)"), ("[0-9][0-9]_*/**/*.md", "tables (md)"),
                          ("[0-9][0-9]_*/**/*.json", "json"), ("[0-9][0-9]_*/**/*.png", "figures (png)")):
        names = sorted({str(p.relative_to(old)) for p in old.glob(pattern)} |
                       {str(p.relative_to(new)) for p in new.glob(pattern)})
        for name in names:
            if Path(name).stem in TIMING_TABLES:
                continue
            a, b = old / name, new / name
            add(kind, name, a.exists() and b.exists() and a.read_bytes() == b.read_bytes())
    for nb in sorted(old.glob("[0-9][0-9]_*.ipynb")):
        add("printed text of the notebooks (times masked)", nb.name,
            (new / nb.name).exists() and printed(nb) == printed(new / nb.name))
    if all(len(list(run.glob("[0-9][0-9]_*.ipynb"))) == len(list(old.glob("[0-9][0-9]_*.ipynb"))) > 1
           for run in (old, new)) and (old / "04_diversity_rq2.ipynb").exists():
        add("README results block (timings line aside)", "README.md", readme_block(old) == readme_block(new))
    # (not for a run of some notebooks only, --only: the README block needs the whole demo)
    return kinds


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--old", help="git revision of the old code (run here, extracted with git archive)")
    p.add_argument("--rounds", type=int, default=1, help="old/new pairs, interleaved")
    p.add_argument("--runs", nargs="+", metavar="RUN",
                   help="finished demo runs (their <out>/demo folders) instead of running: OLD NEW [OLD NEW ...], "
                        "one pair a round; the tables and files of the last pair are compared")
    p.add_argument("--set", nargs="+", default=[], help="passed to both runs' --set (e.g. a smaller N_TEST)")
    p.add_argument("--only", nargs="+", default=[], help="passed to both runs' --only (e.g. 04)")
    p.add_argument("--name", default="demo_ab_cpu.json", help="file under benchmarks/results/")
    a = p.parse_args(argv)
    if bool(a.old) == bool(a.runs):
        p.error("give --old REV (run both) or --runs OLD_RUN NEW_RUN (compare finished runs)")
    extra = (["--set", *a.set] if a.set else []) + (["--only", *a.only] if a.only else [])
    command = " ".join(["python", "benchmarks/bench_demo.py", *(argv or sys.argv[1:])])
    result = {"benchmark": "demo A/B", "command": command, "machine": machine_info(torch.device("cpu")), "rounds": []}
    if a.runs:
        if len(a.runs) % 2:
            p.error(f"--runs takes pairs OLD NEW, got {len(a.runs)} folders")
        for old_run, new_run in zip(map(Path, a.runs[::2]), map(Path, a.runs[1::2])):
            result["rounds"].append({k: json.loads((r / "timings.json").read_text()) for k, r in
                                     (("old", old_run), ("new", new_run))})
    else:
        tmp = Path(tempfile.mkdtemp(prefix="bench_demo_"))
        old_tree = tmp / "old"
        old_tree.mkdir()
        archive = subprocess.run(["git", "archive", a.old], cwd=ROOT, check=True, capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", str(old_tree)], input=archive, check=True)
        result["old_rev"] = a.old
        result["new_rev"] = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True,
                                           text=True).stdout.strip()
        for i in range(a.rounds):
            rnd = {}
            for label, tree in (("old", old_tree), ("new", ROOT)):
                rnd[label] = run_demo(tree, tmp / f"{label}_{i}", extra)
                print(f"round {i + 1} {label}: {rnd[label]}", flush=True)
            result["rounds"].append(rnd)
        old_run, new_run = tmp / f"old_{a.rounds - 1}" / "demo", tmp / f"new_{a.rounds - 1}" / "demo"
    notebooks = sorted({k for r in result["rounds"] for t in r.values() for k in t if k != "total"})
    summary = {}
    for nb in notebooks + ["sum"]:
        old = [sum(v for k, v in r["old"].items() if k != "total") if nb == "sum" else r["old"].get(nb, float("nan"))
               for r in result["rounds"]]
        new = [sum(v for k, v in r["new"].items() if k != "total") if nb == "sum" else r["new"].get(nb, float("nan"))
               for r in result["rounds"]]
        summary[nb] = {"old_s": statistics.median(old), "new_s": statistics.median(new),
                       "speedup": statistics.median(old) / statistics.median(new)}
    result["per_notebook_median"] = summary
    result["tables"] = compare_tables(old_run, new_run)
    result["files"] = compare_files(old_run, new_run)
    print(f"{'notebook':<26}{'old s':>9}{'new s':>9}{'speedup':>9}")
    for nb, s in summary.items():
        print(f"{nb:<26}{s['old_s']:>9.1f}{s['new_s']:>9.1f}{s['speedup']:>9.2f}")
    print(f"\n{'table':<52}{'numbers':>8}{'max rel diff':>14}")
    for key, t in result["tables"].items():
        if t.get("missing_in_new") or t.get("new_table"):
            print(f"{key:<52}{'missing in the new run' if t.get('missing_in_new') else 'new table':>22}")
            continue
        flag = " (timing)" if t["timing_table"] else "" if t["same_shape"] and t["text_cells_equal"] else " SHAPE/TEXT"
        added = f" (+ {', '.join(t['added_in_new'])})" if t["added_in_new"] else ""
        print(f"{key:<52}{t['numbers']:>8}{t['max_rel_diff']:>14.2e}{flag}{added}")
    print()
    for kind, k in result["files"].items():
        print(f"{kind}: {k['compared']} compared, {len(k['differ'])} differ" +
              (": " + ", ".join(k["differ"]) if k["differ"] else ""))
    write_json(result, a.name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
