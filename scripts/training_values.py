"""Stored training values: three seeded training steps per variant family on the CPU, and their float noise.

    python scripts/training_values.py                 # measure the noise, write tests/data/training_values.json
    python scripts/training_values.py --print         # the values of this machine, nothing written

What it runs (`run_steps`, also what tests/test_training_values.py runs): for one variant of each family of
`smis.networks.FAMILIES` (spade: clvae, and gaugan, whose G/E step has no encoder and no KL; groupdnet; cimle),
three training steps from seed 0 on the CPU in float32, one torch thread, the tiny sizes of the test runs, with
the EfficientNet-Lite0 perceptual term (the packaged weights: the same on every machine, no download). The GAN
families train `smis.train.TrainStep` (the G/E step, then the D step) on one fixed SynthScenes batch of 2 images
rendered in memory from a seed; cIMLE trains `smis.imle.IMLEStep` on a pool of 4 layouts of the same data set
(the nearest of 3 codes per layout, re-drawn every 2 steps, the noise encoder re-initialised at the third step).
Every value the step logs (each loss term, the KL per layer, lr_factor; cIMLE's distances) is stored per step.

The float noise (`measure_noise`): the same steps under perturbations that reorder floating-point sums without
changing the math: 2 torch threads instead of 1 (other reduction splits in oneDNN / MKL), channels_last tensors
instead of contiguous ones (other convolution kernels), and both. A batch split does not apply: one process
computes the whole batch (tests/test_train.py's DDP test compares 2 ranks with 1 process). For every value of
every step the largest relative difference |x - y| / max(|x|, |y|) over the perturbations is its noise, and
its tolerance is NOISE_MULTIPLE times that, never below FLOOR (`tolerance`).

What the noise looks like (measured on an AMD EPYC, tests/data/training_values.json): the first step, before any
optimizer step, differs by ~1e-7 to 1e-5 relative. Adam with betas (0, 0.9) moves every weight by lr sign(g) at
its first step, so a gradient within float noise of 0 flips a weight by 2 lr: from the second step on the noise
is 1e-5 to 1e-1 relative, largest for terms near 0 (g_gan, the mean of D's logits). So the first step's values
pin the objective tightly, and the later ones the optimizer and schedule, each to its own measured noise.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from smis.build import build  # noqa: E402
from smis.config import TINY, get_preset  # noqa: E402
from smis.data import collate  # noqa: E402
from smis.imle import IMLEStep, build_imle  # noqa: E402
from smis.networks import VARIANTS  # noqa: E402
from smis.options import TrainConfig  # noqa: E402
from smis.train import TrainStep, make_train_dataset, schedule  # noqa: E402
from smis.utils import atomic_write_json, cpu_model, project_root  # noqa: E402

OUT = project_root() / "tests" / "data" / "training_values.json"
STEPS = 3                                                   # training steps per variant
TRAINED = ("clvae", "gaugan", "groupdnet", "cimle")         # one variant per family (+ gaugan: no encoder, no KL)
IMLE = {"pool_size": 4, "samples": 3, "resample_every": 2, "reinit_round": 0}              # cIMLE schedule fields
PERTURBATIONS = {"threads_2": dict(threads=2), "channels_last": dict(channels_last=True),
                 "threads_2_channels_last": dict(threads=2, channels_last=True)}   # run_steps arguments
NOISE_MULTIPLE = 10       # tolerance / measured noise: room for another CPU's kernels (tests/test_training_values.py)
FLOOR = 1e-5              # the smallest tolerance (~80 float32 ulps): a value bitwise stable here may not be elsewhere


def config(variant: str,                   # a key of smis.networks.VARIANTS
           channels_last: bool = False,    # run the networks on channels_last tensors
           ) -> TrainConfig:
    """The run of `variant` whose first STEPS steps are stored (CPU, fp32, seed 0, 8 SynthScenes images)."""
    return TrainConfig(variant=variant, preset="synthscenes", dataset="synthscenes", device="cpu", precision="fp32",
                       seed=0, data_seed=0, data_length=8, flip=False, batch_size=2, steps=STEPS,
                       preset_overrides=TINY, perceptual="effnet", channels_last=channels_last,
                       imle=IMLE if VARIANTS[variant].family == "cimle" else {}, progress=False, tensorboard=False)


def run_steps(variant: str,                # a key of smis.networks.VARIANTS
              threads: int = 1,            # torch intra-op threads during the steps
              channels_last: bool = False,  # networks and images in channels_last
              ) -> list[dict[str, float]]:
    """What the first STEPS training steps of `config(variant)` log, one dict per step."""
    cfg = config(variant, channels_last)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        preset = get_preset(cfg.preset, **cfg.preset_overrides)
        data = make_train_dataset(cfg, preset)
        if VARIANTS[variant].family == "cimle":
            step = IMLEStep(cfg, build_imle(cfg, "cpu"), STEPS, cfg.batch_size, data)
            return [step() for _ in range(STEPS)]
        parts = build(cfg, "cpu")
        parts.nets.train()
        step = TrainStep(cfg, parts, *schedule(cfg, preset, len(data), cfg.batch_size), global_batch=cfg.batch_size)
        batch = collate([data[i] for i in range(cfg.batch_size)])
        return [step(batch["image"], batch["label"]) for _ in range(STEPS)]
    finally:
        torch.set_num_threads(before)


def relative_difference(x: float, y: float) -> float:
    """|x - y| / max(|x|, |y|); 0 where both are 0."""
    scale = max(abs(x), abs(y))
    return abs(x - y) / scale if scale > 0 else 0.0


def measure_noise(variant: str,                          # a key of TRAINED
                  reference: list[dict[str, float]],     # run_steps(variant)
                  ) -> list[dict[str, float]]:
    """Per step, per value: the largest relative difference from `reference` under PERTURBATIONS."""
    noise = [dict.fromkeys(step, 0.0) for step in reference]
    for kw in PERTURBATIONS.values():
        for n, ref, got in zip(noise, reference, run_steps(variant, **kw), strict=True):
            if got.keys() != ref.keys():
                raise ValueError(f"the steps logged different values: {sorted(got)} vs {sorted(ref)}")
            for k in ref:
                n[k] = max(n[k], relative_difference(got[k], ref[k]))
    return noise


def tolerance(noise: float) -> float:
    """The test's relative tolerance of a value whose measured noise is `noise`."""
    return max(NOISE_MULTIPLE * noise, FLOOR)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--print", action="store_true", help="print this machine's values; write nothing")
    a = p.parse_args(argv)
    t0 = time.perf_counter()
    values = {v: run_steps(v) for v in TRAINED}
    if a.print:
        print(json.dumps(values, indent=1))
        return 0
    noise = {v: measure_noise(v, values[v]) for v in TRAINED}
    for v in TRAINED:
        print(f"{v:10s} ({VARIANTS[v].family:9s}) largest relative difference, per step: "
              + ", ".join(f"{max(n.values()):.1e}" for n in noise[v]))
    atomic_write_json({
        "about": "Losses of three seeded training steps per variant family (scripts/training_values.py, read by "
                 "tests/test_training_values.py).",
        "command": "python scripts/training_values.py",
        "date": time.strftime("%Y-%m-%d"),
        "torch": torch.__version__,
        "cpu": cpu_model(),
        "cpus_measured": [cpu_model()],
        "cpus_not_measured": "Intel Xeon (earlier sessions of this project ran there; not reachable when these values "
                             "were written)",
        "config": {v: {k: x for k, x in vars(config(v)).items() if k in (
            "variant", "preset", "precision", "seed", "data_seed", "data_length", "flip", "batch_size", "steps",
            "preset_overrides", "perceptual", "imle")} for v in TRAINED},
        "threads": 1,
        "noise": {"perturbations": {k: str(kw) for k, kw in PERTURBATIONS.items()},
                  "batch_split": "not applicable: one process computes the whole batch",
                  "largest_per_step": {v: [max(n.values()) for n in noise[v]] for v in TRAINED}},
        "tolerance": {"rule": f"relative, per value: max({NOISE_MULTIPLE} x its measured noise, {FLOOR:g})",
                      "multiple": NOISE_MULTIPLE, "floor": FLOOR},
        "values": {v: {"family": VARIANTS[v].family,
                       "steps": [{k: {"value": x, "noise": n[k], "tolerance": tolerance(n[k])} for k, x in step.items()}
                                 for step, n in zip(values[v], noise[v])]} for v in TRAINED},
        "seconds": round(time.perf_counter() - t0, 1),
    }, OUT)
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
