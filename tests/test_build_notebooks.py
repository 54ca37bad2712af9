"""scripts/build_notebooks.py: the notebooks are jupytext's pairs of their percent sources (jupytext.toml),
rebuilt byte for byte, with the smis kernel, stable ids and no outputs; a stale one is reported."""
import importlib.util
import os
import shutil
import subprocess
import sys

import jupytext
import nbformat
import pytest

from smis.utils import project_root

ROOT = project_root()
SOURCES = sorted((ROOT / "notebooks" / "src").glob("[0-9][0-9]_*.py"))

spec = importlib.util.spec_from_file_location("build_notebooks", ROOT / "scripts" / "build_notebooks.py")
build_notebooks = importlib.util.module_from_spec(spec)
spec.loader.exec_module(build_notebooks)


def _copy_repo(tmp_path, stems=("02_train",)):
    """The builder, jupytext.toml and some notebook pairs in a folder of their own."""
    (tmp_path / "scripts").mkdir()
    (tmp_path / "notebooks" / "src").mkdir(parents=True)
    shutil.copy(ROOT / "scripts" / "build_notebooks.py", tmp_path / "scripts")
    shutil.copy(ROOT / "jupytext.toml", tmp_path)
    for stem in stems:
        shutil.copy(ROOT / "notebooks" / "src" / f"{stem}.py", tmp_path / "notebooks" / "src")
        shutil.copy(ROOT / "notebooks" / f"{stem}.ipynb", tmp_path / "notebooks")
    return tmp_path


def test_every_source_is_paired_with_its_notebook():
    assert len(SOURCES) == 6
    for src in SOURCES:
        assert build_notebooks.notebook_path(src) == ROOT / "notebooks" / f"{src.stem}.ipynb"


@pytest.mark.parametrize("src", SOURCES, ids=lambda p: p.stem)
def test_built_notebook_is_deterministic_and_bare(src):
    """Two builds of one source are the same file; smis kernel, ids cell-000..., no outputs, prose without '# '."""
    a, b = (jupytext.writes(build_notebooks.build_notebook(src), fmt="ipynb") for _ in range(2))
    assert a == b
    nb = nbformat.reads(a, as_version=4)
    nbformat.validate(nb)
    assert nb.metadata.kernelspec == {"name": "smis", "display_name": "Python (smis)", "language": "python"}
    assert [c.id for c in nb.cells] == [f"cell-{i:03d}" for i in range(len(nb.cells))]
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(c.outputs == [] and c.execution_count is None for c in code)
    assert code[0].metadata.tags == ["parameters"]
    assert nb.cells[0].cell_type == "markdown" and nb.cells[0].source.startswith(f"# {src.stem[:2]} · ")


@pytest.mark.parametrize("src", SOURCES, ids=lambda p: p.stem)
def test_sources_need_no_header(src):
    """Writing the built notebook back under jupytext.toml (what JupyterLab's jupytext does on save)
    gives the source byte for byte: no YAML header, no cell metadata but tags."""
    config = jupytext.config.load_jupytext_config(str(src))
    nb = build_notebooks.build_notebook(src)
    assert jupytext.writes(nb, fmt="py:percent", config=config) == src.read_text(encoding="utf-8")


def test_check_reports_a_stale_notebook_and_build_fixes_it(tmp_path):
    repo = _copy_repo(tmp_path)
    run = lambda *a: subprocess.run([sys.executable, "scripts/build_notebooks.py", *a], cwd=repo,
                                    capture_output=True, text=True)
    assert run("--check").returncode == 0
    src, dst = repo / "notebooks" / "src" / "02_train.py", repo / "notebooks" / "02_train.ipynb"
    before = dst.read_bytes()
    src.write_text(src.read_text() + '\n# %% [markdown]\n# A new closing remark.\n')
    r = run("--check")
    assert r.returncode == 1 and "stale: notebooks/02_train.ipynb" in r.stdout
    assert dst.read_bytes() == before                      # --check writes nothing
    assert run().returncode == 0
    assert nbformat.read(dst, as_version=4).cells[-1].source == "A new closing remark."
    assert run("--check").returncode == 0


def test_jupytext_sync_leaves_a_built_pair_alone(tmp_path):
    """`jupytext --sync` (either file the newer) agrees with the builder: it rewrites neither file."""
    stems = [s.stem for s in SOURCES]
    repo = _copy_repo(tmp_path, stems)
    files = [repo / "notebooks" / f"{s}.ipynb" for s in stems] + [repo / "notebooks" / "src" / f"{s}.py" for s in stems]
    before = [f.read_bytes() for f in files]
    for newer in (files[:len(stems)], files[len(stems):]):   # the notebooks, then the sources, modified last
        for f in newer:
            os.utime(f, ns=(f.stat().st_atime_ns, f.stat().st_mtime_ns + 10**10))
        r = subprocess.run([sys.executable, "-m", "jupytext", "--sync", *map(str, files[len(stems):])], cwd=repo,
                           capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        assert [f.read_bytes() for f in files] == before
