"""Small shared helpers: device choice, safe checkpoint reading, atomic file writes, paths, the one image check."""
from __future__ import annotations

import json
import math
import numbers
import ctypes
import ctypes.util
import os
import pickle
import platform
import re
import struct
import tempfile
import zipfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch


def device_name(device: torch.device) -> str:
    """The device in words for provenance JSON: the GPU's name, or the CPU's architecture, cores and threads."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU ({platform.machine()}, {os.cpu_count()} cores, {torch.get_num_threads()} threads)"


def cpu_model(cpuinfo: str | os.PathLike = "/proc/cpuinfo") -> str:
    """The CPU's model name as /proc/cpuinfo (and lscpu) shows it, else the processor or machine type: speeds
    differ between the Intel Xeon and AMD EPYC machines this project runs on, so every timing records it."""
    try:
        for line in Path(cpuinfo).read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def pick_device(device: str | torch.device | None = None) -> torch.device:
    """The device to run on: the one asked for, else CUDA when present, else CPU."""
    if device is not None and str(device) != "auto":
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def cpu_has_fast_bf16() -> bool:
    """Whether this CPU multiplies bf16 natively (AVX512-BF16 or AMX tiles), where bf16 autocast speeds up
    training (the AMD EPYC here: 1.4-1.5x on SynthScenes); without them oneDNN emulates bf16 and autocast is
    slower than float32 (0.77x on the Intel Xeon without them, benchmarks/RESULTS.md)."""
    cpu = getattr(torch, "cpu", None)
    checks = (getattr(cpu, "_is_avx512_bf16_supported", None), getattr(cpu, "_is_amx_tile_supported", None))
    return any(bool(c()) for c in checks if c is not None)


# glibc mallopt parameters (malloc.h)
M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD = -1, -2, -3
MALLOC_KEEP = {M_MMAP_THRESHOLD: 1 << 30,     # blocks up to 1 GiB come from the heap, not from fresh mmap'd pages
               M_TRIM_THRESHOLD: 1 << 31,     # freed heap memory is kept for reuse up to 2 GiB, not trimmed
               M_TOP_PAD: 64 << 20}           # grow the heap 64 MiB at a time
_malloc_tuned: bool | None = None


def keep_freed_memory() -> bool:
    """Make glibc's malloc keep freed blocks for reuse (process-wide, once); True if it took effect.

    By default glibc serves every block above its mmap threshold (128 KiB, adapting up to 32 MiB) with fresh
    mmap'd pages and returns them to the OS on free, so a CPU training step, which allocates and frees thousands
    of feature-map-sized tensors, pays a page fault (and the kernel's zeroing) for every 4 KiB it touches anew:
    ~11,000 faults a step at SynthScenes' batch 8; keeping them makes its fp32 step 1.07x faster (A/B,
    benchmarks/RESULTS.md, issue 26).
    With MALLOC_KEEP the heap holds the step's peak and reuses it. The values computed are unchanged (same
    kernels on the same data; only where the buffers live). False, doing nothing, off glibc (macOS, musl,
    Windows)."""
    global _malloc_tuned
    if _malloc_tuned is None:
        name = ctypes.util.find_library("c") if platform.system() == "Linux" else None
        try:
            libc = ctypes.CDLL(name) if name else None
            mallopt = getattr(libc, "mallopt", None) if libc is not None and hasattr(libc, "gnu_get_libc_version") \
                else None
        except OSError:
            mallopt = None
        _malloc_tuned = bool(mallopt) and all(mallopt(param, value) == 1 for param, value in MALLOC_KEEP.items())
    return _malloc_tuned


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success rename it over `path`, else delete it.

    Readers never see a half-written file: the rename is atomic on POSIX file systems.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the file the permissions open() would
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> Path:
    """`torch.save` that never leaves a truncated checkpoint behind."""
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)
    return Path(path)


class CheckpointError(ValueError):
    """A checkpoint file cannot be used; the message names the file, what is wrong and the fix."""


class CorruptCheckpoint(CheckpointError):
    """The file is empty, truncated or not a `torch.save` file at all."""


class UnsafeCheckpoint(CheckpointError):
    """The file's pickle references Python objects beyond tensors and plain data; nothing was run."""


class _Refused(pickle.UnpicklingError):
    """Raised inside the unpickler by the legacy stand-ins below: the file asks for more than they build."""


def _refuse(what: str):
    raise _Refused(what)


class _LegacyUint32Dtype:
    """What `numpy.dtype('u4', False, True)` + its state (little-endian uint32) builds when smis reads a legacy
    file: a marker, not a numpy dtype. Any other dtype (objects 'O8', bytes 'u1', big-endian) is refused."""

    def __new__(cls, *args, **kwargs):           # a pickle naming this class directly gets nothing
        _refuse(f"{cls.__qualname__}{args}")

    def __setstate__(self, state):
        if state != (3, "<", None, None, None, -1, -1, 0):
            _refuse(f"numpy.dtype('u4') with state {state!r}")
        self.ready = True


class _LegacyUint32Array:
    """What numpy's `_reconstruct(ndarray, (0,), b'b')` + its state builds when smis reads a legacy file: the
    bytes of a 1-D little-endian uint32 array of at most LEGACY_ARRAY_MAX values (numpy's MT19937 key is 624),
    copied into a fresh numpy array by `__array__`. No numpy constructor runs while the file is read."""

    def __new__(cls, *args, **kwargs):
        _refuse(f"{cls.__qualname__}{args}")

    def __setstate__(self, state):
        ok = (isinstance(state, tuple) and len(state) == 5 and state[0] == 1 and isinstance(state[1], tuple)
              and len(state[1]) == 1 and type(state[1][0]) is int and 0 <= state[1][0] <= LEGACY_ARRAY_MAX
              and type(state[2]) is _LegacyUint32Dtype and getattr(state[2], "ready", False) and state[3] is False
              and type(state[4]) is bytes and len(state[4]) == 4 * state[1][0])
        if not ok:
            _refuse(f"numpy.ndarray with state {_short(state)} (only a 1-D uint32 array of at most "
                    f"{LEGACY_ARRAY_MAX} values is read)")
        self.data = state[4]

    def __array__(self, dtype=None, copy=None):
        return np.frombuffer(self.data, dtype="<u4").astype(np.uint32 if dtype is None else dtype)


LEGACY_ARRAY_MAX = 624      # values: numpy's MT19937 state, the only array smis ever wrote


class _NumpyName:
    """Stands for a numpy class named in a legacy pickle (`numpy.ndarray`, an argument of `_reconstruct`);
    calling it is refused."""

    def __init__(self, name):
        self.name = name

    def __call__(self, *args, **kwargs):
        _refuse(f"{self.name}{_short(args)}")


_NDARRAY = _NumpyName("numpy.ndarray")


def _legacy_reconstruct(cls, shape, tag):
    """numpy's `_reconstruct` as the legacy files call it (an empty ndarray, filled by its state), else refused."""
    if cls is not _NDARRAY or shape != (0,) or tag != b"b":
        _refuse(f"numpy.core.multiarray._reconstruct{_short((cls, shape, tag))}")
    return object.__new__(_LegacyUint32Array)


def _legacy_dtype(*args):
    if args != ("u4", False, True):
        _refuse(f"numpy.dtype{_short(args)}")
    return object.__new__(_LegacyUint32Dtype)


def _short(obj) -> str:
    text = repr(obj)
    return text if len(text) <= 120 else text[:117] + "..."


# What earlier smis files held beyond tensors and plain data: TorchVersion (a str) in exported models'
# provenance, numpy's uint32 RNG key in training checkpoints (format smis-train-v1). Allowed when reading so
# that those files keep loading; smis no longer writes them. No numpy callable is allowed: the numpy names
# map to smis's own stand-ins above, which build nothing but a uint32 buffer of at most 624 values (a numpy
# dtype or array built from a pickle's arguments can point anywhere in memory: an object array whose
# element is a pickled address crashes the interpreter when read).
LEGACY_SAFE_GLOBALS = [torch.torch_version.TorchVersion,
                       (_legacy_reconstruct, "numpy.core.multiarray._reconstruct"),
                       (_legacy_reconstruct, "numpy._core.multiarray._reconstruct"),
                       (_NDARRAY, "numpy.ndarray"), (_legacy_dtype, "numpy.dtype"),
                       _LegacyUint32Dtype, _LegacyUint32Array]

UNSAFE_FIX = ("nothing in it was run. smis loads every checkpoint with torch.load(weights_only=True) so that a file "
              "cannot run code on your machine. Fix: use files written by smis or the authors' published weights; "
              "if you made this file yourself, store plain data only (see README, Security).")


def safe_load(path: str | os.PathLike,                           # the checkpoint file
              map_location: str | torch.device | None = "cpu",  # torch.load's map_location
              mmap: bool = False,  # map the file instead of reading it (zip-format files; for read-only weights)
              ) -> Any:
    """`torch.load(path, weights_only=True)`, the only way smis reads a checkpoint.

    With `weights_only=True` the unpickler builds tensors, str/int/float/bool/None and lists, tuples and
    dicts of them (plus LEGACY_SAFE_GLOBALS), and refuses every other global (classes, functions such as
    `os.system`) before calling it: a hostile file raises `UnsafeCheckpoint` and runs nothing. Unreadable
    files (empty, truncated, random bytes) raise `CorruptCheckpoint`, a missing one FileNotFoundError;
    each message names the file and the fix. `mmap=True` makes loading large weights nearly free (pages
    are read when used); use it only for weights that are copied into a module, never for tensors that are
    then updated in place (optimiser states). Files in torch's legacy format are read as usual.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist (or is not a file). Fix: check the path.")
    try:
        with torch.serialization.safe_globals(LEGACY_SAFE_GLOBALS):
            return torch.load(path, map_location=map_location, weights_only=True,
                              mmap=mmap and zipfile.is_zipfile(path))
    except pickle.UnpicklingError as e:
        refused = next((c for c in _causes(e) if isinstance(c, _Refused)), None)
        if refused is not None:
            raise UnsafeCheckpoint(f"{path} was refused: its pickle asks for {refused}, which is neither a tensor "
                                   f"nor plain data, and {UNSAFE_FIX}") from None
        refused = re.search(r"GLOBAL ([\w.]+)", str(e))
        if refused:
            raise UnsafeCheckpoint(f"{path} was refused: its pickle calls {refused.group(1)}, which is neither a "
                                   f"tensor nor plain data, and {UNSAFE_FIX}") from None
        raise _corrupt(path, e) from None
    # what the unpickler raises on bytes that are no pickle (a memo or stack index out of range, a bad length)
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError, KeyError, IndexError, struct.error,
            OverflowError) as e:
        raise _corrupt(path, e) from None


def _causes(e: BaseException):
    """`e` and the exceptions it was raised from or during (torch re-raises the unpickler's error `from None`)."""
    while e is not None:
        yield e
        e = e.__cause__ or e.__context__


TORCH_FILE_HEADS = (b"PK\x03\x04", b"\x80\x02")   # torch.save's zip archive; its legacy pickle (protocol 2)


def _corrupt(path: Path, e: BaseException) -> CorruptCheckpoint:
    """The error for an unreadable file: one that starts like a torch file is cut short or damaged, any other
    is not a checkpoint at all (the message says which, whatever the unpickler happened to trip over)."""
    with open(path, "rb") as f:
        head = f.read(4)
    if head.startswith(TORCH_FILE_HEADS):
        return CorruptCheckpoint(f"{path} ({path.stat().st_size} bytes) is truncated or corrupt ({_reason(e)}). "
                                 "Fix: re-download or re-export it; a training run resumes from an older intact "
                                 "checkpoint by itself.")
    return CorruptCheckpoint(f"{path} ({path.stat().st_size} bytes) is not a readable torch checkpoint "
                             f"({_reason(e)}). Fix: the file is corrupt or not a checkpoint; re-download or "
                             "re-export it.")


def _reason(e: BaseException) -> str:
    """The informative line of a torch.load error (torch's are paragraphs of generic advice)."""
    generic = ("Weights only load failed", "Check the documentation", "Please file an issue", "In PyTorch")
    lines = [l.strip().removeprefix("WeightsUnpickler error:").strip() for l in str(e).splitlines()]
    lines = [l for l in lines if l and not l.startswith(generic)]
    return (lines[0].split(". ")[0] if lines else "") or type(e).__name__


def check_images(images: torch.Tensor,        # RGB images in [-1, 1], the generator's range
                 what: str = "images",         # the argument's name, for the message
                 per_mask: bool = False,       # also accept (N, K, 3, H, W): K images per mask
                 values: bool = True,          # also check dtype and range (one device sync; off in a training step)
                 ) -> None:
    """The one image check of the metrics, their backbones and the segmenter: (N, 3, H, W) (with `per_mask` also
    (N, K, 3, H, W)) floating-point RGB images in [-1, 1] (a small overshoot is allowed)."""
    dims = (4, 5) if per_mask else (4,)
    if not isinstance(images, torch.Tensor) or images.dim() not in dims or images.shape[-3] != 3:
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        if per_mask:
            raise ValueError(f"{what} must be (N, 3, H, W) or (N, K, 3, H, W) RGB images in [-1, 1], got {shape}; "
                             "add a batch axis with x[None]")
        raise ValueError(f"{what} must have shape (B, 3, H, W) with values in [-1, 1], got {shape}; "
                         "add a batch dimension with x[None] or convert grey images to RGB")
    if not values:
        return
    if not images.is_floating_point():
        raise TypeError(f"{what} must be floating point in [-1, 1], got dtype {images.dtype}; convert uint8 "
                        "images with x.float() / 127.5 - 1")
    if images.numel():
        lo, hi = torch.stack([images.min(), images.max()]).float().tolist()
        if not (math.isfinite(lo) and math.isfinite(hi)) or lo < -1.05 or hi > 1.05:
            raise ValueError(f"{what} must lie in [-1, 1] (the generator's range), found [{lo:.3g}, {hi:.3g}]; "
                             "convert [0, 1] images with 2 x - 1 and uint8 ones with x / 127.5 - 1")


def plain_data(obj: Any) -> Any:
    """`obj` as JSON-like plain data (str subclasses such as TorchVersion become str, tuples lists), so
    that files holding it load with `weights_only=True`; other objects are refused with their path."""
    def walk(o, where):
        if o is None or isinstance(o, torch.Tensor):
            return o
        if isinstance(o, (bool, np.bool_)):
            return bool(o)
        for kind, cast in ((str, str), (numbers.Integral, int), (numbers.Real, float)):
            if isinstance(o, kind):
                return cast(o)
        if isinstance(o, dict):
            return {str(k): walk(v, f"{where}.{k}") for k, v in o.items()}
        if isinstance(o, (list, tuple)):
            return [walk(v, f"{where}[{i}]") for i, v in enumerate(o)]
        raise TypeError(f"{where} is a {type(o).__name__}, not plain data (str, int, float, bool, None, list, dict, "
                        "tensor). Fix: store it as one of those, e.g. str(value).")
    return walk(obj, "value")


def atomic_write_text(text: str, path: str | os.PathLike) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def atomic_write_json(obj: Any, path: str | os.PathLike) -> Path:
    return atomic_write_text(json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n", path)


def show_tracebacks() -> bool:
    """Whether a command line prints the traceback of an error that has a message of its own (`SMIS_TRACEBACK=1`);
    by default smis.train and smis.reproduce print the message alone."""
    return os.environ.get("SMIS_TRACEBACK", "").strip().lower() not in ("", "0", "false", "no")


def project_root() -> Path:
    """The repository root (the folder holding `smis/`), whatever the current directory."""
    return Path(__file__).resolve().parents[1]


def resolve(path: str | os.PathLike) -> Path:
    """A path relative to the repository root (absolute paths pass through)."""
    p = Path(path).expanduser()
    return p if p.is_absolute() else project_root() / p


def markdown_table(df, floatfmt: str = ".4g") -> str:
    """A pandas DataFrame as a GitHub Markdown table (index included), without extra dependencies."""
    idx_name = df.index.name or ""
    cols = [idx_name] + [str(c) for c in df.columns]
    fmt = lambda v: format(v, floatfmt) if isinstance(v, float) else str(v)
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    lines += ["| " + " | ".join([str(i)] + [fmt(v) for v in row]) + " |"
              for i, row in zip(df.index, df.itertuples(index=False))]
    return "\n".join(lines) + "\n"
