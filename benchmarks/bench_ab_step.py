"""A/B of the training step across code versions and options, interleaved in one run.

Each variant is a worker process holding one `smis.train.TrainStep` on a fixed batch (`common.fixed_batch`),
built from a code root (`new`: this checkout; `base`: `--base`, e.g. a git worktree of the commit before a
change) with a set of options. The parent runs rounds A B C A B C ...: `--steps` timed steps of each
variant per round, so that load changes on a shared CPU hit every variant alike. Reported per variant:
median, min and per-round medians of the step time, images/s, the median of the per-round ratios to the
first variant (the A/B number), and the losses of the first step (same seed and batch: versions that
compute the same function agree to float tolerance).

Variant syntax `<code>:<opt>+<opt>...` with code `base` or `new` and options:
    fp32            nothing changed (the default trainer: NCHW, single-tensor Adam on CPU, eager)
    channels_last   `--channels-last`          fused_adam   fused Adam
    system_malloc   `--no-keep-freed-memory` (new code only): glibc's default allocator behaviour
    no_perceptual_cache  `--perceptual-cache-mb 0` (new code only): the perceptual net runs on the real images
                    every step. Without it the new code's fixed batch hits the cache from the second step on
                    (a training run: from its second epoch, ~7 in 8 real images at the shipped schedule)
    bf16            bf16 autocast              dense        G.piecewise_cond = False (new code only)
    bf16g           `--precision bf16-g` (new code only): bf16 autocast for G, E and D in float32
    bf16gc          `--precision bf16-g-coarse` (new code only): bf16g with G's full-resolution blocks in float32
    perceptual_half the perceptual network sees fake and real avg-pooled 2x: a different objective (fewer
                    FLOPs), measured as a separate lever, not an option of smis.train
    t1, t2, ...     torch threads in that worker (default: --threads)
    variant=NAME    that worker's network variant (default: --variant), e.g. clvae vs groupdnet
    env:NAME=VALUE  an environment variable of that worker (e.g. env:OMP_WAIT_POLICY=PASSIVE)
    pkg.mod.attr=V  a module attribute set in that worker before the first step (V parsed as JSON, else a string)

Every variant holds its own trainer (ADE20K batch 1 with VGG19: ~3 GB of RAM each; 9 variants did not fit
in this machine's 23 GB): give at most 5 per run, and repeat the reference variant in each run.

    git worktree add /tmp/smis_base <commit before the change>
    python benchmarks/bench_ab_step.py --preset ade20k --batch 1 --base /tmp/smis_base \\
        --variants base:fp32 new:fp32 --rounds 4 --steps 2 --tag ade20k_b1        # ~4 min on 2 cores
    python benchmarks/bench_ab_step.py --preset synthscenes --batch 8 --perceptual effnet --base /tmp/smis_base \\
        --variants base:channels_last+fused_adam new:channels_last+fused_adam --rounds 5 --steps 10
    python benchmarks/bench_ab_step.py --preset synthscenes --batch 8 --perceptual effnet \
        --variants new:variant=clvae new:variant=groupdnet --rounds 5 --steps 5 --tag groupdnet_vs_clvae
    python benchmarks/bench_ab_step.py ... --threads 1 --copies 2     # two processes per variant at once (the
                                                                      # shipped trainings' layout on 2 cores)
"""
from __future__ import annotations

import argparse
import importlib
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
TRAINER_OPTS = {"channels_last": {"channels_last": True}, "fused_adam": {"fused_adam": True},
                "bf16": {"precision": "bf16"}, "bf16g": {"precision": "bf16-g"},
                "bf16gc": {"precision": "bf16-g-coarse"}, "fp32": {},
                "system_malloc": {"keep_freed_memory": False}, "no_perceptual_cache": {"perceptual_cache_mb": 0},
                "compile": {"compile": True}}
FLAGS = ("dense", "perceptual_half")


def parse_variant(spec: str, default_threads: int | None) -> dict:
    """'new:channels_last+t1' -> {'code': 'new', 'trainer': {...}, 'flags': [...], 'threads': 1, 'name': spec}."""
    code, _, opts = spec.partition(":")
    if code not in ("base", "new"):
        raise SystemExit(f"variant {spec!r}: code must be base or new, as in new:fp32")
    out = {"name": spec, "code": code, "trainer": {}, "flags": [], "threads": default_threads, "env": {}, "attrs": {}}
    for o in filter(None, (opts or "fp32").split("+")):
        if o in TRAINER_OPTS:
            out["trainer"].update(TRAINER_OPTS[o])
        elif o in FLAGS:
            out["flags"].append(o)
        elif o.startswith("variant="):
            out["variant"] = o.partition("=")[2]
        elif o.startswith("env:") and "=" in o:
            k, _, v = o[4:].partition("=")
            out["env"][k] = v
        elif "=" in o and "." in o.partition("=")[0]:
            k, _, v = o.partition("=")
            out["attrs"][k] = v
        elif o[0] == "t" and o[1:].isdigit():
            out["threads"] = int(o[1:])
        else:
            raise SystemExit(f"variant {spec!r}: unknown option {o!r}; choose among {sorted(TRAINER_OPTS)}, "
                             f"{list(FLAGS)}, t<threads>, variant=NAME, env:NAME=VALUE, pkg.mod.attr=VALUE")
    if code == "base" and "dense" in out["flags"]:
        raise SystemExit(f"variant {spec!r}: dense switches a code path of the new code only")
    if code == "base" and {"keep_freed_memory", "perceptual_cache_mb"} & set(out["trainer"]):
        raise SystemExit(f"variant {spec!r}: system_malloc and no_perceptual_cache are options of the new code only")
    return out


# -- worker: one trainer, steps on request ------------------------------------------------------------

def HalfSize(loss):
    """The perceptual loss of fake and real downsampled 2x (box filter): the `perceptual_half` lever."""
    import torch.nn.functional as F
    from torch import nn

    class _Half(nn.Module):
        def __init__(self):
            super().__init__()
            self.loss = loss

        def forward(self, fake, real):
            return self.loss(F.avg_pool2d(fake, 2), F.avg_pool2d(real, 2))

    return _Half()


def worker(a) -> None:
    root = Path(a.root).resolve()
    sys.path[:0] = [str(root / "benchmarks"), str(root)]                # that version's smis and helpers
    import torch
    if a.threads:
        torch.set_num_threads(a.threads)
    import common
    import smis
    from common import fixed_batch, pick_device, sync
    device = pick_device(a.device)
    opts = json.loads(a.trainer)
    flags = a.flags.split(",") if a.flags else []
    overrides = {k: json.loads(v) for k, _, v in (s.partition("=") for s in a.set)}
    torch.manual_seed(0)
    # this version's step: a smis.train.TrainStep on smis.build's parts, or (versions before the build split,
    # whose common.py has make_trainer) a Trainer holding nets, preset and perceptual itself
    make = getattr(common, "make_train_step", None) or common.make_trainer
    built, perceptual = make(a.preset, a.batch, device, variant=a.variant, overrides=overrides,
                             perceptual=a.perceptual, **opts)
    parts = getattr(built, "parts", built)                              # .nets, .preset, .perceptual
    train_step = getattr(built, "train_step", built)                    # (image, label) -> losses
    G = parts.nets.G
    if "dense" in flags:
        G.piecewise_cond = False
    for key, value in json.loads(a.attrs).items():                      # module attributes (levers under test)
        mod, _, attr = key.rpartition(".")
        module = importlib.import_module(mod)
        if not hasattr(module, attr):
            raise SystemExit(f"{mod} has no attribute {attr!r} in {root}")
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            pass
        setattr(module, attr, value)
    if "perceptual_half" in flags and parts.perceptual is not None:
        parts.perceptual = HalfSize(parts.perceptual)
    image, label, _ = fixed_batch(parts.preset, a.batch, device)
    losses = train_step(image, label)                          # the first step: losses compared
    sync(device)
    reply = {"ready": True, "smis": str(Path(smis.__file__).parent), "threads": torch.get_num_threads(),
             "perceptual": perceptual, "first_losses": losses}
    print(json.dumps(reply), flush=True)
    for line in sys.stdin:
        n = int(line)
        if n < 0:
            break
        times, cpu = [], []
        for _ in range(n):
            t0, c0 = time.perf_counter(), time.process_time()
            train_step(image, label)
            sync(device)
            times.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)
        print(json.dumps({"times": times, "cpu": cpu}), flush=True)


def start(v: dict, a) -> subprocess.Popen:
    root = a.base if v["code"] == "base" else str(HERE.parent)
    path = os.pathsep.join(filter(None, [str(Path(root).resolve()), os.environ.get("PYTHONPATH")]))
    env = dict(os.environ, PYTHONPATH=path, MPLBACKEND="Agg")         # the worker puts `root` first itself
    env.update(v["env"])
    cmd = [sys.executable, str(HERE / "bench_ab_step.py"), "--worker", "--root", root, "--preset", a.preset,
           "--batch", str(a.batch[0]), "--device", a.device, "--perceptual", a.perceptual,
           "--variant", v.get("variant") or a.variant,
           "--trainer", json.dumps(v["trainer"]), "--flags", ",".join(v["flags"]), "--attrs", json.dumps(v["attrs"]),
           "--set", *a.set]
    if v["threads"]:
        cmd += ["--threads", str(v["threads"])]
    return subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env, cwd=root)


def ask(procs: list[subprocess.Popen], n: int) -> list[dict]:
    """`n` steps of every worker in `procs`, all at the same time (copies of one variant); their replies."""
    for p in procs:
        p.stdin.write(f"{n}\n")
        p.stdin.flush()
    replies = []
    for p in procs:
        line = p.stdout.readline()
        if not line:
            raise RuntimeError(f"worker {p.args} died; run it by hand to see its error")
        replies.append(json.loads(line))
    return replies


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--root", help=argparse.SUPPRESS)
    p.add_argument("--trainer", default="{}", help=argparse.SUPPRESS)
    p.add_argument("--flags", default="", help=argparse.SUPPRESS)
    p.add_argument("--attrs", default="{}", help=argparse.SUPPRESS)
    p.add_argument("--preset", default="ade20k")
    p.add_argument("--variant", default="clvae")
    p.add_argument("--set", nargs="*", default=[], metavar="FIELD=JSON", help="preset overrides (smoke runs)")
    p.add_argument("--batch", type=int, nargs=1, default=[1])
    p.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    p.add_argument("--threads", type=int, default=None, help="torch threads of every worker unless a variant says t<N>")
    p.add_argument("--perceptual", default="vgg19", choices=["vgg19", "effnet", "none"])
    p.add_argument("--base", help="code root of the `base` variants (a git worktree of the reference commit)")
    p.add_argument("--variants", nargs="+", default=["base:fp32", "new:fp32"])
    p.add_argument("--warmup", type=int, default=1, help="untimed steps after the first, per variant")
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--steps", type=int, default=2, help="timed steps per variant per round")
    p.add_argument("--copies", type=int, default=1,
                   help="workers per variant stepping at the same time (2 with --threads 1: the shipped layout, two "
                        "trainings of one thread each on a 2-core CPU); images/s counts every copy's images")
    p.add_argument("--tag", default="", help="suffix of the default JSON name")
    p.add_argument("--out",
                   help="JSON path (default $OUT or benchmarks/results / ab_step_<preset>_<device>[_tag].json)")
    a = p.parse_args(argv)
    if a.worker:
        a.batch = a.batch[0]
        return worker(a)

    sys.path.insert(0, str(HERE))
    from common import machine_info, pick_device, results_path
    from smis.utils import atomic_write_json
    variants = [parse_variant(s, a.threads) for s in a.variants]
    if any(v["code"] == "base" for v in variants) and not (a.base and (Path(a.base) / "smis").is_dir()):
        raise SystemExit("base variants need --base <code root>, e.g. git worktree add /tmp/smis_base <commit>")
    device = pick_device(a.device)
    name = a.out or str(results_path(f"ab_step_{a.preset}_{device.type}{'_' + a.tag if a.tag else ''}.json"))
    base_commit = None
    if a.base:
        base_commit = subprocess.run(["git", "-C", a.base, "rev-parse", "HEAD"], capture_output=True,
                                     text=True).stdout.strip()
    new_commit = subprocess.run(["git", "-C", str(HERE.parent), "rev-parse", "HEAD"], capture_output=True,
                                text=True).stdout.strip()
    result = {"benchmark": "smis.train.TrainStep, variants interleaved round by round (A B A B ...)",
              "config": {"preset": a.preset, "variant": a.variant, "batch": a.batch[0], "overrides": a.set,
                         "perceptual": a.perceptual, "warmup": a.warmup, "rounds": a.rounds, "steps_per_round": a.steps,
                         "copies": a.copies,
                         "base_commit": base_commit, "new_commit": new_commit + " + working tree"},
              "machine_at_start": machine_info(device), "variants": []}
    procs = []                                                         # every worker, for the cleanup
    try:
        for v in variants:                                             # one at a time: builds do not overlap
            copies = []
            for _ in range(a.copies):
                proc = start(v, a)
                procs.append(proc)
                copies.append(proc)
                ready = json.loads(proc.stdout.readline() or "null") if proc.stdout else None
                if not ready:
                    raise RuntimeError(f"worker for {v['name']} failed to start")
            v.update(ready=ready, times=[], cpu=[], round_medians=[], procs=copies)
            print(f"{v['name']}: ready ({ready['smis']}, {ready['threads']} threads, {a.copies} cop"
                  f"{'y' if a.copies == 1 else 'ies'})", flush=True)
            if a.warmup:
                ask(copies, a.warmup)
        for r in range(a.rounds):
            for v in variants:
                got = ask(v["procs"], a.steps)                         # copies step at the same time
                times = [t for g in got for t in g["times"]]
                v["times"] += times
                v["cpu"] += [c for g in got for c in g["cpu"]]
                v["round_medians"].append(statistics.median(times))
            print(f"round {r + 1}: " + ", ".join(f"{v['name']} {v['round_medians'][-1]:.3f} s" for v in variants),
                  flush=True)
    finally:
        for proc in procs:
            try:
                proc.stdin.write("-1\n")
                proc.stdin.close()
            except OSError:
                pass
            proc.wait(timeout=60)
    ref = variants[0]
    rows = []
    for v in variants:
        ratios = [b / x for b, x in zip(ref["round_medians"], v["round_medians"])]
        first = v["ready"]["first_losses"]
        ref_first = ref["ready"]["first_losses"]
        loss_diff = max((abs(first[k] - ref_first[k]) / max(abs(ref_first[k]), 1e-12) for k in first if k in ref_first),
                        default=None)
        rows.append({"variant": v["name"], "threads": v["ready"]["threads"], "smis": v["ready"]["smis"],
                     "perceptual": v["ready"]["perceptual"], "median_s": statistics.median(v["times"]),
                     "min_s": min(v["times"]), "round_medians_s": v["round_medians"], "times_s": v["times"],
                     "images_per_s": a.copies * a.batch[0] / statistics.median(v["times"]),   # all copies
                     "cpu_s_per_step": statistics.median(v["cpu"]),       # process CPU time (spin-waits included)
                     "speedup_vs_first": statistics.median(ratios), "speedup_per_round": ratios,
                     "first_step_losses": first, "first_losses_max_rel_diff_vs_first": loss_diff})
    result["results"] = rows
    result["machine"] = machine_info(device)
    atomic_write_json(result, name)
    m = result["machine"]
    print(f"\ntraining step A/B, {a.preset} batch {a.batch[0]}, {a.copies} process(es) per variant, {m['device']}, "
          f"load {result['machine_at_start']['load_avg_1_5_15']} -> {m['load_avg_1_5_15']}, {m['date_utc']} UTC")
    print(f"| variant | threads | s/step (median) | min | CPU s/step | images/s | x {ref['name']} (median of rounds) "
          f"| first-step losses vs {ref['name']} |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['variant']} | {r['threads']} | {r['median_s']:.3f} | {r['min_s']:.3f} | {r['cpu_s_per_step']:.3f} "
              f"| {r['images_per_s']:.2f} | {r['speedup_vs_first']:.2f} "
              f"| {r['first_losses_max_rel_diff_vs_first']:.1e} |")
    print(f"wrote {name}")
    return result


if __name__ == "__main__":
    main()
