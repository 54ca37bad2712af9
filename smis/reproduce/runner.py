"""Running a planned profile: each notebook executed with papermill, its wall time, and REPORT.md.

Owns `run_profile` (plan, preflight for a paper profile, then the notebooks in order under the run's lock),
the kernels' thread settings, a notebook's execution into a hidden temporary renamed when it has run
(`NotebookFailed`, `RunInterrupted`; SIGTERM handled like Ctrl-C: `sigterm_as_interrupt`), `--resume`'s record
(.completed.json), the wall times (timings.json) and `write_report` (REPORT.md: every table the notebooks wrote).
"""
from __future__ import annotations

import hashlib
import json
import os
import signal
import time
from contextlib import contextmanager
from pathlib import Path

import papermill as pm
import zmq
from jupyter_client.manager import AsyncKernelManager, KernelManager
from traitlets.config import Config

from smis.progress import CONSOLE_ENV
from smis.reproduce.parameters import smoke_report
from smis.reproduce.plan import plan_profile
from smis.reproduce.preflight import Preflight, PreflightFailed, preflight
from smis.reproduce.profiles import PAPER_PROFILES
from smis.rundir import RunDirLock
from smis.utils import atomic_write_json, atomic_write_text, project_root


class NotebookFailed(RuntimeError):
    """A notebook raised; the message names it, the cell and the executed copy kept with the traceback."""


class RunInterrupted(RuntimeError):
    """Ctrl-C or SIGTERM stopped the run; the message says what is kept. `signum`: the signal."""

    def __init__(self, message: str, signum: int = signal.SIGINT):
        super().__init__(message)
        self.signum = signum


def _digest(params: dict) -> str:
    return hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:16]


def run_profile(profile: str,                          # a key of `profiles`
                only: list[str] | None = None,         # notebook numbers / name prefixes to run; None: all
                resume: bool = False,                  # skip notebooks already run with the same parameters
                out_root: str | Path = "outputs",      # the run writes only under out_root/profile
                                                       # (relative: to the repo)
                kernel: str = "smis",                  # Jupyter kernel name
                log=print,                             # progress lines go here
                profiles: dict | None = None,          # profile -> stem -> parameters; None: PROFILES
                notebook_dir: Path | None = None,      # where the NN_topic.ipynb files are; None: notebooks/
                overrides: list[str] | None = None,    # `--set` items: NAME=VALUE or NN.NAME=VALUE
                threads: int | None = None,            # the kernels' torch threads; None: torch's default
                check_inputs: bool | None = None,      # run the preflight first; None: for PAPER_PROFILES
                ) -> Path:
    """Execute the profile's notebooks in order; return the profile's output folder. Every argument and
    parameter is checked (`plan_profile`) before the first folder is created; a paper profile then runs the
    preflight and raises PreflightFailed, before any folder exists, when an input is missing or unusable
    (partial inputs, such as runs trained fewer steps than the schedule, give a warning and the run goes on)."""
    if threads is not None and threads < 1:
        raise SystemExit(f"--threads {threads}: give at least 1")
    out, plan = plan_profile(profile, only, out_root, profiles, notebook_dir, overrides)
    report = None
    if check_inputs if check_inputs is not None else profile in PAPER_PROFILES:
        report = preflight(profile, plan, notebook_dir)
        log("[reproduce] " + report.to_text().replace("\n", "\n[reproduce] "))
        if not report.runnable:
            raise PreflightFailed(report.to_text())
        if not report.complete:
            log("[reproduce] WARNING: some inputs are partial (above): the tables will not be the paper's setting.")
    nb_dir = notebook_dir or project_root() / "notebooks"
    for stem, params in plan:
        said = smoke_report(stem, params, nb_dir / f"{stem}.ipynb")
        if said:
            log(f"[reproduce] NOTE: {said}")
    with _kernel_env(threads), RunDirLock(out, fix="pass another --out"):
        return _run_plan(profile, out, plan, resume, kernel, log, nb_dir, report)




@contextmanager
def _kernel_env(threads: int | None):
    """Thread settings the kernels inherit (see the module docstring); the caller's environment is restored."""
    keys = ("OMP_WAIT_POLICY", "OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", CONSOLE_ENV)
    saved = {k: os.environ.get(k) for k in keys}
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    if threads is not None:
        os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = str(threads)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


class _QuietShutdownKernelManager(AsyncKernelManager):
    """nbclient's kernel manager, except that it does not interrupt the kernel when shutting it down after the
    notebook has run (the kernel is idle then): jupyter_client sends SIGINT first, which ipykernel logged as
    "[IPKernelApp] ERROR | KeyboardInterrupt caught in kernel." at the end of every notebook."""

    async def _async_interrupt_kernel(self) -> None:
        if not self.shutting_down:
            await super()._async_interrupt_kernel()


def _engine_kwargs() -> dict:
    """papermill/nbclient options: the quiet-shutdown kernel manager; CurveZMQ transport encryption for kernels
    whose kernelspec declares it (ipykernel's does), which also silences the kernel's "running over TCP without
    encryption" warning (not on a jupyter_client without the option or a pyzmq without CurveZMQ)."""
    kwargs = {"kernel_manager_class": _QuietShutdownKernelManager}
    if "transport_encryption" not in KernelManager.class_trait_names() or not zmq.has("curve"):
        return kwargs
    return {**kwargs, "config": Config({"KernelManager": {"transport_encryption": "auto"}})}


def _run_plan(profile: str, out: Path, plan: list[tuple[str, dict]], resume: bool, kernel: str, log,
              nb_dir: Path, report: Preflight | None = None) -> Path:
    root = project_root()
    out.mkdir(parents=True, exist_ok=True)
    if report is not None:
        atomic_write_text(report.to_text() + "\n", out / "preflight.txt")
    state_path = out / ".completed.json"
    state = json.loads(state_path.read_text()) if state_path.exists() else {}
    engine = _engine_kwargs()
    for stem, params in plan:
        key = _digest(params)
        if resume and state.get(stem) == key and (out / f"{stem}.ipynb").exists():
            log(f"[reproduce] {stem}: already done with these parameters, skipped (--resume)")
            continue
        src = nb_dir / f"{stem}.ipynb"
        dst = out / f"{stem}.ipynb"
        log(f"[reproduce] {profile}: running {stem} with {params}")
        t0 = time.time()
        os.environ[CONSOLE_ENV] = stem   # the kernel's progress bars also print here, tagged (smis.progress)
        _execute(stem, src, dst, params, kernel, root, engine, done=[s for s, _ in plan[:plan.index((stem, params))]])
        state[stem] = key
        atomic_write_json(state, state_path)
        timings_path = out / "timings.json"
        timings = json.loads(timings_path.read_text()) if timings_path.exists() else {}
        timings[stem] = round(time.time() - t0, 1)
        atomic_write_json(timings, timings_path)
        log(f"[reproduce] {stem} done in {time.time() - t0:.0f} s -> "
            f"{dst.relative_to(root) if dst.is_relative_to(root) else dst}")
    write_report(out, profile)
    return out


def _execute(stem: str, src: Path, dst: Path, params: dict, kernel: str, root: Path, engine: dict,
             done: list[str]) -> None:
    """Execute `src` into a hidden temporary beside `dst` (papermill writes it cell by cell) and rename it to `dst`
    when it has run; a failing notebook is kept as NN_topic.failed.ipynb (NotebookFailed), an interrupted one
    is deleted (RunInterrupted). `dst` from an earlier run stays until the new one has finished."""
    tmp = dst.with_name(f".{stem}.partial.ipynb")
    failed = dst.with_name(f"{stem}.failed.ipynb")
    try:
        pm.execute_notebook(str(src), str(tmp), parameters=params, kernel_name=kernel, cwd=str(root),
                            progress_bar=False, log_output=False, **engine)
    except pm.PapermillExecutionError as e:
        os.replace(tmp, failed)
        raise NotebookFailed(f"notebook {stem} failed in cell {e.cell_index} (execution count {e.exec_count}): "
                             f"{e.ename}: {e.evalue}. The executed copy with the traceback is {failed}.") from None
    except KeyboardInterrupt:
        tmp.unlink(missing_ok=True)
        kept = f"the notebooks finished before it are kept ({', '.join(done)})" if done else "none had finished"
        raise RunInterrupted(f"interrupted while running {stem}: its partial notebook was deleted, {kept}; rerun "
                             "with --resume to skip the finished ones.", stopping_signal()) from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, dst)
    failed.unlink(missing_ok=True)


_signal_received: int | None = None    # the signal that stopped the run (sigterm_as_interrupt), None: Ctrl-C or none


def _sigterm_handler(signum, frame):
    """SIGTERM handler of the CLI: stop like Ctrl-C (KeyboardInterrupt), remembering the signal for the exit code."""
    global _signal_received
    _signal_received = signum
    raise KeyboardInterrupt


@contextmanager
def sigterm_as_interrupt():
    """While inside, SIGTERM stops the run like Ctrl-C (KeyboardInterrupt); `stopping_signal` then says which signal
    it was. The previous SIGTERM handler is restored on leaving."""
    global _signal_received
    _signal_received = None
    previous = signal.signal(signal.SIGTERM, _sigterm_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def stopping_signal() -> int:
    """The signal behind the last KeyboardInterrupt of a run: SIGTERM under sigterm_as_interrupt, else SIGINT."""
    return _signal_received or signal.SIGINT


def write_report(out: Path, profile: str) -> Path:
    """REPORT.md: every Markdown table the notebooks wrote, under its notebook's heading."""
    parts = [f"# smis report: profile `{profile}`\n",
             "Tables written by the notebooks (metric and backbone names as measured; a fallback metric is never "
             "reported under the paper's name).\n"]
    timings_path = out / "timings.json"
    if timings_path.exists():
        timings = json.loads(timings_path.read_text())
        parts.append("\nWall time of the last run of each notebook: "
                     + ", ".join(f"{k} {v:.0f} s" for k, v in sorted(timings.items())) + ".\n")
    if (out / "preflight.txt").exists():   # what the tables were made from: partial inputs are named here
        parts.append(f"\n## Inputs (preflight)\n\n```\n{(out / 'preflight.txt').read_text().strip()}\n```\n")
    for nb_dir in sorted(p for p in out.iterdir() if p.is_dir() and p.name[:2].isdigit()):
        tables = sorted(nb_dir.glob("*.md"), key=lambda t: (t.stat().st_mtime_ns, t.name))   # the order written
        if not tables:
            continue
        parts.append(f"\n## {nb_dir.name}\n")
        for t in tables:
            parts.append(f"\n### {t.stem}\n\n{t.read_text().strip()}\n")
        figs = sorted(nb_dir.glob("*.png"))
        if figs:
            parts.append("\nFigures: " + ", ".join(f"[{f.name}]({nb_dir.name}/{f.name})" for f in figs) + "\n")
    return atomic_write_text("".join(parts), out / "REPORT.md")

