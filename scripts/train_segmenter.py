"""Train the SynthScenes segmenter used for mask fidelity (mIoU) and ship it in `checkpoints/`.

    python scripts/train_segmenter.py                  # 64x64 -> checkpoints/synthscenes_segmenter.pt (+ .json)
    python scripts/train_segmenter.py --size 128       # 128x128 -> checkpoints/synthscenes_segmenter_128.pt

Trains `smis.segmenter.Segmenter` on generated SynthScenes TRAIN images (data seed 0; `train_segmenter` here,
`tests/test_segmenter.py` imports it), scores it on the
TEST split (a different random stream: the images the notebooks evaluate on) and writes the model
(fp16 storage) with a JSON beside it: the exact command, seeds, steps, batch, device, torch version,
wall time, parameters, test mIoU / pixel accuracy / per-class IoU (the ceiling for generated images),
and the same images scored against other scenes' masks (the floor of an image that ignores its mask).
"""
from __future__ import annotations

import argparse
import math
import os
import platform
import shlex
import sys
import time
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from smis.data.base import as_hw  # noqa: E402
from smis.data.synthetic import CLASSES, NUM_CLASSES, synthscenes_arrays  # noqa: E402
from smis.progress import Progress  # noqa: E402
from smis.segmenter import Segmenter, mask_fidelity, per_class_iou, save_segmenter  # noqa: E402
from smis.stats import check_ids  # noqa: E402
from smis.utils import cpu_model, device_name  # noqa: E402
from smis.utils import atomic_write_json, pick_device, resolve  # noqa: E402


# ---------------------------------------------------------------------------------------------
# Training on SynthScenes


def _lr_at(step: int, steps: int, lr: float, warmup: int) -> float:
    """Linear warm-up over `warmup` steps, then cosine decay to 0 at `steps`."""
    if step < warmup:
        return lr * (step + 1) / warmup
    return lr * 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))


def train_segmenter(size: int | Sequence[int] = 64,          # training image size, S or (H, W), divisible by 8
                    length: int = 4000,                      # SynthScenes training images (0..length-1)
                    steps: int = 4500,                       # optimiser steps
                    batch_size: int = 16,                    # images per step
                    lr: float = 6e-3,                        # Adam peak learning rate (warm-up, cosine decay)
                    seed: int = 0,                           # weights, batch order and flips
                    data_seed: int = 0,                      # SynthScenes seed of the training split
                    widths: Sequence[int] = (16, 32, 64),    # U-Net level widths
                    class_weights: str = "sqrt_inverse",     # cross-entropy class weights: "sqrt_inverse"
                                                             # (1 / sqrt(pixel frequency)) or "none"
                    device: str | torch.device | None = None,  # None: CUDA when present
                    progress: bool = True,                   # progress bars
                    data: tuple[torch.Tensor, torch.Tensor] | None = None,  # (uint8 images, labels) instead
                    ) -> tuple[Segmenter, list[float]]:
    """Train a `Segmenter` on SynthScenes TRAIN images with random horizontal flips (vertical ones would
    put the sky at the bottom), cross-entropy and Adam. Returns (segmenter in eval mode, loss per step).

    mIoU weighs every class alike while thin poles and small objects hold few pixels: with
    class_weights="sqrt_inverse" a pixel of class c weighs 1 / sqrt(f_c), f_c the class's share of the
    training pixels, scaled so that the average pixel weighs 1 (it raised mIoU, most on the thin poles:
    benchmarks/RESULTS.md, "Measurements formerly in comments").

    `data` (images (N, 3, H, W) uint8, labels (N, H, W)) replaces the generated split, e.g. to reuse it.
    Batches are drawn from a torch.Generator seeded with `seed`: two runs with the same arguments on the
    same device give the same weights.
    """
    hw = as_hw(size)
    if hw[0] % 8 or hw[1] % 8:
        raise ValueError(f"size={size}: the U-Net needs H and W divisible by 8, e.g. 64 or 128")
    for name, v in (("steps", steps), ("batch_size", batch_size), ("length", length)):
        if int(v) < 1:
            raise ValueError(f"{name}={v}: must be >= 1")
    if not lr > 0:
        raise ValueError(f"lr={lr}: must be > 0")
    device = pick_device(device)
    images, labels = data if data is not None else synthscenes_arrays("train", hw, length, data_seed, progress)
    if images.dtype != torch.uint8 or images.dim() != 4 or tuple(images.shape[-2:]) != hw:
        raise ValueError(f"data images must be (N, 3, {hw[0]}, {hw[1]}) uint8, got {tuple(images.shape)} "
                         f"{images.dtype}; make them with synthscenes_arrays(\"train\", size, ...)")
    check_ids(labels, NUM_CLASSES, "data labels")
    freq = torch.bincount(labels.reshape(-1).long(), minlength=NUM_CLASSES).double()
    freq = freq / freq.sum()                                            # (C,) share of the training pixels
    if class_weights == "sqrt_inverse":
        weight = freq.clamp(min=1e-6).rsqrt()
        weight = (weight / (weight * freq).sum()).float()               # (C,) mean weight per pixel = 1
    elif class_weights == "none":
        weight = torch.ones(NUM_CLASSES)
    else:
        raise ValueError(f"class_weights={class_weights!r}: choose 'sqrt_inverse' or 'none'")
    torch.manual_seed(seed)
    net = Segmenter(NUM_CLASSES, widths, hw, [c.name for c in CLASSES]).to(device)
    net = net.to(memory_format=torch.channels_last)                     # faster CPU convolutions (RESULTS.md)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    gen = torch.Generator().manual_seed(seed)
    images, labels, weight = images.to(device), labels.to(device), weight.to(device)
    n, warmup = images.shape[0], max(1, min(100, steps // 10))
    losses: list[float] = []
    t0 = time.perf_counter()
    net.train()
    bar = Progress(range(steps), desc="segmenter", disable=not progress)
    for step in bar:
        idx = torch.randint(0, n, (batch_size,), generator=gen)         # (b,)
        flip = (torch.rand(batch_size, generator=gen) < 0.5).to(device)  # (b,)
        idx = idx.to(device)
        x = images[idx].float().div_(127.5).sub_(1.0)                   # (b, 3, H, W) in [-1, 1]
        y = labels[idx].long()                                          # (b, H, W)
        x = torch.where(flip[:, None, None, None], x.flip(-1), x)       # horizontal flips, vectorised
        y = torch.where(flip[:, None, None], y.flip(-1), y)
        for g in opt.param_groups:
            g["lr"] = _lr_at(step, steps, lr, warmup)
        loss = F.cross_entropy(net(x.contiguous(memory_format=torch.channels_last)), y, weight=weight)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
        if step % 25 == 0:
            bar.set_postfix(loss=f"{losses[-1]:.3f}")
    net.eval()
    net.meta = {"steps": int(steps), "batch_size": int(batch_size), "lr": float(lr), "seed": int(seed),
                "data": {"dataset": "synthscenes", "split": "train", "length": int(n), "seed": int(data_seed),
                         "size": list(hw), "augmentation": "random horizontal flips"},
                "class_weights": class_weights, "class_weight_values": [round(float(w), 4) for w in weight],
                "train_seconds": round(time.perf_counter() - t0, 1), "final_loss": float(np.mean(losses[-50:]))}
    return net, losses


# ---------------------------------------------------------------------------------------------
# The command


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
