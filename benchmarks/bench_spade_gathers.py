"""Generator forward + backward with SPADE on piecewise-constant maps: convolutions vs gathers, per preset.

One generator (random init, training mode) per preset, Voronoi label maps (17 classes, or all of a preset's
classes if fewer), prior latents; one forward + backward of a mean-square loss per call. Paths, interleaved
call by call (the CPU is shared):
    dense    G.piecewise_cond = False: one-hot / CSE maps through mlp_shared, mlp_gamma, mlp_beta as convolutions
    shared   gathers for mlp_shared only (spade.GATHER_MODULATION = False), mlp_gamma / mlp_beta convolutions
    gathers  the default: mlp_shared and mlp_gamma / mlp_beta by gathers where the convs cost >= GATHER_MIN_MACS
    all      gathers at every SPADE (GATHER_MIN_MACS = 0)
    dense_1thread  dense on one torch thread: its differences from dense are the float-order noise floor
Reported: median and min wall time, process CPU time (spin-waits of idle OpenMP threads included), speed-up
over dense, and the output / gradient differences against dense (float summation order only).

    python benchmarks/bench_spade_gathers.py --presets ade20k gta5 synthscenes --threads 2     # ~3 min
    python benchmarks/bench_spade_gathers.py --presets ade20k --batch 16 --device cuda
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import machine_info, pick_device, sync, voronoi_masks, write_json  # noqa: E402
from smis.networks import Latents, build_networks, spade  # noqa: E402

PATHS = {"dense": dict(piecewise=False), "shared": dict(modulation=False), "gathers": {}, "all": dict(min_macs=0),
         "dense_1thread": dict(piecewise=False, threads=1)}


def set_path(G, name: str, default_min_macs: float) -> None:
    opts = PATHS[name]
    G.piecewise_cond = opts.get("piecewise", True)
    spade.GATHER_MODULATION = opts.get("modulation", True)
    spade.GATHER_MIN_MACS = opts.get("min_macs", default_min_macs)


def run_preset(preset: str, batch: int, device: torch.device, reps: int, paths: list[str]) -> dict:
    torch.manual_seed(0)
    G = build_networks("clvae", preset, discriminator=False).G.to(device).train()
    H, W = G.image_size
    C = G.spec.num_classes
    label = voronoi_masks(batch, max(H, W), classes_per_mask=min(17, C), num_classes=C)[:, :H, :W].to(device)
    z = Latents.prior(G.spec, label, torch.Generator().manual_seed(0)).map(lambda t: t.to(device))
    state = {k: v.clone() for k, v in G.state_dict().items()}
    default = spade.GATHER_MIN_MACS

    def call(name: str):
        set_path(G, name, default)
        G.zero_grad(set_to_none=True)
        threads = torch.get_num_threads()
        torch.set_num_threads(PATHS[name].get("threads", threads))
        try:
            y = G(label, z)
            y.square().mean().backward()
            sync(device)
        finally:
            torch.set_num_threads(threads)
        return y.detach(), torch.cat([p.grad.flatten() for p in G.parameters() if p.grad is not None])

    ref = None
    diffs = {}
    for name in paths:                                                 # warm-up and equality, same weights
        G.load_state_dict(state)
        out, grad = call(name)
        if ref is None:
            ref = (out, grad)
        diffs[name] = {"output_max_abs": float((out - ref[0]).abs().max()),
                       "grad_rel_l2": float((grad - ref[1]).norm() / ref[1].norm())}
    times = {n: [] for n in paths}
    cpu = {n: [] for n in paths}
    for _ in range(reps):
        for name in paths:
            t0, c0 = time.perf_counter(), time.process_time()
            call(name)
            times[name].append(time.perf_counter() - t0)
            cpu[name].append(time.process_time() - c0)
    set_path(G, "gathers", default)
    base = statistics.median(times[paths[0]])
    rows = []
    for name in paths:
        med = statistics.median(times[name])
        rows.append({"preset": preset, "batch": batch, "path": name, "median_s": med, "min_s": min(times[name]),
                     "cpu_s": statistics.median(cpu[name]), "speedup_vs_" + paths[0]: base / med,
                     "times_s": times[name], **diffs[name]})
    return {"preset": preset, "image_size": [H, W], "num_classes": C, "rows": rows}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--presets", nargs="+", default=["ade20k", "gta5", "synthscenes"])
    p.add_argument("--batch", type=int, default=None, help="default: 1, SynthScenes 8")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--paths", nargs="+", default=list(PATHS), choices=list(PATHS), help="the first is the reference")
    p.add_argument("--out", help="JSON name (default spade_gathers_<device>.json in $OUT or benchmarks/results)")
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    device = pick_device(a.device)
    result = {"benchmark": "generator forward + backward, SPADE convolutions vs gathers on piecewise-constant maps",
              "machine_at_start": machine_info(device), "reps": a.reps, "presets": []}
    for preset in a.presets:
        batch = a.batch or (8 if preset == "synthscenes" else 1)
        result["presets"].append(run_preset(preset, batch, device, a.reps, a.paths))
        print(f"{preset}: done", flush=True)
    result["machine"] = machine_info(device)
    m = result["machine"]
    print(f"\nG forward + backward on {m['device']}, {m['torch_threads']} threads, load "
          f"{result['machine_at_start']['load_avg_1_5_15']} -> {m['load_avg_1_5_15']}, {m['date_utc']} UTC")
    print(f"| preset | batch | path | s (median) | min | CPU s | x {a.paths[0]} | output max diff | grad rel diff |")
    print("|---|---|---|---|---|---|---|---|---|")
    for pr in result["presets"]:
        for r in pr["rows"]:
            print(f"| {r['preset']} | {r['batch']} | {r['path']} | {r['median_s']:.3f} | {r['min_s']:.3f} "
                  f"| {r['cpu_s']:.3f} | "
                  f"{r['speedup_vs_' + a.paths[0]]:.2f} | {r['output_max_abs']:.1e} | {r['grad_rel_l2']:.1e} |")
    write_json(result, a.out or f"spade_gathers_{device.type}.json")
    return result


if __name__ == "__main__":
    main()
