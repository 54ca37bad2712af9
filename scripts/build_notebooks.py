"""Build `notebooks/NN_topic.ipynb` from its jupytext-paired source `notebooks/src/NN_topic.py`.

The pairing (percent format, no YAML header, only `tags` kept as cell metadata) is declared once, in the
repository's `jupytext.toml`; jupytext reads the sources and writes the notebooks. The .py sources are what
we edit and review; the .ipynb files are what users open and papermill runs.

    python scripts/build_notebooks.py            # rewrite every stale notebook from its source
    python scripts/build_notebooks.py --check    # only list the stale ones; exit status 1 if there are any

Unlike `jupytext --sync` (which takes the inputs from whichever file of a pair was modified last, so after a
checkout or a merge it may rewrite a source from an older notebook), this build goes one way, source to
notebook, and its output is a function of the source alone: the kernelspec "smis" ("Python (smis)") that
`bash run.sh setup` installs and papermill runs, cell ids numbered in order (`cell-000`, ...), no outputs.
So an unchanged source rebuilds byte for byte, and `--check` is a plain comparison. On a built pair,
`jupytext --sync` (or saving in JupyterLab with jupytext) changes neither file.
"""
from __future__ import annotations

import argparse
import io
import sys
from pathlib import Path

import jupytext
import nbformat
from jupytext.config import load_jupytext_config
from jupytext.paired_paths import paired_paths

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "notebooks" / "src"
KERNELSPEC = {"name": "smis", "display_name": "Python (smis)", "language": "python"}   # run.sh setup installs it


def notebook_path(src: Path) -> Path:
    """The .ipynb that jupytext.toml pairs with the source `src` (notebooks/src/NN_topic.py)."""
    config = load_jupytext_config(str(src))
    formats = config.default_formats(str(src)) if config is not None else None
    if not formats:
        raise SystemExit(f"{src} is not paired: jupytext.toml at {ROOT} must pair notebooks/src/*.py with "
                         "notebooks/*.ipynb (formats = \"notebooks///ipynb,notebooks/src///py:percent\").")
    return Path(next(path for path, fmt in paired_paths(str(src), "py:percent", formats)
                     if fmt["extension"] == ".ipynb"))


def build_notebook(src: Path) -> nbformat.NotebookNode:
    """The notebook of source `src`: jupytext's cells, the smis kernelspec, ids cell-000, cell-001, ..."""
    nb = jupytext.read(src, fmt="py:percent")
    nb.metadata = {"kernelspec": dict(KERNELSPEC), "language_info": {"name": "python"}}
    for i, cell in enumerate(nb.cells):   # stable ids: rebuilding an unchanged source gives an identical file
        cell["id"] = f"cell-{i:03d}"
    return nb


def build(check: bool = False) -> list[Path]:
    """Rewrite every notebook that differs from its source (`check`: write nothing); returns those."""
    stale = []
    for src in sorted(SRC.glob("[0-9][0-9]_*.py")):
        dst = notebook_path(src)
        buffer = io.StringIO()
        jupytext.write(build_notebook(src), buffer, fmt="ipynb")   # the text jupytext writes to a file
        text = buffer.getvalue()
        if not dst.exists() or dst.read_text(encoding="utf-8") != text:
            stale.append(dst)
            if not check:
                dst.write_text(text, encoding="utf-8")
    return stale


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--check", action="store_true", help="only report notebooks that differ from their sources")
    a = p.parse_args()
    stale = build(check=a.check)
    for s in stale:
        print(("stale: " if a.check else "wrote ") + str(s.relative_to(ROOT)))
    sys.exit(1 if (a.check and stale) else 0)
