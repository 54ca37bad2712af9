"""Train and export the demo models shipped in `checkpoints/`: every variant of the paper's comparison on SynthScenes.

    python scripts/train_demo_models.py                       # every model, two at a time, one CPU thread each
    python scripts/train_demo_models.py --variants clvae --steps 3000

Defaults (issue 14, CPU): 64x64, batch 8, one data set and seed for all; clvae and gaugan_vae 8,000 steps,
and so the comparison systems gaugan_vae_lowkl (GauGAN-VAE*) and groupdnet (issue 21); cIMLE (`--variants
cimle`) 7,000, the same wall clock; every other variant 3,000 (`STEPS`). `EXPERIMENTS` names the layer-wise
experiment's runs (issue 22: clvae on the object-scale factor data, each option against latent collapse).
fp32 runs keep the per-tensor Adam loop: the four fp32 clvae runs with fused Adam (issue 26, the SPADE gathers) all
ended with a higher FD than the seven without it; bf16 ends higher with or without fused Adam (nine seeds), and so
does bf16-g (bf16 for G only, four seeds), so both bring fused Adam (benchmarks/RESULTS.md). Each run checkpoints at
`CURVE_POINTS` evenly spaced steps and keeps them all, so `scripts/eval_curves.py` can show whether diversity, FD,
colour rate and mask fidelity flattened.

Each model is trained with `python -m smis.train` (the project's own command), exported with fp16 storage to
`checkpoints/synthscenes_<variant>.pt`, and described by a JSON beside it recording the exact command, data
seed, seed, steps, wall time, device and torch version.
"""
from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import threading
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from smis.checkpoint import export_model, list_checkpoints  # noqa: E402
from smis.utils import cpu_has_fast_bf16, cpu_model, safe_load  # noqa: E402

VARIANTS = ["clvae", "gaugan_vae", "gaugan", "no_classwise", "no_layerwise", "clvae_L3", "clvae_L5", "gaugan_vae_lowkl",
            "groupdnet", "cimle"]
# the models the demo's claims rest on, and the comparison systems trained on their budget; others: --steps
STEPS = {"clvae": 8000, "gaugan_vae": 8000, "gaugan_vae_lowkl": 8000, "groupdnet": 8000,
         "cimle": 7000}   # cIMLE: gaugan_vae's 8,000-step wall clock (its step 1.14x gaugan_vae's, measured live with
                          # pool refreshes, two runs at a time on the EPYC; bench_cimle_step.py, loaded: 1.30x)
# The layer-wise experiment (issue 22): clvae on SynthScenes with its object-scale factor, with the paper's objective
# and with each option against latent-layer collapse (smis.options.TrainConfig; free bits in nats per image and layer)
EXPERIMENTS = {"clvae_obj": ("clvae", ["--synth-object-factor"]),
               "clvae_obj_freebits": ("clvae", ["--synth-object-factor", "--kl-free-bits", "1.0"]),
               "clvae_obj_balance": ("clvae", ["--synth-object-factor", "--kl-balance", "always"]),
               "clvae_obj_warmup": ("clvae", ["--synth-object-factor", "--kl-warmup-steps", "1000",
                                              "--kl-balance", "warmup"])}
for _name in EXPERIMENTS:
    STEPS[_name] = 8000
TRAINABLE = VARIANTS + list(EXPERIMENTS)         # --variants may also name the experiment's runs (not shipped)
CURVE_POINTS = {8000: 8, 7000: 7}                 # checkpoints per run (steps -> points); default 5


def schedule(variant: str, steps: int | None) -> tuple[int, int]:
    """(steps, checkpoint interval) of one run: `steps` overrides the per-variant default."""
    n = steps or STEPS.get(variant, 3000)
    points = CURVE_POINTS.get(n, 5)
    if n % points:
        raise ValueError(f"--steps {n}: must be a multiple of {points} so the {points} curve checkpoints fall on steps")
    return n, n // points


def command(variant: str, steps: int, ckpt_every: int, batch: int, threads: int, run_dir: Path, data_seed: int,
            seed: int, channels_last: bool, precision: str = "fp32") -> list[str]:
    variant, flags = EXPERIMENTS.get(variant, (variant, []))      # a named experiment: a variant and its options
    return [sys.executable, "-m", "smis.train", "--variant", variant, "--preset", "synthscenes", "--steps", str(steps),
            "--batch-size", str(batch), "--data-length", "4000", "--data-seed", str(data_seed), "--seed", str(seed),
            "--run-dir", str(run_dir), "--threads", str(threads), "--ckpt-every", str(ckpt_every),
            "--keep-last", str(steps // ckpt_every + 1), "--image-every", str(ckpt_every), "--log-every", "25",
            "--no-progress"] + (["--channels-last"] if channels_last else []) + (
            ["--precision", precision] if precision != "fp32" else []) + (
            ["--fused-adam"] if precision.startswith("bf16") else []) + flags



def precision_of(choice: str) -> str:
    """--precision's value: "auto" -> bf16 where this CPU multiplies bf16 natively (smis.utils.cpu_has_fast_bf16),
    else fp32."""
    return ("bf16" if cpu_has_fast_bf16() else "fp32") if choice == "auto" else choice


def export(variant: str, cmd: list[str], run_dir: Path, out_dir: Path, argv: list[str], a) -> Path:
    """Newest checkpoint of `run_dir` -> fp16 `out_dir/synthscenes_<variant>.pt` + its provenance JSON."""
    ckpts = list_checkpoints(run_dir)
    cfg = json.loads((run_dir / "config.json").read_text())
    wall = safe_load(ckpts[-1], map_location="cpu").get("wall_time_s")
    provenance = {
        "command": "python " + " ".join(cmd[1:]).replace(str(ROOT) + "/", ""),
        "exported_by": "python scripts/train_demo_models.py " + " ".join(argv),
        "variant": EXPERIMENTS.get(variant, (variant,))[0], "model": variant,
        "options": EXPERIMENTS.get(variant, (variant, []))[1],
        "dataset": "synthscenes (generated on the fly" + (", object-scale factor)" if "--synth-object-factor" in cmd
                                                           else ")"), "data_seed": a.data_seed, "seed": a.seed,
        "steps": int(cfg["resolved"]["total_steps"]), "batch_size": a.batch_size,
        "wall_time_s": None if wall is None else round(wall, 1), "threads": a.threads, "concurrent_runs": a.jobs,
        "device": cfg["resolved"]["device_name"], "cpu": cpu_model(), "torch": str(torch.__version__),
        "python": platform.python_version(),
        "perceptual": cfg["resolved"]["perceptual"], "params": cfg["resolved"]["params"],
        "curve_checkpoints": [int(p.stem.split("_")[1]) for p in ckpts],
        "storage": "fp16 (loaded back as fp32)", "precision": precision_of(a.precision),
    }
    out = out_dir / f"synthscenes_{variant}.pt"
    export_model(ckpts[-1], out, half=True, extra={"provenance": provenance})
    out.with_suffix(".json").write_text(json.dumps(provenance, indent=2) + "\n")
    return out


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--variants", nargs="+", default=VARIANTS, choices=TRAINABLE)
    p.add_argument("--steps", type=int, default=None, help="steps of every run (default: STEPS, else 3000)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--threads", type=int, default=1, help="torch threads per training process")
    p.add_argument("--jobs", type=int, default=2, help="training processes at a time")
    p.add_argument("--data-seed", type=int, default=0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-channels-last", action="store_true",
                   help="NCHW (channels_last: ~18 %% faster on 1 CPU thread)")
    p.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "bf16-g", "bf16-g-coarse", "auto"],
                   help="bf16: autocast + fused Adam, 1.40-1.48x the code before issue 26's step and 1.48-1.66x "
                        "its loop (two runs at a time; fp32: 1.19-1.24x the step, 1.26-1.36x the loop) on a CPU "
                        "that multiplies bf16 natively (AVX512-BF16 / AMX), slower elsewhere; over nine clvae seeds "
                        "(with and without fused Adam) its last FD is about one fp32 seed SD higher (p = 0.047; "
                        "benchmarks/RESULTS.md, issue 26; the other variants unmeasured). bf16-g: bf16 for G only, "
                        "E and D in float32, as fast (1.49x / 1.53x), the same FD shift over four seeds. "
                        "bf16-g-coarse: bf16-g with G's full-resolution block and output convolution in float32 too, "
                        "the fastest (1.58x / 1.55x on a Zen 4 EPYC; its four seeds: benchmarks/RESULTS.md, seventh "
                        "pass). "
                        "auto: bf16 on such a CPU, else fp32. Default fp32: the shipped models")
    p.add_argument("--runs", default="outputs/runs", help="where the training runs go")
    p.add_argument("--out", default="checkpoints", help="where the exported models go")
    p.add_argument("--resume", action="store_true")
    return p


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    a = parser().parse_args(argv)
    runs, out_dir = (ROOT / a.runs).resolve(), (ROOT / a.out).resolve()
    runs.mkdir(parents=True, exist_ok=True)
    out_dir.mkdir(parents=True, exist_ok=True)
    # longest first, so the two workers finish close together
    queue = sorted(a.variants, key=lambda v: -schedule(v, a.steps)[0])
    lock, failed, t0 = threading.Lock(), [], time.time()

    def worker():
        while True:
            with lock:
                if not queue:
                    return
                v = queue.pop(0)
            steps, every = schedule(v, a.steps)
            run_dir = runs / f"demo_{v}"
            cmd = command(v, steps, every, a.batch_size, a.threads, run_dir, a.data_seed, a.seed,
                          not a.no_channels_last, precision_of(a.precision)) + (["--resume"] if a.resume else [])
            print(f"[demo] training {v}: {' '.join(cmd[1:])}", flush=True)
            with open(runs / f"demo_{v}.log", "a") as log:
                rc = subprocess.call(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
            if rc != 0:
                print(f"[demo] {v} FAILED (exit {rc}); see {runs / f'demo_{v}.log'}", flush=True)
                failed.append(v)
                continue
            out = export(v, cmd, run_dir, out_dir, argv, a)
            print(f"[demo] {v}: {steps} steps -> {out} ({out.stat().st_size / 2**20:.1f} MiB), "
                  f"{(time.time() - t0) / 60:.1f} min since start", flush=True)

    threads = [threading.Thread(target=worker) for _ in range(max(1, a.jobs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    print(f"[demo] all done in {(time.time() - t0) / 60:.1f} min" + (f"; failed: {failed}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
