"""One training run per run directory: a lock file naming its holder.

    with RunDirLock(run_dir):        # refuses while another live process holds run_dir
        ...train...

The lock is `RUN_DIR/.lock`, a JSON line {pid, host, started, command}, held with `flock` for the
lifetime of the process: the kernel drops the flock when the holder exits or is killed, so a lock
file left by a dead process is recognised (it can be locked again) and taken over with a message
naming the old holder. A second run while the first is alive is refused with RunDirBusy, naming the
holder's pid, host, start time and command.
"""
from __future__ import annotations

import fcntl
import json
import os
import socket
import sys
import time
from pathlib import Path


class RunDirBusy(RuntimeError):
    """Another live process holds the run directory."""


class RunDirLock:
    """Exclusive use of a run directory by this process (see the module docstring)."""

    def __init__(self, run_dir: str | os.PathLike,   # the folder to lock (created if missing)
                 log=None):                           # callable for the takeover message; default stderr
        self.run_dir = Path(run_dir)
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
                    f"{self.run_dir} is in use by another training run (pid {holder.get('pid', '?')} on "
                    f"{holder.get('host', '?')}, started {holder.get('started', '?')}: {holder.get('command', '?')}). "
                    "Two runs in one folder would mix their checkpoints and logs. Fix: wait for it to finish, stop "
                    "it, or pass another --run-dir.") from None
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
