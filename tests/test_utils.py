import io
import os
import random
import stat

import pytest
import torch

from smis.utils import (TORCH_FILE_HEADS, CorruptCheckpoint, atomic_path, atomic_write_json, markdown_table,
                        project_root, resolve, safe_load)


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


def test_random_bytes_are_never_a_checkpoint_whatever_the_unpickler_trips_over(tmp_path):
    """Bytes that are no torch file raise CorruptCheckpoint 'not a readable torch checkpoint' (never a bare
    IndexError / KeyError / UnicodeDecodeError from the unpickler, nor the 'truncated' message). Seeds 2, 20
    and 195 at 64 bytes are ones the unpickler used to end with IndexError, KeyError and UnicodeDecodeError."""
    path = tmp_path / "random.pt"
    for seed in [2, 20, 195] + list(range(300, 500)):
        data = random.Random(seed).randbytes(64)
        assert not data.startswith(TORCH_FILE_HEADS)
        path.write_bytes(data)
        with pytest.raises(CorruptCheckpoint, match=r"random\.pt \(64 bytes\) is not a readable torch checkpoint"):
            safe_load(path)


@pytest.mark.parametrize("legacy", [False, True])
def test_a_cut_torch_file_is_truncated_or_corrupt(tmp_path, legacy):
    buf = io.BytesIO()
    torch.save({"w": torch.arange(1000.0)}, buf, _use_new_zipfile_serialization=not legacy)
    path = tmp_path / "cut.pt"
    for n in (4, 100, len(buf.getvalue()) // 2):
        path.write_bytes(buf.getvalue()[:n])
        with pytest.raises(CorruptCheckpoint, match=rf"cut\.pt \({n} bytes\) is truncated or corrupt.*Fix:"):
            safe_load(path)
