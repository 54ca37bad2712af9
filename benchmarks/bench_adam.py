"""Adam's three torch implementations on one training step's parameters: per-tensor loop (torch's CPU default),
foreach (what `smis.build.make_adam` picks unless fused) and fused, interleaved, on the G+E and D parameters of a
preset's clvae (channels_last as the shipped trainings hold them, and contiguous). Also checks that foreach's
parameters equal the loop's bit for bit after the timed steps (fused rounds differently).

    python benchmarks/bench_adam.py --preset synthscenes --threads 1           # ~1 min
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

IMPLS = {"loop": {"foreach": False}, "foreach": {"foreach": True}, "fused": {"fused": True}}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", default="synthscenes")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--steps", type=int, default=5, help="timed optimiser steps per implementation and round")
    p.add_argument("--name", default=None, help="JSON name (default adam_<preset>_cpu.json)")
    p.add_argument("--system-malloc", action="store_true",
                   help="leave glibc's allocator as it is (training sets smis.utils.keep_freed_memory on the CPU)")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    from smis.utils import keep_freed_memory
    allocator = "glibc default" if a.system_malloc else ("keeps freed memory" if keep_freed_memory() else "default")
    from common import machine_info, write_json
    from smis.config import get_preset
    from smis.networks import build_networks
    rows = []
    for layout in ("channels_last", "contiguous"):
        torch.manual_seed(0)
        nets = build_networks("clvae", get_preset(a.preset))
        if layout == "channels_last":
            nets = nets.to(memory_format=torch.channels_last)
        groups = {"G+E": list(nets.G.parameters()) + list(nets.E.parameters()), "D": list(nets.D.parameters())}
        copies, opts, times = {}, {}, {}
        for impl, kw in IMPLS.items():                                  # each its own copy of the weights
            copies[impl] = {g: [torch.nn.Parameter(q.detach().clone(memory_format=torch.preserve_format))
                                for q in ps] for g, ps in groups.items()}
            opts[impl] = [torch.optim.Adam(ps, lr=1e-4, betas=(0.0, 0.9), **kw) for ps in copies[impl].values()]
            times[impl] = []
        gen = torch.Generator().manual_seed(1)
        grads = [torch.randn(q.shape, generator=gen).to(memory_format=torch.channels_last)
                 if q.dim() == 4 and layout == "channels_last" else torch.randn(q.shape, generator=gen)
                 for ps in groups.values() for q in ps]
        for impl in IMPLS:
            for q, g in zip([q for ps in copies[impl].values() for q in ps], grads):
                q.grad = g.clone(memory_format=torch.preserve_format)
            for opt in opts[impl]:
                opt.step()                                              # warm-up (state allocated)
        for _ in range(a.rounds):
            for impl in IMPLS:
                t = time.perf_counter()
                for _ in range(a.steps):
                    for opt in opts[impl]:
                        opt.step()
                times[impl].append((time.perf_counter() - t) / a.steps)
        flat = {impl: [q for ps in copies[impl].values() for q in ps] for impl in IMPLS}
        same = all(torch.equal(x, y) for x, y in zip(flat["loop"], flat["foreach"]))
        fused_diff = max(float((x.detach() - y.detach()).abs().max()) for x, y in zip(flat["loop"], flat["fused"]))
        n = sum(q.numel() for q in flat["loop"])
        for impl in IMPLS:
            ms = statistics.median(times[impl]) * 1e3
            rows.append({"layout": layout, "impl": impl, "ms_per_step": round(ms, 3), "parameters": n,
                         "x_loop": round(statistics.median(times["loop"]) / statistics.median(times[impl]), 2),
                         "equals_loop_bitwise": same if impl == "foreach" else (impl == "loop" or fused_diff == 0),
                         "max_abs_diff_vs_loop": 0.0 if impl != "fused" else fused_diff})
    result = {"benchmark": "Adam implementations, one optimiser step of G+E and of D", "preset": a.preset,
              "threads": a.threads, "allocator": allocator, "rounds": a.rounds, "steps_per_round": a.steps,
              "rows": rows, "machine": machine_info(torch.device("cpu"))}
    m = result["machine"]
    print(f"Adam on {a.preset} clvae's {rows[0]['parameters']:,} parameters (G+E and D steps), {a.threads} thread(s), "
          f"allocator {allocator}, {m['device']}, load {m['load_avg_1_5_15']}, {m['date_utc']} UTC")
    print("| layout | implementation | ms per step (median) | x loop | equal to the loop |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['layout']} | {r['impl']} | {r['ms_per_step']:.1f} | {r['x_loop']:.2f} | "
              + ("bit for bit" if r["equals_loop_bitwise"] else f"max abs diff {r['max_abs_diff_vs_loop']:.1e}")
              + " |")
    write_json(result, a.name or f"adam_{a.preset}_cpu.json")
    return result


if __name__ == "__main__":
    main()
