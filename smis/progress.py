"""Progress of long loops, readable where the loop runs and afterwards.

    for s in progress(chunks(n, 8), desc="prior samples clvae"):   # an iterable (its len() is the total)
        ...
    with progress(total=300, desc="train clvae") as bar:           # or updated by hand
        bar.update(1)                                              # or bar.update_to(step)

Where the line goes:

- in a Jupyter kernel: one text output per bar, replaced in place (`display_id`), at most every
  `NOTEBOOK_INTERVAL` seconds and once at the end. Jupyter and papermill write the *last* replacement
  into the saved notebook, so an executed notebook shows each bar's final state ("13/13 [00:21]"), not
  the first frame a tqdm widget keeps ("0/13 [00:00<?]");
- in a terminal or script: tqdm on stderr (without a console tag);
- when the environment names a console (`CONSOLE_ENV`, set by `python -m smis.reproduce` to the notebook's
  name), also one line every `CONSOLE_INTERVAL` seconds and a last one on the kernel's original stderr,
  which is the terminal that runs the notebooks headlessly: `[04_diversity_rq2] prior samples clvae:
  6/13 (46 %) 41 s, ~48 s left`.
"""
from __future__ import annotations

import os
import sys
import time
from typing import Iterable, Iterator

CONSOLE_ENV = "SMIS_PROGRESS_CONSOLE"   # the notebook's name: its bars also go to the console
CONSOLE_INTERVAL = 10.0                 # seconds between console lines of one bar
NOTEBOOK_INTERVAL = 0.5                 # seconds between redraws of a bar in a notebook


def _clock(seconds: float) -> str:
    """'mm:ss' (or 'h:mm:ss') of a duration."""
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    return f"{h}:{rest // 60:02d}:{rest % 60:02d}" if h else f"{rest // 60:02d}:{rest % 60:02d}"


def _in_kernel() -> bool:
    """True inside a Jupyter kernel (a notebook, papermill), False in a terminal or script."""
    shell = sys.modules.get("IPython") and sys.modules["IPython"].get_ipython()
    return shell is not None and getattr(shell, "kernel", None) is not None


def _console_fd() -> int:
    """The file descriptor of the process's original stderr: in a kernel, ipykernel's copy of it (the
    terminal that started the kernel; output written there does not reach the notebook)."""
    try:
        return sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):
        return 2


class Progress:
    """A progress bar over an iterable or a count (see the module docstring for where it is shown)."""

    def __init__(self,
                 iterable: Iterable | None = None,   # what to iterate; None: update by hand
                 total: int | None = None,           # steps in all (default: len(iterable) when it has one)
                 desc: str = "",                     # what the bar counts, e.g. "prior samples clvae"
                 disable: bool = False,              # no output at all (the loop still runs)
                 unit: str = "it",                   # the unit tqdm shows in a terminal
                 initial: int = 0,                   # steps already done (a resumed run)
                 leave: bool = True,                 # tqdm in a terminal: keep the finished bar
                 console: str | None = None,         # the console's tag; None: the CONSOLE_ENV variable
                 ):
        if total is None and iterable is not None and hasattr(iterable, "__len__"):
            total = len(iterable)
        self.iterable, self.total, self.desc, self.disable = iterable, total, desc, disable
        self.n, self.postfix, self.closed = initial, "", False
        self.start = self._last_note = self._last_console = time.perf_counter()
        self.console = os.environ.get(CONSOLE_ENV) if console is None else console
        self._handle = self._tqdm = self._console_n = None
        if disable:
            return
        if _in_kernel():
            from IPython.display import display

            self._handle = display({"text/plain": self.line()}, raw=True, display_id=True)
        elif not self.console:   # a terminal: tqdm (with a console tag, its lines are the progress there)
            from tqdm import tqdm

            self._tqdm = tqdm(total=total, desc=desc, initial=initial, unit=unit, leave=leave, dynamic_ncols=True)
        if self.console:
            self._to_console()

    def __iter__(self) -> Iterator:
        if self.iterable is None:
            raise TypeError("this Progress has no iterable: use update() / update_to(), or pass one")
        try:
            for item in self.iterable:
                yield item
                self.update(1)
        finally:
            self.close()

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def line(self) -> str:
        """The bar as one line of text: 'desc: n/total (pct %) [elapsed<left]', plus the postfix."""
        elapsed = time.perf_counter() - self.start
        head = f"{self.desc}: " if self.desc else ""
        if self.total:
            done = min(self.n / self.total, 1.0)
            bar = "#" * int(20 * done) + "." * (20 - int(20 * done))
            left = (f"<{_clock(elapsed / done * (1 - done))}" if 0 < done < 1 else "")
            text = f"{head}{bar} {self.n}/{self.total} ({100 * done:.0f} %) [{_clock(elapsed)}{left}]"
        else:
            text = f"{head}{self.n} [{_clock(elapsed)}]"
        return text + (f" {self.postfix}" if self.postfix else "")

    def set_postfix(self, **values) -> None:
        """Values shown after the bar (`name=value`), e.g. the losses of a training step."""
        self.postfix = ", ".join(f"{k}={v}" for k, v in values.items())
        if self._tqdm is not None:
            self._tqdm.set_postfix(values, refresh=False)

    def update(self, n: int = 1) -> None:
        """n more steps done."""
        self.update_to(self.n + n)

    def update_to(self, n: int) -> None:
        """`n` steps done in all."""
        if self._tqdm is not None:
            self._tqdm.update(n - self.n)
        self.n = n
        if self.disable or self.closed:
            return
        now = time.perf_counter()
        if self._handle is not None and now - self._last_note >= NOTEBOOK_INTERVAL:
            self._handle.update({"text/plain": self.line()}, raw=True)
            self._last_note = now
        if self.console and now - self._last_console >= CONSOLE_INTERVAL:
            self._to_console()

    def close(self) -> None:
        """Show the final state (in the notebook, the console and the terminal) once."""
        if self.closed:
            return
        self.closed = True
        if self.disable:
            return
        if self._handle is not None:
            self._handle.update({"text/plain": self.line()}, raw=True)
        if self._tqdm is not None:
            self._tqdm.close()
        if self.console and self._console_n != self.n:   # not twice the same last line
            self._to_console()

    def _to_console(self) -> None:
        self._last_console, self._console_n = time.perf_counter(), self.n
        line = f"[{self.console}] {self.line()}\n"
        try:
            os.write(_console_fd(), line.encode("utf-8", "replace"))
        except OSError:           # no console to write to (closed): the notebook still shows the bar
            pass


def progress(iterable: Iterable | None = None, desc: str = "", total: int | None = None, disable: bool = False,
             **kwargs) -> Progress:
    """`Progress(iterable, total, desc, disable, ...)`: a drop-in for the `tqdm(...)` calls of smis."""
    return Progress(iterable, total=total, desc=desc, disable=disable, **kwargs)
