"""Full training step: `smis.train.TrainStep` on a fixed batch, images/s and peak memory.

One step = generator + encoder update (hinge GAN + feature matching + perceptual + KL) then the
discriminator update on the same fake, exactly as `smis.train` trains. The perceptual network is
VGG19 (ImageNet weights if cached, else the VGG19 shape with random weights: the cost is what
matters), or EfficientNet-Lite0 (`--perceptual effnet`, what training falls back to offline).
Warm-up steps are excluded; the device is synchronised around each timed step; peak memory is
torch.cuda.max_memory_allocated: `peak_gib` over every step, `peak_steady_gib` over warm-up and timed steps
only (the first step runs cuDNN's autotuning, `cudnn.benchmark`, whose trial workspaces take whatever memory
is free and so say more about the card than about the step; measured on an H100: 25.3 GiB first step, 21.3
steady, fp32 batch 16).

Option sets, one variable at a time from the fp32 baseline (Adam for-each / single-tensor, NCHW, eager):
    fp32, bf16 (autocast), channels_last, fused_adam, compile (torch.compile of G+E and D),
'+'-joined combinations (e.g. bf16+channels_last+compile), and `best`: every single option that
beat the baseline by >= 3 % at that batch, combined. The JSON is rewritten after every row.

    python benchmarks/bench_train_step.py --preset ade20k --batch 4 16 --device cuda          # GPU
    python benchmarks/bench_train_step.py --preset synthscenes --batch 8 --threads 1 2 \\
        --configs fp32 --perceptual effnet --device cpu                                         # CPU
    python benchmarks/bench_train_step.py --preset ade20k --set ngf=4 nef=4 ndf=4 image_size=[64,64] \\
        --batch 2 --steps 1 --warmup 1 --device cpu --out /tmp/t.json                             # smoke
"""
from __future__ import annotations

import argparse
import gc
import json
import math
import sys
import time
import traceback
from dataclasses import asdict
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (fixed_batch, machine_info, make_train_step, peak_gib, pick_device, reset_peak, results_path,  # noqa: E402
                    summary, sync, time_steps)
from smis.config import get_preset  # noqa: E402
from smis.utils import atomic_write_json  # noqa: E402

OPTIONS = {                                   # name -> make_train_step keyword arguments
    "fp32": {},
    "bf16": {"precision": "bf16"},
    "channels_last": {"channels_last": True},
    "fused_adam": {"fused_adam": True},
    "compile": {"compile": True},
}


def options(config: str) -> dict:
    """'bf16+channels_last' -> the merged make_train_step keywords of its parts."""
    bad = [c for c in config.split("+") if c not in OPTIONS]
    if bad:
        raise SystemExit(f"unknown option set(s) {bad} in {config!r}; choose among {sorted(OPTIONS)}, '+'-joined, "
                         "or best")
    return {k: v for c in config.split("+") for k, v in OPTIONS[c].items()}


GAIN = 1.03                                   # a single option joins `best` if it is >= 3 % faster
ANCHOR = {"device": "NVIDIA H200", "config": "authors' published code, ADE20K 256x256 ngf 64, fp32",
          "images_per_s": {"4": 5.28, "16": 5.02}, "peak_gib": {"4": 7.2, "16": 23.1},
          "bf16_images_per_s": {"4": 5.55, "16": 5.03}, "bf16_peak_gib": {"4": 5.9, "16": 17.2}}
TARGET = {"batch": 16, "images_per_s": 25.0, "peak_gib": 23.1}


def run_one(name: str, opts: dict, a, batch: int, device: torch.device) -> dict:
    """Build a TrainStep with `opts`, time `a.steps` steps after `a.warmup` (more for compile)."""
    row = {"config": name, "options": opts, "batch": batch, "threads": torch.get_num_threads()}
    train_step = None
    try:
        reset_peak(device)
        torch.manual_seed(0)
        train_step, perceptual = make_train_step(a.preset, batch, device, variant=a.variant, overrides=a.overrides,
                                           perceptual=a.perceptual, **opts)
        image, label, masks = fixed_batch(train_step.parts.preset, batch, device)
        row.update(perceptual=perceptual, masks=masks,
                   mean_classes_per_mask=round(sum(len(l.unique()) for l in label) / batch, 1))
        losses = {}
        step = lambda: losses.update(train_step(image, label))
        t0 = time.perf_counter()
        step()
        sync(device)
        row["first_step_s"] = round(time.perf_counter() - t0, 3)      # includes compilation / autotuning
        row["peak_first_step_gib"] = peak_gib(device)                   # cuDNN autotuning borrows free memory here
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        warmup = a.warmup + (2 if opts.get("compile") else 0)
        times = time_steps(step, device, warmup, a.steps)
        s = summary(times)
        row.update({k: round(v, 4) if isinstance(v, float) else v for k, v in s.items()})
        row["images_per_s"] = round(batch / s["median_s"], 3)
        row["peak_steady_gib"] = peak_gib(device)                       # warm-up + timed steps: what training needs
        row["peak_gib"] = (None if row["peak_steady_gib"] is None
                           else max(row["peak_steady_gib"], row["peak_first_step_gib"]))
        if device.type == "cuda":
            row["peak_reserved_gib"] = round(torch.cuda.max_memory_reserved(device) / 2**30, 3)
        row["losses_finite"] = all(math.isfinite(v) for v in losses.values())
        row["params"] = train_step.parts.nets.param_counts()
    except Exception as e:                                              # OOM, compile failure: record, go on
        row["error"] = f"{type(e).__name__}: {str(e).splitlines()[0][:300]}"
        traceback.print_exc()
    finally:
        train_step = None                                               # free the networks before the next row
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()
        if opts.get("compile"):
            torch._dynamo.reset()
    return row


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="ade20k")
    p.add_argument("--variant", default="clvae")
    p.add_argument("--set", nargs="*", default=[], metavar="FIELD=JSON", help="preset overrides (smoke runs)")
    p.add_argument("--batch", type=int, nargs="+", default=[4, 16])
    p.add_argument("--device", default="auto", help="cpu, cuda or auto")
    p.add_argument("--threads", type=int, nargs="+", default=[None], help="CPU intra-op threads (one row each)")
    p.add_argument("--configs", nargs="+", default=["fp32", "bf16", "channels_last", "fused_adam", "compile", "best"],
                   help=f"option sets among {sorted(OPTIONS)}, '+'-joined combinations, and 'best'")
    p.add_argument("--compile-batches", type=int, nargs="*", default=None,
                   help="batches at which 'compile' runs (default: all); compilation takes minutes")
    p.add_argument("--perceptual", default="vgg19", choices=["vgg19", "effnet", "none"])
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--steps", type=int, default=10, help="timed steps (median reported)")
    p.add_argument("--tag", default="", help="suffix of the default JSON name")
    p.add_argument("--out",
                   help="JSON path (default $OUT or benchmarks/results / train_step_<preset>_<device>[_tag].json)")
    a = p.parse_args(argv)
    a.overrides = {k: json.loads(v) for k, _, v in (s.partition("=") for s in a.set)}
    device = pick_device(a.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    for config in a.configs:
        if config != "best":
            options(config)                                             # fail early on a typo
    preset = get_preset(a.preset, **a.overrides)
    name = a.out or str(results_path(f"train_step_{a.preset}_{device.type}{'_' + a.tag if a.tag else ''}.json"))
    result = {
        "benchmark": "smis.train.TrainStep on a fixed batch: G+E step (GAN + FM + perceptual + KL), then D step",
        "config": {"preset": asdict(preset), "variant": a.variant, "overrides": a.overrides, "warmup": a.warmup,
                   "timed_steps": a.steps, "perceptual": a.perceptual,
                   "tf32_conv": torch.backends.cudnn.allow_tf32, "tf32_matmul": torch.backends.cuda.matmul.allow_tf32},
        "machine_at_start": machine_info(device), "results": [],
        "anchor_authors_code": ANCHOR if a.preset == "ade20k" and not a.overrides else None,
        "target": TARGET if a.preset == "ade20k" and device.type == "cuda" else None,
    }
    rows = result["results"]

    def save():                                                         # after every row: a killed run keeps its rows
        result["machine"] = machine_info(device)
        atomic_write_json(result, name)

    for threads in a.threads:
        if threads:
            torch.set_num_threads(threads)
        for batch in a.batch:
            base = None
            singles = []
            for config in a.configs:
                if "compile" in config and a.compile_batches is not None and batch not in a.compile_batches:
                    continue
                if config == "best":
                    if base is None or "images_per_s" not in base:
                        continue
                    picked = [r for r in singles if r.get("images_per_s", 0) >= GAIN * base["images_per_s"]]
                    if len(picked) < 2:
                        names = [r["config"] for r in picked] or "baseline"
                        print(f"best at batch {batch}: {names} (nothing to combine)")
                        continue
                    opts = {k: v for r in picked for k, v in r["options"].items()}
                    row = run_one("best: " + "+".join(r["config"] for r in picked), opts, a, batch, device)
                else:
                    row = run_one(config, options(config), a, batch, device)
                    if config == "fp32":
                        base = row
                    elif "+" not in config:
                        singles.append(row)
                if base is not None and "images_per_s" in row and "images_per_s" in base:
                    row["speedup_vs_fp32"] = round(row["images_per_s"] / base["images_per_s"], 3)
                rows.append(row)
                save()
                keys = ("config", "batch", "threads", "images_per_s", "peak_steady_gib", "peak_gib", "first_step_s",
                        "error")
                print(json.dumps({k: row.get(k) for k in keys}), flush=True)
    save()
    print(f"\ntraining step, {a.preset} preset{' ' + str(a.overrides) if a.overrides else ''}, {a.variant}, on "
          f"{result['machine']['device']}, torch {torch.__version__}, load {result['machine']['load_avg_1_5_15']}")
    print("| batch | threads | config | s/step (median) | images/s | x fp32 | peak GiB (steady / first step) "
          "| first step (s) |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        if "error" in r:
            print(f"| {r['batch']} | {r['threads']} | {r['config']} | error: {r['error'][:80]} | | | | |")
            continue
        mem = f"{r['peak_steady_gib']} / {r['peak_first_step_gib']}" if r["peak_gib"] is not None else "-"
        print(f"| {r['batch']} | {r['threads']} | {r['config']} | {r['median_s']:.3f} | {r['images_per_s']:.2f} | "
              f"{r.get('speedup_vs_fp32', 1.0):.2f} | {mem} | "
              f"{r['first_step_s']:.1f} |")
    if result["target"]:
        ok = [r for r in rows if r["batch"] == TARGET["batch"] and r.get("images_per_s", 0) >= TARGET["images_per_s"]
              and (r.get("peak_steady_gib") or 1e9) <= TARGET["peak_gib"]]
        met = "met by " + ", ".join(r["config"] for r in ok) if ok else "NOT met"
        print(f"target (batch 16: >= 25 images/s, steady peak <= 23.1 GiB): {met}")
    print(f"wrote {name}")
    return result


if __name__ == "__main__":
    main()
