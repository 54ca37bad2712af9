"""cIMLE's cost per training step against gaugan_vae's, for the equal-wall-clock budget of the demo.

The demo trains gaugan_vae for 8,000 steps (scripts/train_demo_models.py, batch 8, 64x64, 1 torch thread);
cIMLE's step costs differently (one generator pass per image and its distance, no encoder or
discriminator; plus, once per round, m candidate passes for each of the pool's K layouts). Timed here in
interleaved rounds (so load changes on a shared CPU hit both alike), on the same fixed SynthScenes batch:

    gaugan_vae   smis.train.TrainStep (G/E step + D step, EfficientNet-Lite0 perceptual loss)
    cimle        smis.imle.IMLEStep.optimize (G step on the distance) + the pool refresh amortised:
                 time of nearest_samples on one chunk x (K m / chunk) / L

Prints and writes benchmarks/results/cimle_step_synthscenes_cpu.json with the device name, the per-step
medians and the cIMLE steps that take gaugan_vae's 8,000-step wall clock.

    python benchmarks/bench_cimle_step.py --rounds 5 --steps 5 --threads 1
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from smis.build import build  # noqa: E402
from smis.imle import IMLEStep, build_imle, nearest_samples  # noqa: E402
from smis.options import TrainConfig  # noqa: E402
from smis.sampling import prior_latents  # noqa: E402
from smis.train import TrainStep  # noqa: E402
from smis.utils import atomic_write_json, cpu_model, device_name  # noqa: E402

sys.path.insert(0, str(HERE))
from common import fixed_batch  # noqa: E402

GAUGAN_VAE_STEPS = 8000                         # the demo's budget (scripts/train_demo_models.STEPS)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--steps", type=int, default=5, help="timed steps per system per round")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--out", default=str(HERE / "results" / "cimle_step_synthscenes_cpu.json"))
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    device = torch.device("cpu")

    cfg_g = TrainConfig(variant="gaugan_vae", perceptual="effnet", batch_size=a.batch, run_dir="unused")
    parts_g = build(cfg_g, device)
    step_g = TrainStep(cfg_g, parts_g, 10**6, 10**6, a.batch)
    cfg_c = TrainConfig(variant="cimle", perceptual="effnet", batch_size=a.batch, run_dir="unused")
    parts_c = build_imle(cfg_c, device)
    step_c = IMLEStep(cfg_c, parts_c, 10**6, a.batch)
    s = parts_c.settings
    image, label, what = fixed_batch(parts_g.preset, a.batch, device)
    z = prior_latents(parts_c.nets, label, 1, list(range(a.batch)))
    chunk = 64                                                  # IMLEStep.refresh_pool's images per G call
    n_sel = max(1, chunk // s.samples)                          # layouts per selection call
    sel_label = label.repeat(-(-n_sel // a.batch), 1, 1)[:n_sel]
    sel_image = image.repeat(-(-n_sel // a.batch), 1, 1, 1)[:n_sel]
    sel_z = prior_latents(parts_c.nets, sel_label, s.samples, list(range(n_sel)))

    def timed(fn) -> float:
        t = time.perf_counter()
        fn()
        return time.perf_counter() - t

    step_g(image, label)                                        # warm-up
    step_c.optimize(image, label, z)
    times = {"gaugan_vae": [], "cimle_optimize": [], "cimle_selection_chunk": []}
    for _ in range(a.rounds):
        times["gaugan_vae"] += [timed(lambda: step_g(image, label)) for _ in range(a.steps)]
        times["cimle_optimize"] += [timed(lambda: step_c.optimize(image, label, z)) for _ in range(a.steps)]
        times["cimle_selection_chunk"].append(timed(lambda: nearest_samples(
            parts_c.nets.G, parts_c.distance, sel_label, sel_image, sel_z, s.samples, chunk)))
    med = {k: statistics.median(v) for k, v in times.items()}
    refresh = med["cimle_selection_chunk"] * s.pool_size / n_sel            # one pool refresh
    per_step = med["cimle_optimize"] + refresh / s.resample_every            # amortised
    equal = int(GAUGAN_VAE_STEPS * med["gaugan_vae"] / per_step)
    cpu = cpu_model()
    out = {"device": device_name(device), "cpu": cpu, "threads": a.threads, "batch": a.batch, "data": what,
           "perceptual": parts_c.perceptual_name, "settings": {k: getattr(s, k) for k in (
               "pool_size", "samples", "resample_every", "rounds", "reinit_round", "width_coarse", "width_fine",
               "fine_from")},
           "params": {"gaugan_vae": parts_g.nets.param_counts(), "cimle": parts_c.nets.param_counts()},
           "median_s": {k: round(v, 4) for k, v in med.items()}, "pool_refresh_s": round(refresh, 2),
           "cimle_step_amortised_s": round(per_step, 4),
           "ratio_cimle_to_gaugan_vae": round(per_step / med["gaugan_vae"], 3),
           "cimle_steps_for_gaugan_vae_8000_steps": equal, "rounds": a.rounds, "steps_per_round": a.steps,
           "note": "shared 2-core CPU with other jobs running: absolute times are loaded; the ratio is interleaved"}
    print(json.dumps(out, indent=1))
    atomic_write_json(out, a.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
