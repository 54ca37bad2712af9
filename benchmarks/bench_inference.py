"""Inference latency: one sample, a 40-sample batch for one mask, one editor update.

- one sample: `smis.editing.sample_images(nets, mask, 1)`: prior codes, one generator call;
- 40 samples of one mask: `sample_images(nets, mask, 40)`: one batched generator call. Sampling
  never runs the encoder (the published code encodes a ground-truth photo even here);
- editor update: `editing.move` of one class code at one layer along a direction, then
  `editing.synthesize` (batch 1), the model side of one slider move (the widget's end-to-end
  latency, PNG encoding included, is `bench_editor.py`);
- encode one photo: `editing.encode` (once per photo chosen in the editor / style reference).

CPU: the demo model `checkpoints/synthscenes_clvae.pt` when it exists, else a random model of the
same size (synthscenes preset). GPU: the ADE20K preset (random weights; 256x256, 151 classes, a
Voronoi mask with 17 classes), fp32 and bf16 autocast. Medians after warm-up, device synchronised.

    python benchmarks/bench_inference.py --device cpu --threads 1 2                  # demo model
    python benchmarks/bench_inference.py --device cuda --preset ade20k --precision fp32 bf16
"""
from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (fixed_batch, machine_info, peak_gib, pick_device, reset_peak, summary,  # noqa: E402
                    time_steps, write_json)
from smis import editing  # noqa: E402
from smis.checkpoint import load_model  # noqa: E402
from smis.config import get_preset  # noqa: E402
from smis.networks import build_networks  # noqa: E402
from smis.utils import atomic_write_json, resolve  # noqa: E402

DEMO = "checkpoints/synthscenes_clvae.pt"
TARGETS = {"samples40_s_gpu_ade20k": 0.5, "editor_update_ms_cpu_demo": 150.0}


def load(a, device):
    """(networks in eval mode, description)."""
    if a.preset == "synthscenes" and not a.random and resolve(a.model).exists():
        nets = load_model(resolve(a.model), device)
        return nets, f"{a.model} (step {(nets.meta or {}).get('step')})"
    torch.manual_seed(0)
    preset = get_preset(a.preset, **a.overrides)
    nets = build_networks(a.variant, preset, discriminator=False, device=device).eval()
    why = "" if a.preset != "synthscenes" or a.random else f" ({a.model} not found)"
    return nets, f"random {a.variant} model, {a.preset} preset{' ' + str(a.overrides) if a.overrides else ''}{why}"


def bench(nets, device, precision: str, reps: int, n_samples: int) -> dict:
    image, label, masks = fixed_batch(nets.preset, 1, device, seed=1)
    cast = (torch.autocast(device.type, dtype=torch.bfloat16) if precision == "bf16" else contextlib.nullcontext())
    g = torch.Generator(device=device).manual_seed(0)
    with torch.no_grad(), cast:
        codes = editing.encode(nets, image, label)                                     # the photo being edited
        present = codes.present[0, -1].nonzero().flatten()                              # classes at the deepest layer
        sizes = torch.stack([(label[0] == c).sum() for c in present])
        cls, layer = int(present[sizes.argmax()]), codes.zc.shape[1] - 1               # the largest region
        direction = editing.random_direction(nets.spec.z_dim_local, generator=g, device=device)
        alphas = iter(torch.linspace(-2.5, 2.5, 10_000).tolist())
        tasks = {
            "one_sample": lambda: editing.sample_images(nets, label, 1, generator=g),
            f"samples_{n_samples}_one_mask": lambda: editing.sample_images(nets, label, n_samples, generator=g),
            "editor_update": lambda: editing.synthesize(nets, label,
                                                        editing.move(codes, cls, layer, direction, next(alphas))),
            "encode_one_photo": lambda: editing.encode(nets, image, label),
        }
        rows = {}
        for name, fn in tasks.items():
            reset_peak(device)
            n = max(3, reps // 4) if name.startswith("samples") else reps
            s = summary(time_steps(fn, device, warmup=2, steps=n))
            rows[name] = {"median_ms": round(1000 * s["median_s"], 2), "min_ms": round(1000 * s["min_s"], 2),
                          "max_ms": round(1000 * s["max_s"], 2), "n": s["n"], "peak_gib": peak_gib(device)}
    rows[f"samples_{n_samples}_one_mask"]["images_per_s"] = round(
        n_samples / rows[f"samples_{n_samples}_one_mask"]["median_ms"] * 1000, 1)
    return {"precision": precision, "threads": torch.get_num_threads(), "masks": masks,
            "classes_in_mask": int(label.unique().numel()), "edited": {"class": cls, "layer": layer}, "tasks": rows}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    p.add_argument("--preset", default=None, help="default: synthscenes on the CPU, ade20k on a GPU")
    p.add_argument("--variant", default="clvae")
    p.add_argument("--set", nargs="*", default=[], metavar="FIELD=JSON", help="preset overrides (smoke runs)")
    p.add_argument("--model", default=DEMO, help="exported model for the synthscenes preset")
    p.add_argument("--random", action="store_true", help="random weights even if the demo model exists")
    p.add_argument("--precision", nargs="+", default=None, help="fp32 and/or bf16 (default: fp32 on CPU, both on GPU)")
    p.add_argument("--threads", type=int, nargs="+", default=[None], help="CPU intra-op threads (one row each)")
    p.add_argument("--samples", type=int, default=40)
    p.add_argument("--reps", type=int, default=20)
    p.add_argument("--out", help="JSON path (default $OUT or benchmarks/results / inference_<preset>_<device>.json)")
    a = p.parse_args(argv)
    a.overrides = {k: json.loads(v) for k, _, v in (s.partition("=") for s in a.set)}
    device = pick_device(a.device)
    a.preset = a.preset or ("ade20k" if device.type == "cuda" else "synthscenes")
    precisions = a.precision or (["fp32", "bf16"] if device.type == "cuda" else ["fp32"])
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    nets, model = load(a, device)
    rows = []
    for threads in a.threads:
        if threads:
            torch.set_num_threads(threads)
        for prec in precisions:
            t0 = time.perf_counter()
            rows.append(bench(nets, device, prec, a.reps, a.samples))
            print(f"{prec}, {torch.get_num_threads()} threads: {time.perf_counter() - t0:.1f} s", flush=True)
    result = {"benchmark": "inference: prior sampling (G only), editor update (move + G), encoder",
              "config": {"preset": a.preset, "variant": nets.variant, "image_size": list(nets.preset.image_size),
                         "num_classes": nets.preset.num_classes, "ngf": nets.preset.ngf, "overrides": a.overrides,
                         "params": nets.param_counts(), "model": model},
              "machine": machine_info(device), "targets": TARGETS, "results": rows}
    print(f"\ninference, {model}, on {result['machine']['device']}, torch {torch.__version__}, "
          f"load {result['machine']['load_avg_1_5_15']}")
    names = list(rows[0]["tasks"])
    print("| precision | threads | " + " | ".join(f"{n} (ms)" for n in names) + f" | {a.samples} samples: images/s |")
    print("|---|---|" + "---|" * len(names) + "---|")
    for r in rows:
        print(f"| {r['precision']} | {r['threads']} | " + " | ".join(f"{r['tasks'][n]['median_ms']:.1f}" for n in names)
              + f" | {r['tasks'][names[1]]['images_per_s']} |")
    name = f"inference_{a.preset}_{device.type}.json"
    if a.out:
        atomic_write_json(result, a.out)
        print(f"wrote {a.out}")
    else:
        write_json(result, name)
    return result


if __name__ == "__main__":
    main()
