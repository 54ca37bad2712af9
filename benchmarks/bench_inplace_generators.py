"""Prior sampling with the generators' in-place inference path on and off, interleaved in one process.

At inference (no autograd) SPADE's `normalized * (1 + gamma) + beta` and the LeakyReLU after it are computed in
place (`smis.networks.ops.modulate`, `leaky_relu_`; cIMLE's LeakyReLU modules in place): the same floats in the
same layout, fewer feature-sized buffers. "off" swaps `ops.inference` for a function that always says False (every
op out of place, as before) and turns the in-place LeakyReLU modules off, so both variants run the same weights on
the same masks and seeds, one after the other, alternating the order per round. Each shipped model is run as
notebook 04 runs it (`evaluation_layout`, `generator_chunk`): 8 SynthScenes test masks x K samples per call.
The images of both variants are compared bit for bit.

    python benchmarks/bench_inplace_generators.py                          # the five families' shipped models
    python benchmarks/bench_inplace_generators.py --models groupdnet --rounds 6
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import machine_info, write_json  # noqa: E402
import smis.networks.ops as ops  # noqa: E402
from smis.evaluate import evaluation_layout, generator_chunk, load_pairs, mask_seed, test_set  # noqa: E402
from smis.models import load_networks  # noqa: E402
from smis.sampling import sample_prior  # noqa: E402

MODELS = ["clvae", "gaugan_vae", "gaugan_vae_lowkl", "groupdnet", "cimle"]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=MODELS, help="shipped checkpoints/synthscenes_<name>.pt")
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--k", type=int, default=20, help="samples per mask (notebook 04's demo: 20)")
    p.add_argument("--threads", type=int, default=2, help="torch threads (the demo: the 2 cores)")
    p.add_argument("--name", default="inplace_generators_cpu.json")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    test, idx = test_set("synthscenes", "", "test", 64, 8, 0)
    _, label = load_pairs(test, idx)
    seeds = [mask_seed(0, i) for i in idx]
    in_place = ops.inference

    def variant(nets, on: bool) -> None:
        ops.inference = in_place if on else (lambda *tensors: False)
        for m in nets.G.modules():
            if isinstance(m, torch.nn.LeakyReLU) and getattr(m, "_was_in_place", m.inplace):
                m._was_in_place = True
                m.inplace = on

    out = {}
    try:
        for name in a.models:
            nets = evaluation_layout(load_networks(f"checkpoints/synthscenes_{name}.pt"))
            chunk = generator_chunk(nets, 64)
            times, images = {"off": [], "on": []}, {}
            with torch.no_grad():
                for r in range(a.rounds + 1):                    # round 0: warm-up, not timed
                    for on in ((False, True) if r % 2 else (True, False)):
                        variant(nets, on)
                        t = time.perf_counter()
                        images["on" if on else "off"] = sample_prior(nets, label, a.k, seeds, chunk)
                        if r:
                            times["on" if on else "off"].append(time.perf_counter() - t)
            med = {k: statistics.median(v) for k, v in times.items()}
            out[name] = {"chunk": chunk, "off_s": times["off"], "on_s": times["on"], "median_off_s": med["off"],
                         "median_on_s": med["on"], "ratio_on_off": med["on"] / med["off"],
                         "images_bitwise_equal": bool(torch.equal(images["on"], images["off"]))}
            print(f"{name:18s} {chunk:3d} a pass  off {med['off']:.3f} s  on {med['on']:.3f} s  "
                  f"ratio {med['on'] / med['off']:.3f}  images equal: {out[name]['images_bitwise_equal']}")
    finally:
        ops.inference = in_place
    print("wrote", write_json({"benchmark": "in-place generator inference", "command": "python "
                               "benchmarks/bench_inplace_generators.py " + " ".join(argv or sys.argv[1:]),
                               "masks": len(idx), "k": a.k, "rounds": a.rounds,
                               "machine": machine_info(torch.device("cpu")), "models": out}, a.name))
    return 0


if __name__ == "__main__":
    sys.exit(main())
