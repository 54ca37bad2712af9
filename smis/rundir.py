"""One training run per run directory: a lock file naming its holder.

    with RunDirLock(run_dir):        # refuses while another live process holds run_dir
        ...train...

The lock is `RUN_DIR/.lock`, a JSON line {pid, host, started, command}, held with `flock` for the
lifetime of the process: the kernel drops the flock when the holder exits or is killed, so a lock
file left by a dead process is recognised (it can be locked again) and taken over with a message
naming the old holder. A second run while the first is alive is refused with RunDirBusy, naming the
holder's pid, host, start time and command. `smis.reproduce` locks its `<out>/<profile>` folder the same way.

Under the lock, `remove_stale_temporaries` deletes what an interrupted atomic write left (`.NAME.XXXX.tmp`,
e.g. a 66 MB `checkpoints/.step_*.pt.*.tmp` after SIGKILL), and `clear_run` empties a run folder for a fresh
start: only the files a training run writes (RUN_FILES), and only in a folder that holds a smis run.
"""
from __future__ import annotations

import fcntl
import json
import os
import shutil
import socket
import sys
import time
from pathlib import Path


class RunDirBusy(RuntimeError):
    """Another live process holds the run directory."""


class RunDirLock:
    """Exclusive use of a run directory by this process (see the module docstring)."""

    def __init__(self, run_dir: str | os.PathLike,   # the folder to lock (created if missing)
                 log=None,                            # callable for the takeover message; default stderr
                 fix: str = "pass another --run-dir",  # the last way out, in the refusal
                 ):
        self.run_dir, self.fix = Path(run_dir), fix
        self.path = self.run_dir / ".lock"
        self.log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
        self._fd: int | None = None

    def acquire(self) -> "RunDirLock":
        self.run_dir.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _read(fd)
                os.close(fd)
                raise RunDirBusy(
                    f"{self.run_dir} is in use by another run (pid {holder.get('pid', '?')} on "
                    f"{holder.get('host', '?')}, started {holder.get('started', '?')}: {holder.get('command', '?')}). "
                    "Two runs in one folder would mix their files. Fix: wait for it to finish, stop it, or "
                    f"{self.fix}.") from None
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if not same:          # the holder removed the file between our open and flock: try again
                os.close(fd)
                continue
            break
        old = _read(fd)
        if old.get("pid") is not None:
            self.log(f"[smis] {self.path}: taking over a stale lock of pid {old['pid']} on {old.get('host', '?')} "
                     f"(started {old.get('started', '?')}), a process that ended without releasing it.")
        me = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%d %H:%M:%S"),
              "command": " ".join(sys.argv)}
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(me) + "\n").encode(), 0)
        os.fsync(fd)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            self.path.unlink(missing_ok=True)     # before unlocking: a waiter never locks a removed file for good
        finally:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> "RunDirLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def _read(fd: int) -> dict:
    """The holder recorded in an open lock file ({} when empty or unreadable)."""
    try:
        data = os.pread(fd, 4096, 0).decode()
        return json.loads(data) if data.strip() else {}
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return {}


# What a training run writes into its folder (smis.train, smis.runlog): all that `clear_run` deletes.
RUN_FILES = ("checkpoints", "losses.csv", "tensorboard", "config.json", "ddp_check.json")


def remove_stale_temporaries(run_dir: str | os.PathLike) -> list[tuple[Path, int]]:
    """Delete the temporaries of interrupted atomic writes (smis.utils.atomic_path: `.NAME.XXXXXXXX.tmp`) in
    the run folder and its checkpoints/; [(path, bytes)] removed. Call it only while holding the folder's lock:
    a live run's temporary is still being written."""
    run_dir = Path(run_dir)
    removed = []
    for folder in (run_dir, run_dir / "checkpoints"):
        for tmp in sorted(folder.glob(".*.tmp")) if folder.is_dir() else []:
            if tmp.is_file() and not tmp.is_symlink():
                size = tmp.stat().st_size
                tmp.unlink(missing_ok=True)
                removed.append((tmp, size))
    return removed


def is_training_run(run_dir: str | os.PathLike) -> bool:
    """True when `run_dir/config.json` is one smis.train wrote (an object with `variant` and `resolved`)."""
    try:
        conf = json.loads((Path(run_dir) / "config.json").read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return False
    return isinstance(conf, dict) and "variant" in conf and isinstance(conf.get("resolved"), dict)


def clear_run(run_dir: str | os.PathLike) -> list[str]:
    """Delete the files of a previous training run in `run_dir` (RUN_FILES only: other files stay) for a fresh
    start; the names deleted. Call it only while holding the folder's lock (Trainer.fit(fresh=True) does).
    A folder that holds anything but is no smis run (no config.json of smis.train) is refused with
    FileExistsError: a mistyped RUN_DIR must not delete someone's files."""
    run_dir = Path(run_dir)
    present = sorted(p.name for p in run_dir.iterdir() if p.name != ".lock") if run_dir.is_dir() else []
    if not present:
        return []
    if not is_training_run(run_dir):
        raise FileExistsError(f"{run_dir} holds {', '.join(present[:5])}{' ...' if len(present) > 5 else ''} but no "
                              "smis training run (no config.json written by smis.train), so a fresh start does not "
                              "delete it. Fix: choose a new or empty folder for the run, or empty this one yourself.")
    removed = []
    for name in RUN_FILES:
        path = run_dir / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif path.exists() or path.is_symlink():
            path.unlink()
        else:
            continue
        removed.append(name)
    return removed
