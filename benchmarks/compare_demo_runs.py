"""Compare two runs of a reproduce profile file by file: is the new code's output the old code's?

    python benchmarks/compare_demo_runs.py OLD/demo NEW/demo --json benchmarks/results/demo_refactor_compare.json

Compared: REPORT.md without its wall-time line and timing columns; every table (`NN_*/*.csv`, `*.md`) and JSON a
notebook wrote, byte for byte (the tables of times only, TIMING_TABLES, aside); every figure (`NN_*/*.png`) byte for
byte; the text each executed notebook printed (stream and Markdown outputs, with run-dependent text masked: times,
progress bars' elapsed and remaining times, timing columns, the run's folder); and the README's results block that
`scripts/demo_results.py` renders from each run (its first line, the timings, aside).
Prints one line per kind and every file that differs, writes the same as JSON, exits 1 when anything differs.
"""
from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import nbformat
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import machine_info  # noqa: E402

TIMES = re.compile(r"\[\d\d:\d\d(?:<[\d:?]+)?\]|\b\d+(?:\.\d+)? ?(?:s|ms|min)\b|in \d+ s|/tmp/\S+|[\d.]+ ?it/s|"
                   r"ips=[\d.]+|\d+\.\d+ images/s")


TIMING_COLUMNS = ("images_per_s", "median_ms", "p90_ms")     # measured times in a printed or written table
TIMING_TABLES = ("editor_latency",)                          # tables of times only (notebook 06's slider latency)


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


def compare(old: Path, new: Path) -> dict:
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
    add("README results block (timings line aside)", "README.md", readme_block(old) == readme_block(new))
    return kinds


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("old", type=Path, help="the old code's run folder (e.g. /tmp/old/demo)")
    p.add_argument("new", type=Path, help="the new code's run folder")
    p.add_argument("--json", type=Path, help="write the comparison here")
    a = p.parse_args(argv)
    for run in (a.old, a.new):
        if not (run / "REPORT.md").exists():
            raise SystemExit(f"{run} has no REPORT.md. Fix: pass the profile's folder of a finished run "
                             "(python -m smis.reproduce --profile demo --out DIR writes DIR/demo)")
    kinds = compare(a.old, a.new)
    for kind, k in kinds.items():
        print(f"{kind}: {k['compared']} compared, {len(k['differ'])} differ" +
              (": " + ", ".join(k["differ"]) if k["differ"] else ""))
    if a.json:
        a.json.parent.mkdir(parents=True, exist_ok=True)
        a.json.write_text(json.dumps({"machine": machine_info(torch.device("cpu")), "old": str(a.old),
                                      "new": str(a.new),
                                      "not_compared": [f"{t}.csv/.md (times)" for t in TIMING_TABLES],
                                      "kinds": kinds}, indent=1))
    return int(any(k["differ"] for k in kinds.values()))


if __name__ == "__main__":
    sys.exit(main())
