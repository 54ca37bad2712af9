import os
import stat

import pytest

from smis.utils import atomic_path, atomic_write_json, markdown_table, resolve, project_root


def test_atomic_path_replaces_only_on_success(tmp_path):
    target = tmp_path / "a" / "f.txt"
    atomic_write_json({"x": 1}, target)
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("crash")
    assert target.read_text().strip().startswith("{") and '"x": 1' in target.read_text()
    assert [p.name for p in target.parent.iterdir()] == ["f.txt"]  # no temporary left


def test_atomic_files_get_normal_permissions(tmp_path):
    umask = os.umask(0o022)
    try:
        atomic_write_json({}, tmp_path / "g.json")
    finally:
        os.umask(umask)
    assert stat.S_IMODE((tmp_path / "g.json").stat().st_mode) == 0o644


def test_resolve_and_markdown_table():
    import pandas as pd

    assert resolve("smis") == project_root() / "smis" and resolve("/tmp") == resolve("/tmp").absolute()
    md = markdown_table(pd.DataFrame({"a": [1.23456, 2.0]}, index=pd.Index(["x", "y"], name="k")))
    assert md.splitlines()[:3] == ["| k | a |", "|---|---|", "| x | 1.235 |"]
