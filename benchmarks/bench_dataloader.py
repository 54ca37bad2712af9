"""Data-loading throughput: ADE20K-format files decoded and augmented as the paper trains on them.

Builds a temporary ADE20K-layout folder of `--files` JPEG/PNG pairs at realistic ADE20K sizes
(tiled and resized from the real sample files when ../shared/samples is there, else from
SynthScenes renders), then times `make_ade20k_dataset(..., "train")` (resize 286, random 256 crop,
flip) through a DataLoader for each worker count. Prints a table and writes JSON.

    python benchmarks/bench_dataloader.py --workers 0 2 --out benchmarks/results/dataloader_cpu.json
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import PIL
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from smis.data.ade20k import make_ade20k_dataset  # noqa: E402
from smis.data.base import collate  # noqa: E402
from smis.data.synthetic import generate  # noqa: E402
from smis.utils import atomic_write_json, cpu_model  # noqa: E402

SAMPLES = Path(os.environ.get("SMIS_SAMPLES", Path(__file__).resolve().parents[2] / "shared" / "samples"))


def source_pairs() -> list[tuple[Image.Image, Image.Image]]:
    """(RGB image, label) pairs to tile from: the real ADE20K samples, else SynthScenes renders."""
    ann = SAMPLES / "ade20k" / "annotations" / "training"
    if ann.is_dir():
        return [(Image.open(SAMPLES / "ade20k" / "images" / "training" / f"{p.stem}.jpg").convert("RGB"),
                 Image.open(p)) for p in sorted(ann.glob("*.png"))]
    out = []
    for i in range(4):
        img, lab, _ = generate(i, (384, 512), seed=0)
        out.append((Image.fromarray(img), Image.fromarray((lab + 1).astype(np.uint8), mode="L")))
    return out


def make_fixture(root: Path, n: int, seed: int = 0) -> str:
    """`n` ADE20K-layout pairs: short side 384..600, aspect 0.75..1.5 (ADE20K's common range), JPEG q90."""
    rng = np.random.default_rng(seed)
    src = source_pairs()
    (root / "images" / "training").mkdir(parents=True)
    (root / "annotations" / "training").mkdir(parents=True)
    for i in range(n):
        img, lab = src[i % len(src)]
        short, aspect = int(rng.integers(384, 601)), float(rng.uniform(0.75, 1.5))
        w, h = (round(short * aspect), short) if aspect >= 1 else (short, round(short / aspect))
        stem = f"ADE_train_{i:08d}"
        img.resize((w, h), Image.BICUBIC).save(root / "images" / "training" / f"{stem}.jpg", quality=90)
        lab.resize((w, h), Image.NEAREST).save(root / "annotations" / "training" / f"{stem}.png")
    return "ade20k samples" if (SAMPLES / "ade20k").is_dir() else "synthscenes renders"


def time_loader(ds, workers: int, batch_size: int, epochs: int) -> dict:
    """Samples/s after the first batch (steady state), plus the wait for the first batch."""
    g = torch.Generator().manual_seed(0)
    loader = torch.utils.data.DataLoader(ds, batch_size=batch_size, shuffle=True, num_workers=workers,
                                         collate_fn=collate, persistent_workers=workers > 0, generator=g)
    t0 = time.perf_counter()
    first, n = None, 0
    for _ in range(epochs):
        for batch in loader:
            if first is None:
                first = time.perf_counter()
            else:
                n += len(batch["index"])
    t1 = time.perf_counter()
    return {"workers": workers, "samples_per_s": n / (t1 - first), "first_batch_s": first - t0, "samples_timed": n}


def time_stages(ds, n: int) -> dict:
    """One process: ms per sample spent decoding (image + label) and in the paired transform."""
    t_dec = t_aug = 0.0
    for i in range(n):
        t0 = time.perf_counter()
        image, label = ds.load_raw(i % len(ds))
        t1 = time.perf_counter()
        ds.transform(image, label)
        t_aug += time.perf_counter() - t1
        t_dec += t1 - t0
    return {"decode_ms": 1000 * t_dec / n, "transform_ms": 1000 * t_aug / n}


def machine() -> dict:
    return {"cpu": cpu_model(), "machine": platform.machine(), "cpus_usable": len(os.sched_getaffinity(0)),
            "load_avg_1min": os.getloadavg()[0], "torch_threads_main": torch.get_num_threads(),
            "torch": torch.__version__, "pillow": PIL.__version__, "python": platform.python_version()}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--workers", type=int, nargs="+", default=[0, 2], help="DataLoader worker counts to time")
    p.add_argument("--files", type=int, default=64, help="image/label pairs in the temporary fixture")
    p.add_argument("--epochs", type=int, default=3, help="passes over the fixture per worker count")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--main-threads", type=int, help="torch.set_num_threads in the main process (default: torch's)")
    p.add_argument("--out", default=str(Path(__file__).resolve().parent / "results" / "dataloader_cpu.json"))
    a = p.parse_args(argv)
    if a.main_threads:
        torch.set_num_threads(a.main_threads)
    with tempfile.TemporaryDirectory(prefix="smis_bench_") as tmp:
        source = make_fixture(Path(tmp), a.files)
        ds = make_ade20k_dataset(tmp, "train")
        sizes = [Image.open(ip).size for ip, _ in ds.pairs]
        stages = time_stages(ds, min(32, len(ds)))
        rows = [time_loader(ds, w, a.batch_size, a.epochs) for w in a.workers]
    result = {"benchmark": "ADE20K-format train loading: decode JPEG+PNG, resize 286, random crop 256, flip",
              "fixture": {"files": a.files, "source": source, "mean_size_wh": np.mean(sizes, 0).round().tolist(),
                          "jpeg_quality": 90},
              "batch_size": a.batch_size, "epochs": a.epochs, "machine": machine(), "stages_one_process": stages,
              "results": rows}
    print(f"ADE20K train loading, {a.files} files (mean {result['fixture']['mean_size_wh']} WxH, from {source}), "
          f"batch {a.batch_size}, on {result['machine']['cpu']} ({result['machine']['cpus_usable']} CPUs)")
    print(f"one process: decode {stages['decode_ms']:.1f} ms + transform {stages['transform_ms']:.1f} ms per sample")
    print("| workers | samples/s | first batch (s) |\n|---|---|---|")
    for r in rows:
        print(f"| {r['workers']} | {r['samples_per_s']:.1f} | {r['first_batch_s']:.2f} |")
    atomic_write_json(result, a.out)
    print(f"wrote {a.out}")
    return result


if __name__ == "__main__":
    main()
