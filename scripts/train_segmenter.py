"""Train the SynthScenes segmenter used for mask fidelity (mIoU) and ship it in `checkpoints/`.

    python scripts/train_segmenter.py                  # 64x64 -> checkpoints/synthscenes_segmenter.pt (+ .json)
    python scripts/train_segmenter.py --size 128       # 128x128 -> checkpoints/synthscenes_segmenter_128.pt

Trains `smis.segmenter.Segmenter` on generated SynthScenes TRAIN images (data seed 0), scores it on the
TEST split (a different random stream: the images the notebooks evaluate on) and writes the model
(fp16 storage) with a JSON beside it: the exact command, seeds, steps, batch, device, torch version,
wall time, parameters, test mIoU / pixel accuracy / per-class IoU (the ceiling for generated images),
and the same images scored against other scenes' masks (the floor of an image that ignores its mask).
"""
from __future__ import annotations

import argparse
import os
import platform
import shlex
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from smis.segmenter import (mask_fidelity, per_class_iou, save_segmenter, synthscenes_arrays,  # noqa: E402
                            train_segmenter)
from smis.utils import cpu_model, device_name  # noqa: E402
from smis.utils import atomic_write_json, pick_device, resolve  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", type=int, default=64, help="training and test image size (divisible by 8)")
    p.add_argument("--length", type=int, default=4000, help="SynthScenes training images")
    p.add_argument("--steps", type=int, default=4500, help="optimiser steps")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--lr", type=float, default=6e-3, help="Adam peak learning rate (warm-up, cosine decay)")
    p.add_argument("--widths", type=int, nargs=3, default=[16, 32, 64], help="U-Net level widths")
    p.add_argument("--class-weights", choices=["sqrt_inverse", "none"], default="sqrt_inverse",
                   help="cross-entropy class weights (1 / sqrt(pixel frequency), or none)")
    p.add_argument("--seed", type=int, default=0, help="weights, batch order and flips")
    p.add_argument("--data-seed", type=int, default=0, help="SynthScenes seed of the training split")
    p.add_argument("--test", type=int, default=200, help="SynthScenes TEST images to score")
    p.add_argument("--test-seed", type=int, default=0, help="SynthScenes seed of the test split")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda, cuda:1 ...")
    p.add_argument("--out", default=None, help="model file (default checkpoints/synthscenes_segmenter.pt at 64, "
                                               "checkpoints/synthscenes_segmenter_<size>.pt otherwise)")
    p.add_argument("--no-progress", action="store_true")
    a = p.parse_args(argv)
    if a.size % 8 or not 64 <= a.size <= 512:
        p.error(f"--size {a.size}: the U-Net needs a multiple of 8 and SynthScenes 64..512, e.g. 64 or 128")
    return a


def resolved_command(a: argparse.Namespace, out: str) -> str:
    """The command with every option spelled out: it re-creates the file whatever the defaults become."""
    args = ["--size", a.size, "--length", a.length, "--steps", a.steps, "--batch-size", a.batch_size, "--lr", a.lr,
            "--widths", *a.widths, "--class-weights", a.class_weights, "--seed", a.seed, "--data-seed", a.data_seed,
            "--test", a.test, "--test-seed", a.test_seed, "--threads", a.threads, "--device", a.device, "--out", out]
    return "python scripts/train_segmenter.py " + " ".join(shlex.quote(str(v)) for v in args)



def main(argv=None) -> int:
    a = parse_args(argv)

    torch.set_num_threads(a.threads)
    device = pick_device(a.device)
    out = a.out or ("checkpoints/synthscenes_segmenter.pt" if a.size == 64 else
                    f"checkpoints/synthscenes_segmenter_{a.size}.pt")
    path = resolve(out)
    progress = not a.no_progress

    load = [round(v, 2) for v in os.getloadavg()]                     # other jobs on the CPU stretch the wall time
    t0 = time.perf_counter()
    train_data = synthscenes_arrays("train", a.size, a.length, a.data_seed, progress)
    t_data = time.perf_counter() - t0
    net, losses = train_segmenter(size=a.size, length=a.length, steps=a.steps, batch_size=a.batch_size, lr=a.lr,
                                  seed=a.seed, data_seed=a.data_seed, widths=a.widths, class_weights=a.class_weights,
                                  device=device, progress=progress, data=train_data)
    wall = time.perf_counter() - t0

    images, labels = synthscenes_arrays("test", a.size, a.test, a.test_seed, progress)
    images = images.float().div_(127.5).sub_(1.0)                        # the [-1, 1] range of the generator
    real = mask_fidelity(net, images, labels.long())
    # the floor: the same images against other scenes' masks (each image paired with the next one's mask)
    shuffled = mask_fidelity(net, images, labels.long().roll(1, 0))
    names = net.class_names
    test = {"dataset": "synthscenes (generated on the fly)", "split": "test", "images": a.test, "seed": a.test_seed,
            "size": [a.size, a.size], "miou": round(real["miou"], 4), "pixel_acc": round(real["pixel_acc"], 4),
            "per_class_iou": {k: (None if v is None else round(v, 4)) for k, v in per_class_iou(real, names).items()},
            "shuffled_masks_miou": round(shuffled["miou"], 4),
            "shuffled_masks_pixel_acc": round(shuffled["pixel_acc"], 4)}
    record = {
        "command": resolved_command(a, out),
        "invoked_as": " ".join(["python scripts/train_segmenter.py",
                                *(shlex.quote(s) for s in (argv if argv is not None else sys.argv[1:]))]),
        "what": "smis.segmenter.Segmenter (3-level U-Net, GroupNorm + ReLU) for mask fidelity: mIoU of its predictions "
                "on generated images against their masks (smis.segmenter.mask_fidelity)",
        "dataset": "synthscenes (generated on the fly)", "train_split": "train", "train_images": a.length,
        "data_seed": a.data_seed, "size": [a.size, a.size], "augmentation": "random horizontal flips",
        "steps": a.steps, "batch_size": a.batch_size, "lr": a.lr, "optimizer": "Adam, linear warm-up then cosine decay",
        "loss": f"cross-entropy, class weights {a.class_weights}", "class_weights": net.meta["class_weight_values"],
        "seed": a.seed, "widths": list(a.widths), "params": net.num_params(),
        "final_train_loss": round(float(sum(losses[-50:]) / len(losses[-50:])), 4),
        "wall_time_s": round(wall, 1), "data_generation_s": round(t_data, 1), "train_s": net.meta["train_seconds"],
        "device": device_name(device), "torch": str(torch.__version__), "python": platform.python_version(),
        "cpu": cpu_model(), "load_average_at_start": load, "storage": "fp16 (loaded back as fp32)",
        "test": test,
    }
    save_segmenter(net, path, extra={"provenance": record})
    record["file_bytes"] = path.stat().st_size
    atomic_write_json(record, path.with_suffix(".json"))
    print(f"[segmenter] {a.steps} steps in {wall / 60:.1f} min ({net.num_params():,} params) -> {out} "
          f"({path.stat().st_size / 2**20:.2f} MiB)")
    print(f"[segmenter] SynthScenes test ({a.test} images): mIoU {real['miou']:.4f}, pixel accuracy "
          f"{real['pixel_acc']:.4f}; against shuffled masks mIoU {shuffled['miou']:.4f}")
    print("[segmenter] per-class IoU: " + ", ".join(f"{k} {v:.3f}" for k, v in per_class_iou(real, names).items()
                                                   if v is not None))
    return 0


if __name__ == "__main__":
    sys.exit(main())
