"""Run the numbered notebooks headlessly with papermill, one profile of parameters at a time.

    python -m smis.reproduce --profile demo            # SynthScenes demo (the README's main command)
    python -m smis.reproduce --profile smoke           # tiny, CPU, minutes (CI)
    python -m smis.reproduce --profile demo --only 01  # some notebooks only
    python -m smis.reproduce --profile demo --resume   # skip notebooks already run with the same parameters
    python -m smis.reproduce --profile ade20k --set DATA_ROOT=/data/ADEChallengeData2016 05.MODELS=...
    python -m smis.reproduce --profile ade20k --check  # run nothing: list every input and its state

Profiles: `smoke` (CI), `demo` (SynthScenes with the shipped checkpoints in `checkpoints/`), and the
paper's settings `ade20k`, `deepfashion`, `gta5` (K = 40 samples, full test sets; they need the
dataset under `data/` or `--set DATA_ROOT=...`, the authors' CLVAE weights under
`checkpoints/official/<dataset>/latest_net_{G,E}.pth`, and the ablation variants trained with
`python -m smis.train --run-dir outputs/runs/<dataset>_<variant>`; notebook 02 trains the GauGAN-VAE
baseline into the run's folder, `<out>/<profile>/runs/<dataset>_gaugan_vae`). GroupDNet's row of Tables 2-3
(`GROUPDNET_ROW`): ade20k reads its published weights from `checkpoints/groupdnet/ade20k/`; deepfashion a
GroupDNet trained on the profile's 16-class data (their published one has 8 classes).

Preflight (`preflight`, `--check`): every input the planned notebooks read, with its state: each dataset
split (pairs counted, a sample opened by smis.data.check), the published weights (read with safe_load,
every key and shape checked), each training run evaluated (variant, preset, steps trained of the preset's
schedule), the run notebook 02 will train, the mask-fidelity segmenter of a real dataset (optional: absent,
the mask mIoU column reads "not measured"; `smis.real_segmenters`), the GPU, and the estimated GPU hours of
the training still to do. `--check` exits 0 only when every input is in place. A paper profile runs the
preflight first and stops before any folder is created when an input is missing or unusable; a *partial*
input (a run trained fewer steps than the schedule, or with preset fields changed) fails `--check` but lets a
run go on with a warning, and REPORT.md lists it. No GPU is reported, not a failure: the notebooks also run on a CPU.

Everything a run writes lies under `--out` (default `outputs/`), in `<out>/<profile>/`: each executed
notebook as `NN_topic.ipynb`, its figures and tables in `NN_topic/`, SynthScenes in `data/`, training
runs in `runs*/`, and `REPORT.md` gathering every table (`*.md`). A parameter string may hold `{out}`,
replaced by that folder. The parameters that name a folder a notebook writes (`WRITTEN_FOLDERS`) must
lie under it; inputs (datasets, models) may be anywhere.

`--set NAME=VALUE` (VALUE read as JSON, else as a string) overrides a parameter in every notebook of the
run that declares NAME, `--set 05.NAME=VALUE` in the notebooks starting with `05`. A name no notebook
of the run declares (in its cell tagged `parameters`) is an error that lists the valid ones. Everything
(profile, --only, --set, the notebooks and their parameters) is checked before any folder is created.
A failing notebook stops the run with a non-zero exit that names the notebook and the cell. Each `--set` value
must fit the type of the parameter (an annotation such as `STEPS: "Optional[int]" = 300`, else the default's type;
numbers must be finite): `--set SIZE=NaN` is refused. A value a notebook replaces under `SMOKE` is reported.

One run per folder: a run holds `<out>/<profile>/.lock` (smis.rundir) for its whole life, and a second run
on the same folder is refused, naming the holder. Each notebook is executed into a hidden temporary
`.NN_topic.partial.ipynb` and renamed to `NN_topic.ipynb` when it has finished; a failing one is kept as
`NN_topic.failed.ipynb`. Ctrl-C (SIGINT) or SIGTERM stops the run with one line (exit 130 / 143): the
notebook in progress is deleted, those finished are kept, and `--resume` skips them next time. Errors with a
message of their own are printed without a traceback; `SMIS_TRACEBACK=1` shows it.

Threads: kernels run with OMP_WAIT_POLICY=PASSIVE and OPENBLAS_NUM_THREADS=1 unless these are set:
spinning OpenMP / OpenBLAS threads slow every job on a CPU shared with others (measured: benchmarks/RESULTS.md,
"Kernel threads on a shared CPU"). `--threads N` also sets the kernels' torch threads (OMP_NUM_THREADS);
on a busy machine fewer threads can be faster.
"""
from __future__ import annotations

import argparse
import signal
import sys

from smis.data import DatasetError
from smis.reproduce.plan import plan_profile
from smis.reproduce.preflight import PreflightFailed, preflight
from smis.reproduce.profiles import PROFILES
from smis.reproduce.runner import NotebookFailed, RunInterrupted, run_profile, sigterm_as_interrupt, stopping_signal
from smis.rundir import RunDirBusy
from smis.utils import CheckpointError, show_tracebacks


def main(argv: list[str] | None = None,   # the arguments; None: sys.argv[1:]
         ) -> int:
    """The command line (the module docstring is its help): the exit status, 0 when the run or --check passed."""
    p = argparse.ArgumentParser(prog="python -m smis.reproduce", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--profile", default="demo", help=f"one of {sorted(PROFILES)}")
    p.add_argument("--only", nargs="+", help="notebook numbers or names to run (e.g. 01 03)")
    p.add_argument("--resume", action="store_true", help="skip notebooks already run with the same parameters")
    p.add_argument("--out", default="outputs",
                   help="output root (relative to the repository); a run writes only under OUT/PROFILE")
    p.add_argument("--kernel", default="smis", help="Jupyter kernel name")
    p.add_argument("--set", nargs="+", metavar="[NN.]NAME=VALUE", help="override notebook parameters (VALUE as JSON)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads in the notebooks (default: torch's)")
    p.add_argument("--check", action="store_true",
                   help="run nothing: list every input of the run and its state (exit 0 only when all are in place)")
    a = p.parse_args(argv)
    if a.check:
        _, plan = plan_profile(a.profile, a.only, a.out, overrides=a.set)
        report = preflight(a.profile, plan)
        print(report.to_text())
        return 0 if report.complete else 1
    with sigterm_as_interrupt():
        try:
            out = run_profile(a.profile, a.only, a.resume, a.out, a.kernel, overrides=a.set, threads=a.threads)
        except RunInterrupted as e:
            print(f"[reproduce] {signal.Signals(e.signum).name}: {e}", file=sys.stderr)
            return 128 + e.signum
        except KeyboardInterrupt:   # between notebooks (the preflight, the report)
            sig = stopping_signal()
            print(f"[reproduce] {signal.Signals(sig).name}: interrupted; the notebooks finished so far are kept; "
                  "rerun with --resume to skip them.", file=sys.stderr)
            return 128 + sig
        except PermissionError as e:
            if show_tracebacks():
                raise
            print(f"[reproduce] ERROR: cannot write {e.filename or a.out}: {e.strerror or e}. Fix: choose an --out you "
                  "may write to (SMIS_TRACEBACK=1 shows the traceback).", file=sys.stderr)
            return 2
        except (RunDirBusy, DatasetError, CheckpointError) as e:
            if show_tracebacks():
                raise
            print(f"[reproduce] ERROR: {e} (SMIS_TRACEBACK=1 shows the traceback)", file=sys.stderr)
            return 2
        except PreflightFailed:
            print(f"[reproduce] STOPPED before the first notebook: inputs are missing or unusable (above). Fix them, "
                  f"then check with `python -m smis.reproduce --profile {a.profile} --check`.", file=sys.stderr)
            return 1
        except NotebookFailed as e:
            print(f"[reproduce] FAILED: {e}", file=sys.stderr)
            return 1
    print(f"[reproduce] profile {a.profile} complete: {out / 'REPORT.md'}")
    return 0

