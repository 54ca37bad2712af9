"""Does bf16 autocast (or another change of numerics) change SynthScenes training? The first steps' losses of
reference and candidate runs against the run-to-run noise of the reference itself (two seeds).

Trains clvae on the shipped configuration (`scripts/train_demo_models.py`: 64x64, batch 8, 4,000 generated
images, channels_last, 1 thread per run, constant learning rate) for `--steps` steps with seeds 0 and 1 in
fp32 and in bf16 (`--jobs` runs at a time), then compares the window means of every logged loss:
"noise" is |fp32 seed 0 - fp32 seed 1|, "bf16 gap" is |bf16 seed s - fp32 seed s| (same seed: same init,
data and latent noise), both per window of `--window` steps. bf16 is within the noise for a loss when its
mean gap over the windows is at most the mean noise. Writes benchmarks/results/precision_losses_cpu.json.

    python benchmarks/bench_precision_losses.py                 # 4 runs x 200 steps, 2 at a time (~5 min, quiet)
    python benchmarks/bench_precision_losses.py --runs /tmp/runs --existing    # compare runs already there

Another candidate than bf16: `--fast-precision fp32 --bf16-flags=--fused-adam --base <worktree of the old code>`
compares this checkout's fp32 runs with fused Adam (the candidate, "bf16" in the JSON's run names) against the old
code's fp32 runs (the reference, "fp32"): e.g. a change that moves floats by rounding only (issue 26's SPADE gathers
at 64x64).
"""
from __future__ import annotations

import argparse
import csv
import os
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

LOSSES = ("g_total", "g_gan", "g_fm", "g_perceptual", "kl", "d_hinge")


def train(run_dir: Path, precision: str, seed: int, steps: int, extra: list[str] = (), root: Path = HERE.parent
          ) -> float:
    """One `python -m smis.train` run of the code in `root` (`extra`: more of its flags); its wall time in seconds."""
    cmd = [sys.executable, "-m", "smis.train", "--variant", "clvae", "--preset", "synthscenes", "--steps", str(steps),
           "--no-lr-decay", "--batch-size", "8", "--data-length", "4000", "--data-seed", "0", "--seed", str(seed),
           "--run-dir", str(run_dir), "--threads", "1", "--ckpt-every", str(steps), "--log-every", "1",
           "--no-tensorboard", "--no-progress", "--channels-last", "--image-every", "0", "--precision", precision,
           *extra]
    t0 = time.perf_counter()
    with open(run_dir.with_suffix(".log"), "w") as log:
        rc = subprocess.call(cmd, cwd=root, stdout=log, stderr=subprocess.STDOUT,
                             env={**os.environ, "PYTHONPATH": str(root)})
    if rc:
        raise SystemExit(f"training failed (exit {rc}): see {run_dir.with_suffix('.log')}")
    return time.perf_counter() - t0


def commit(root: Path) -> str | None:
    """The git commit checked out in `root` (None outside a git work tree)."""
    try:
        return subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def read_losses(run_dir: Path, steps: int) -> dict[str, list[float]]:
    rows = list(csv.DictReader(open(run_dir / "losses.csv")))
    if len(rows) < steps:
        raise SystemExit(f"{run_dir / 'losses.csv'} has {len(rows)} steps, expected {steps}")
    return {k: [float(r[k]) for r in rows[:steps]] for k in LOSSES}


def windows(values: list[float], size: int) -> list[float]:
    return [statistics.fmean(values[i:i + size]) for i in range(0, len(values), size)]


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--window", type=int, default=50)
    p.add_argument("--jobs", type=int, default=2, help="runs at a time (1 thread each)")
    p.add_argument("--runs", default=None, help="where the runs go (default: a temporary folder)")
    p.add_argument("--existing", action="store_true", help="compare the runs already in --runs")
    p.add_argument("--out", help="JSON path (default benchmarks/results/precision_losses_cpu.json)")
    p.add_argument("--bf16-flags", default="", help="more smis.train flags of the bf16 runs only, e.g. '--fused-adam' "
                   "(the fast configuration of scripts/train_demo_models.py)")
    p.add_argument("--fast-precision", default="bf16", choices=["bf16", "bf16-g", "bf16-g-coarse", "fp32"],
                   help="the candidate runs' precision (fp32: a change of code or flags, not of precision)")
    p.add_argument("--base", default=None, help="code root of the reference (fp32) runs, e.g. a git worktree of the "
                   "commit before a change; default: this checkout")
    a = p.parse_args(argv)
    from common import machine_info, pick_device, results_path
    from smis.utils import atomic_write_json
    runs = Path(a.runs or tempfile.mkdtemp(prefix="smis_precision_"))
    runs.mkdir(parents=True, exist_ok=True)
    names = [(prec, seed) for prec in ("fp32", "bf16") for seed in (0, 1)]
    walls = {}
    start = machine_info(pick_device("cpu"))
    if not a.existing:
        with ThreadPoolExecutor(a.jobs) as pool:
            futures = {n: pool.submit(train, runs / f"{n[0]}_s{n[1]}", a.fast_precision if n[0] == "bf16" else "fp32",
                                      n[1], a.steps, a.bf16_flags.split() if n[0] == "bf16" else [],
                                      Path(a.base).resolve() if a.base and n[0] == "fp32" else HERE.parent)
                       for n in names}
            walls = {f"{n[0]}_s{n[1]}": round(f.result(), 1) for n, f in futures.items()}
    data = {n: read_losses(runs / f"{n[0]}_s{n[1]}", a.steps) for n in names}
    rows = {}
    for k in LOSSES:
        w = {n: windows(data[n][k], a.window) for n in names}
        noise = [abs(x - y) for x, y in zip(w["fp32", 0], w["fp32", 1])]
        gap = [abs(x - y) for s in (0, 1) for x, y in zip(w["bf16", s], w["fp32", s])]
        rows[k] = {"window_means": {f"{p}_s{s}": [round(v, 5) for v in w[p, s]] for p, s in names},
                   "noise_fp32_seed0_vs_seed1": [round(v, 5) for v in noise],
                   "gap_bf16_vs_fp32_same_seed": [round(v, 5) for v in gap],
                   "mean_noise": statistics.fmean(noise), "mean_gap": statistics.fmean(gap),
                   "first_step_rel_diff_bf16_vs_fp32": [abs(data["bf16", s][k][0] - data["fp32", s][k][0])
                                                        / max(abs(data["fp32", s][k][0]), 1e-12) for s in (0, 1)],
                   "within_noise": statistics.fmean(gap) <= statistics.fmean(noise)}
    result = {"benchmark": "clvae SynthScenes, first steps' losses: bf16 autocast vs fp32, against fp32's seed noise",
              "config": {"steps": a.steps, "window": a.window, "runs": str(runs), "existing": a.existing,
                         "command_of_each_run": "python -m smis.train --variant clvae --preset synthscenes --steps "
                         f"{a.steps} --no-lr-decay --batch-size 8 --data-length 4000 --seed S --threads 1 "
                         "--channels-last --precision P ...", "bf16_flags": a.bf16_flags,
                         "candidate_precision": a.fast_precision, "reference_code": str(a.base or HERE.parent),
                         "reference_commit": commit(Path(a.base or HERE.parent)), "candidate_code": str(HERE.parent),
                         "candidate_commit": commit(HERE.parent)},
              "wall_s": walls, "losses": rows, "machine_at_start": start,
              "machine": machine_info(pick_device("cpu"))}
    out = a.out or str(results_path("precision_losses_cpu.json"))
    atomic_write_json(result, out)
    cand = "bf16" if a.fast_precision == "bf16" else "candidate"     # the JSON's run names say bf16 either way
    print(f"first {a.steps} steps, windows of {a.window}: mean |fp32 s0 - fp32 s1| (noise) vs mean |{cand} - fp32| "
          "(same seed)" + (f"; reference code {a.base}" if a.base else ""))
    print(f"| loss | noise (fp32 seeds) | {cand} gap | within noise | first-step rel. diff |")
    print("|---|---|---|---|---|")
    for k, r in rows.items():
        print(f"| {k} | {r['mean_noise']:.4f} | {r['mean_gap']:.4f} | {'yes' if r['within_noise'] else 'NO'} "
              f"| {max(r['first_step_rel_diff_bf16_vs_fp32']):.1e} |")
    print(f"wrote {out}")
    return result


if __name__ == "__main__":
    main()
