"""A/B of the whole SynthScenes training loop across code versions: the shipped command (`python -m smis.train`
as `scripts/train_demo_models.py` runs it: data rendered on the fly, logging, the step), `--copies` runs of a
variant at a time (2 with one thread each: how the shipped models were trained on this 2-core CPU), variants
interleaved round by round (A B C A B C ...) so that load changes hit every variant alike.

Speed is what `smis.train` logs at the last step: images since the loop started / wall time (data, step and
logging; start-up and the final checkpoint excluded), summed over the copies. With `--from-step S`, the speed
of the steps after S alone (from the two logged cumulative speeds: steps x batch / images_per_s is the loop's
time at a logged step), so that a run with a short epoch (`--data-length`) is timed once the caches of renders
and perceptual maps are warm, as in most of a shipped run (16 epochs). Per variant: the median over the rounds
and the median of the per-round ratios to the first variant.

Variant syntax `<code>:<flag>+<flag>...` with code `base` (`--base`, e.g. a git worktree of the reference commit)
or `new` (this checkout), and extra `smis.train` flags, `=` for a value: `new:--precision=bf16+--fused-adam`.

    git worktree add /tmp/smis_base e82ef9a
    python benchmarks/bench_train_loop.py --base /tmp/smis_base \\
        --variants base: new: new:--precision=bf16+--fused-adam --steps 150 --rounds 3 --copies 2
    python benchmarks/bench_train_loop.py ... --data-length 200 --steps 400 --from-step 100   # warm caches
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
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

SHIPPED = ["--variant", "clvae", "--preset", "synthscenes", "--batch-size", "8",
           "--data-seed", "0", "--threads", "1", "--image-every", "0", "--log-every", "25", "--no-progress",
           "--no-tensorboard", "--channels-last"]     # scripts/train_demo_models.py's command, less its schedule


def parse_variant(spec: str) -> dict:
    """'new:--precision=bf16+--fused-adam' -> {'code': 'new', 'flags': ['--precision', 'bf16', '--fused-adam']}."""
    code, _, flags = spec.partition(":")
    if code not in ("base", "new"):
        raise SystemExit(f"variant {spec!r}: code must be base or new, as in new:--fused-adam")
    out = []
    for f in filter(None, flags.split("+")):
        if not f.startswith("--"):
            raise SystemExit(f"variant {spec!r}: {f!r} is not a smis.train flag (--name or --name=value)")
        out += f.split("=", 1)
    return {"name": spec, "code": code, "flags": out, "rounds": []}


def start(root: Path, flags: list[str], steps: int, seed: int, run_dir: Path, data_length: int) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "smis.train", *SHIPPED, "--steps", str(steps), "--ckpt-every", str(steps),
           "--keep-last", "1", "--seed", str(seed), "--run-dir", str(run_dir), "--data-length", str(data_length),
           *flags]
    env = dict(os.environ, PYTHONPATH=str(root), MPLBACKEND="Agg")
    log = open(run_dir.with_suffix(".log"), "w")
    return subprocess.Popen(cmd, cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT)


def last_speed(run_dir: Path, from_step: int = 0, batch: int = 8) -> float:
    """images/s of the steps after `from_step` (0: the whole loop), from the run's logged cumulative speeds."""
    rows = {int(r["step"]): float(r["images_per_s"]) for r in csv.DictReader(open(run_dir / "losses.csv"))}
    last = max(rows)
    if not from_step:
        return rows[last]
    if from_step not in rows or from_step >= last:
        raise SystemExit(f"--from-step {from_step}: give a logged step (a multiple of 25) below the last, {last}")
    t = {s: s * batch / rows[s] for s in (from_step, last)}             # the loop's seconds at those steps
    return (last - from_step) * batch / (t[last] - t[from_step])


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--base", help="code root of the `base` variants")
    p.add_argument("--variants", nargs="+", default=["base:", "new:"])
    p.add_argument("--steps", type=int, default=150, help="steps of every run (a multiple of 25, the log interval)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--data-length", type=int, default=4000, help="SynthScenes images per epoch (shipped: 4000)")
    p.add_argument("--from-step", type=int, default=0, help="time only the steps after this one (0: all)")
    p.add_argument("--copies", type=int, default=2, help="runs of a variant at a time (seeds 0, 1, ...)")
    p.add_argument("--tag", default="")
    p.add_argument("--existing", metavar="DIR", help="read the runs a previous call left in DIR instead of training")
    p.add_argument("--out", help="JSON path (default benchmarks/results/train_loop_synthscenes_cpu[_tag].json)")
    a = p.parse_args(argv)
    from common import machine_info, pick_device, results_path
    from smis.utils import atomic_write_json
    if a.steps % 25:
        raise SystemExit(f"--steps {a.steps}: give a multiple of 25 (the log interval), e.g. 150")
    variants = [parse_variant(s) for s in a.variants]
    if any(v["code"] == "base" for v in variants) and not (a.base and (Path(a.base) / "smis").is_dir()):
        raise SystemExit("base variants need --base <code root>, e.g. git worktree add /tmp/smis_base <commit>")
    roots = {"new": HERE.parent, "base": Path(a.base).resolve() if a.base else None}
    commits = {k: subprocess.run(["git", "-C", str(r), "rev-parse", "HEAD"], capture_output=True,
                                 text=True).stdout.strip() for k, r in roots.items() if r is not None}
    device = pick_device("cpu")
    start_machine = machine_info(device)
    work = Path(a.existing) if a.existing else Path(tempfile.mkdtemp(prefix="smis_train_loop_"))
    print(f"runs in {work}", flush=True)
    for r in range(a.rounds):
        for i, v in enumerate(variants):
            dirs = [work / f"r{r}_v{i}_c{c}" for c in range(a.copies)]
            t0 = time.perf_counter()
            if not a.existing:
                procs = [start(roots[v["code"]], v["flags"], a.steps, c, d, a.data_length) for c, d in enumerate(dirs)]
                codes = [proc.wait() for proc in procs]
                if any(codes):
                    raise SystemExit(f"{v['name']}: a run failed (exit {codes}); see {dirs[0].with_suffix('.log')}")
            speeds = [last_speed(d, a.from_step) for d in dirs]
            v["rounds"].append({"images_per_s_per_copy": speeds, "images_per_s": sum(speeds),
                                "wall_s": None if a.existing else round(time.perf_counter() - t0, 1)})
        print(f"round {r + 1}: " + ", ".join(f"{v['name']} {v['rounds'][-1]['images_per_s']:.1f} images/s"
                                             for v in variants), flush=True)
    ref = variants[0]
    rows = []
    for v in variants:
        ips = [x["images_per_s"] for x in v["rounds"]]
        ratios = [x["images_per_s"] / b["images_per_s"] for x, b in zip(v["rounds"], ref["rounds"])]
        rows.append({"variant": v["name"], "flags": v["flags"], "images_per_s_median": statistics.median(ips),
                     "images_per_s_per_round": ips, "speedup_vs_first": statistics.median(ratios),
                     "speedup_per_round": ratios, "rounds": v["rounds"]})
    result = {"benchmark": "the SynthScenes training loop (python -m smis.train, data on the fly), variants "
                           "interleaved round by round",
              "command": "python -m smis.train " + " ".join(SHIPPED) + f" --steps {a.steps} --seed <copy> "
                         f"--data-length {a.data_length} ...",
              "config": {"steps": a.steps, "rounds": a.rounds, "copies": a.copies, "commits": commits,
                         "data_length": a.data_length, "timed_after_step": a.from_step,
                         "runs": str(work), "existing": bool(a.existing),
                         "new": "working tree of the new commit"},
              "results": rows, "machine_at_start": start_machine, "machine": machine_info(device)}
    out = a.out or str(results_path(f"train_loop_synthscenes_cpu{'_' + a.tag if a.tag else ''}.json"))
    atomic_write_json(result, out)
    m = result["machine"]
    print(f"\ntraining loop A/B, {a.copies} run(s) at a time, {a.steps} steps (timed after {a.from_step}), "
          f"{a.data_length} images an epoch, {m['device']}, load "
          f"{start_machine['load_avg_1_5_15']} -> {m['load_avg_1_5_15']}, {m['date_utc']} UTC")
    print(f"| variant | images/s (all copies, median) | per round | x {ref['name']} (median of rounds) |")
    print("|---|---|---|---|")
    for r in rows:
        print(f"| {r['variant']} | {r['images_per_s_median']:.1f} | "
              + " ".join(f"{x:.1f}" for x in r["images_per_s_per_round"]) + f" | {r['speedup_vs_first']:.2f} |")
    print(f"wrote {out}")
    return result


if __name__ == "__main__":
    main()
