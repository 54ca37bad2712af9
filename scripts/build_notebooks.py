"""Build `notebooks/NN_topic.ipynb` from their sources `notebooks/src/NN_topic.py` (jupytext percent format).

The .py sources are what we edit and review; the .ipynb files are what users open and papermill runs.
`python scripts/build_notebooks.py` rewrites every notebook; `--check` exits 1 if any is stale.
Cells: `# %% [markdown]` (prose, lines start with "# "), `# %%` (code), `# %% tags=["parameters"]` (tagged).
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[1]
SRC, DST = ROOT / "notebooks" / "src", ROOT / "notebooks"
HEADER = re.compile(r"^# %%(?P<md> \[markdown\])?(?: tags=(?P<tags>\[.*\]))?\s*$")


def parse(text: str) -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    nb.metadata = {"kernelspec": {"name": "smis", "display_name": "Python (smis)", "language": "python"},
                   "language_info": {"name": "python"}}
    cell_lines: list[str] | None = None
    kind, tags = "code", []

    def flush():
        if cell_lines is None:
            return
        body = "\n".join(cell_lines).strip("\n")
        if kind == "markdown":
            body = "\n".join(l[2:] if l.startswith("# ") else l.lstrip("#") for l in body.splitlines())
            cell = nbformat.v4.new_markdown_cell(body)
        else:
            cell = nbformat.v4.new_code_cell(body)
        if tags:
            cell.metadata["tags"] = tags
        nb.cells.append(cell)

    for line in text.splitlines():
        m = HEADER.match(line)
        if m:
            flush()
            cell_lines, kind = [], ("markdown" if m["md"] else "code")
            tags = json.loads(m["tags"]) if m["tags"] else []
        elif cell_lines is not None:
            cell_lines.append(line)
    flush()
    for i, cell in enumerate(nb.cells):  # stable ids so rebuilding gives identical files
        cell["id"] = f"cell-{i:03d}"
    return nb


def build(check: bool = False) -> list[Path]:
    stale = []
    for src in sorted(SRC.glob("[0-9][0-9]_*.py")):
        dst = DST / (src.stem + ".ipynb")
        text = nbformat.writes(parse(src.read_text()), version=4) + "\n"
        if not dst.exists() or dst.read_text() != text:
            stale.append(dst)
            if not check:
                dst.write_text(text)
    return stale


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--check", action="store_true", help="only report notebooks that differ from their sources")
    a = p.parse_args()
    stale = build(check=a.check)
    for s in stale:
        print(("stale: " if a.check else "wrote ") + str(s.relative_to(ROOT)))
    sys.exit(1 if (a.check and stale) else 0)
