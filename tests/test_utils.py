import ast
import io
import re
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


# ---------------------------------------------------------------------------------------------
# Hostile pickles through numpy (issue 25): refused as unsafe before anything is built, never a crash


class _Call:
    """Pickles to the call f(*args) (+ BUILD with `state`): how a crafted file asks the unpickler for objects."""

    def __init__(self, f, args, state=None):
        self.f, self.args, self.state = f, args, state

    def __reduce__(self):
        return (self.f, self.args) if self.state is None else (self.f, self.args, self.state)


def _hostile_files(folder) -> dict[str, str]:
    """name -> what the refusal names; each file is a dict as load_model expects, with one hostile value."""
    import numpy as np

    import smis.utils

    u4 = np.dtype("u4")
    files = {
        # an object array whose element is the address 0x4141414141414141: segfaulted load_model (exit 139)
        "wild_pointer": (_Call(np.ndarray, ((1,), _Call(np.dtype, ("O8", False, True)), b"A" * 8)), r"numpy\.dtype"),
        "terabyte": (_Call(np.ndarray, ((2**40,), _Call(np.dtype, ("u1", False, True)))), r"numpy\.dtype"),
        "object_array_os_system": (np.array([os.system], dtype=object), r"numpy\.dtype\('O8'"),
        "object_array_of_dicts": (np.array([{"a": 1}, {"b": 2}], dtype=object), r"numpy\.dtype\('O8'"),
        # numpy's own pickle path with a uint32 dtype but a shape its bytes do not fill
        "short_buffer": (_Call(np.ndarray.__reduce__(np.zeros(0, np.uint32))[0], (np.ndarray, (0,), b"b"),
                               (1, (2**40,), u4, False, b"AAAA")), r"numpy\.ndarray with state"),
        "direct_ndarray": (_Call(np.ndarray, ((4,), u4)), r"numpy\.ndarray\("),
    }
    if hasattr(smis.utils, "_LegacyUint32Array"):   # smis's stand-in for numpy's array, named by a pickle directly
        files["standin_named_directly"] = (_Call(smis.utils._LegacyUint32Array, ()), r"_LegacyUint32Array\(\)")
    for name, (value, _) in files.items():
        torch.save({"format": value, "variant": "clvae"}, folder / f"{name}.pt")
    return {name: why for name, (_, why) in files.items()}


def test_hostile_numpy_pickles_are_refused_as_unsafe_in_a_subprocess(tmp_path):
    """The issue's bomb files, read by load_model in a child process: each is an UnsafeCheckpoint naming the file
    (not a segfault, not a MemoryError, not 'corrupt ... re-download it')."""
    import subprocess
    import sys

    files = _hostile_files(tmp_path)
    script = ("import sys\nfrom pathlib import Path\nfrom smis.checkpoint import load_model\n"
              "for p in sorted(Path(sys.argv[1]).glob('*.pt')):\n"
              "    try:\n        load_model(p)\n        print(p.stem, 'LOADED', flush=True)\n"
              "    except Exception as e:\n"
              "        print(p.stem, type(e).__name__, str(e).replace('\\n', ' '), flush=True)\n")
    r = subprocess.run([sys.executable, "-c", script, str(tmp_path)], capture_output=True, text=True, timeout=300,
                       env={**os.environ, "PYTHONPATH": str(project_root())})
    assert r.returncode == 0, f"the child died with {r.returncode}:\n{r.stdout}\n{r.stderr[-2000:]}"
    got = dict(line.split(" ", 1) for line in r.stdout.splitlines())
    assert set(got) == set(files)
    for name, why in files.items():
        assert got[name].startswith(f"UnsafeCheckpoint {tmp_path / name}.pt was refused: its pickle asks for "), name
        assert re.search(why, got[name]) and "Fix: use files written by smis" in got[name], got[name]
        assert "re-download" not in got[name]


def test_legacy_numpy_rng_state_still_reads_and_nothing_else_of_numpy(tmp_path):
    """A v1 training checkpoint's numpy RNG state (a 624-value uint32 array, in both of torch's formats) loads;
    the value comes back exact; the loader allows no numpy callable."""
    import numpy as np

    np.random.seed(11)
    want = np.random.get_state()
    for legacy in (False, True):
        torch.save({"rng": want}, tmp_path / "v1.pt", _use_new_zipfile_serialization=not legacy)
        got = safe_load(tmp_path / "v1.pt")["rng"]
        assert got[0] == "MT19937" and got[2:] == want[2:]
        assert np.asarray(got[1]).dtype == np.uint32 and np.array_equal(np.asarray(got[1]), want[1])
    from smis.utils import LEGACY_SAFE_GLOBALS
    allowed = [g[0] if isinstance(g, tuple) else g for g in LEGACY_SAFE_GLOBALS]
    assert not [g for g in allowed if getattr(g, "__module__", "").split(".")[0] == "numpy"]


def test_cpu_model_reads_the_model_name_line_else_the_platform(tmp_path):
    import platform

    from smis.utils import cpu_model
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC 9B45\nflags\t: fpu\n\n"
                    "processor\t: 1\nmodel name\t: AMD EPYC 9B45\n")
    assert cpu_model(info) == "AMD EPYC 9B45"
    info.write_text("processor\t: 0\nModel name\t: Neoverse-V2\n")       # lscpu's spelling on some kernels
    assert cpu_model(info) == "Neoverse-V2"
    assert cpu_model(tmp_path / "missing") == (platform.processor() or platform.machine())


def _torch_load_calls():
    root = project_root()
    for folder in ("smis", "scripts", "benchmarks", "tests", "notebooks/src"):
        files = sorted((root / folder).rglob("*.py"))
        assert files, f"no .py file found under {root / folder}: the scan would check nothing there"
        for py in files:
            for node in ast.walk(ast.parse(py.read_text())):
                if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "load"
                        and isinstance(node.func.value, ast.Name) and node.func.value.id == "torch"):
                    yield f"{py.relative_to(root)}:{node.lineno}", {k.arg: k.value for k in node.keywords}


def test_every_torch_load_in_the_project_uses_weights_only():
    calls = list(_torch_load_calls())
    assert len(calls) >= 3   # the scan finds the loads (smis.utils.safe_load, official, backbones...)
    bad = [where for where, kw in calls
           if not (isinstance(kw.get("weights_only"), ast.Constant) and kw["weights_only"].value is True)]
    assert not bad, f"torch.load without weights_only=True at {bad}; use smis.utils.safe_load"


ALLOC_FAULTS = """
import resource, sys, torch
from smis.utils import keep_freed_memory
if sys.argv[1] == "keep":
    assert keep_freed_memory() is True and keep_freed_memory() is True       # glibc here; idempotent
def faults(rounds=8):
    f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(rounds):
        torch.ones(48 << 18)                   # 48 MiB, above glibc's adaptive mmap threshold (32 MiB at most)
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0
faults(4)                                      # the heap settles (a block may not fit a freed hole at first)
print(faults())
"""


@pytest.mark.skipif(not hasattr(os, "confstr") or "glibc" not in (os.confstr("CS_GNU_LIBC_VERSION") or ""),
                    reason="glibc's mallopt only")
def test_keep_freed_memory_reuses_big_blocks_instead_of_faulting_in_fresh_pages():
    """By default every 48 MiB tensor is a fresh mmap: ~12k page faults each; kept, the heap reuses its blocks
    (at most an occasional fresh one where an aligned request does not fit the freed hole: 0 or 12,288 faults in
    eight rounds, measured)."""
    import subprocess
    import sys
    env = dict(os.environ, PYTHONPATH=str(project_root()))
    run = lambda mode: int(subprocess.run([sys.executable, "-c", ALLOC_FAULTS, mode], env=env, check=True,
                                          capture_output=True, text=True).stdout.split()[-1])
    default, kept = run("default"), run("keep")
    assert default > 8 * 10_000                   # 8 rounds x 12,288 pages of 4 KiB
    assert kept <= default / 4                    # at most 2 of the 8 rounds fault a fresh block
