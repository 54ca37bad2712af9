"""Latency of the interactive editor: one slider move, end to end, on the demo model.

Each update is what the browser waits for: `move` along the principal directions, one generator
call (batch 1), conversion to uint8, nearest upscaling and PNG encoding, and setting the image
widget's value (`Editor.on_slider`, timed inside). Also timed apart: the generator call alone and
the display encoding alone. Run for 1 and 2 intra-op threads; the target is a median <= 150 ms.
Results go to benchmarks/results/editor_<device>.json.

    python -m benchmarks.bench_editor                                  # demo model, 60 updates per setting
    python -m benchmarks.bench_editor --model outputs/runs/demo_clvae/checkpoints/step_00000250.pt --updates 10
"""
from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch

from smis import editing
from smis.data import make_dataset
from smis.checkpoint import load_model
from smis.utils import atomic_write_json, resolve
from smis.viz import to_uint8
from smis.widgets import Editor, png_bytes

RESULTS = Path(__file__).resolve().parent / "results"
TARGET_MS = 150.0


def stats(seconds: list[float]) -> dict:
    ms = np.asarray(seconds) * 1000
    return {"median_ms": round(float(np.median(ms)), 2), "p90_ms": round(float(np.percentile(ms, 90)), 2),
            "mean_ms": round(float(ms.mean()), 2), "min_ms": round(float(ms.min()), 2), "n": int(ms.size)}


def bench(editor: Editor, updates: int, threads: int) -> dict:
    torch.set_num_threads(threads)
    c, l = editor.selection
    values = np.linspace(-2.5, 2.5, updates)                 # a drag across the slider
    for v in values[:3]:                                     # warm-up
        editor.sliders[0].value = float(v)
    editor.timings.clear()
    for v in values:
        editor.sliders[0].value = float(v)
    end_to_end = list(editor.timings)
    gen, enc = [], []
    for v in values[: max(5, updates // 3)]:
        editor.sliders[0].value = float(v)
        t = time.perf_counter()
        image = to_uint8(editing.synthesize(editor.nets, editor.label, editor.latents)[0])
        gen.append(time.perf_counter() - t)
        t = time.perf_counter()
        png_bytes(image, editor.scale)
        enc.append(time.perf_counter() - t)
    return {"threads": threads, "class": editor.class_names[c], "layer": l,
            "end_to_end": stats(end_to_end), "generator_only": stats(gen), "display_encoding_only": stats(enc)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="checkpoints/synthscenes_clvae.pt")
    p.add_argument("--images", type=int, default=32, help="SynthScenes test photos encoded for the PCA")
    p.add_argument("--updates", type=int, default=60, help="slider moves timed per setting")
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    p.add_argument("--scale", type=int, default=4, help="display upscaling")
    p.add_argument("--out", default=str(RESULTS / "editor_cpu.json"))
    a = p.parse_args(argv)
    path = resolve(a.model)
    if not path.exists():
        raise SystemExit(f"{path} not found. Fix: train and export the demo model "
                         "(python scripts/train_demo_models.py) or pass --model "
                         "outputs/runs/demo_clvae/checkpoints/step_XXXXXXXX.pt")
    nets = load_model(path, "cpu")
    ds = make_dataset("synthscenes", None, "test", size=nets.preset.image_size, length=a.images)
    images, labels, codes = editing.encode_dataset(nets, ds)
    editor = Editor(nets, images, labels, ds.info.class_names, ds.info.palette, codes=codes, scale=a.scale,
                    out_dir="outputs/bench_editor")
    c = max((v for _, v in editor.cls.options), key=lambda k: int((labels[0] == k).sum()))   # the largest region
    editor.cls.value, editor.layer.value = c, 0
    rows = [bench(editor, a.updates, t) for t in a.threads]
    result = {
        "model": str(a.model), "variant": nets.variant, "step": (nets.meta or {}).get("step"),
        "image_size": list(nets.preset.image_size), "display_scale": a.scale, "target_median_ms": TARGET_MS,
        "device": "cpu", "device_name": platform.machine(), "cpu_count": os.cpu_count(),
        "load_average_1min_at_end": round(os.getloadavg()[0], 2), "torch": torch.__version__, "results": rows,
    }
    print(f"editor slider update on {platform.machine()} CPU ({os.cpu_count()} cores), {a.model}, "
          f"load average {result['load_average_1min_at_end']}")
    print(f"{'threads':>7} | {'end-to-end median':>17} | {'p90':>7} | {'generator':>9} | {'display':>7} | target")
    for r in rows:
        e = r["end_to_end"]
        print(f"{r['threads']:>7} | {e['median_ms']:>14.1f} ms | {e['p90_ms']:>7.1f} | "
              f"{r['generator_only']['median_ms']:>9.1f} | "
              f"{r['display_encoding_only']['median_ms']:>7.2f} | {'ok' if e['median_ms'] <= TARGET_MS else 'SLOW'}")
    atomic_write_json(result, a.out)
    print("wrote", a.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
