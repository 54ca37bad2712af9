"""Helpers shared by the benchmarks.

Machine description, device sync, Voronoi masks (ADE20K-like, ~17 classes), timing (per step; best of
a few; a reference run once), the argument set of the vectorised-vs-loop benchmarks, where results
go (`$OUT` when set, as on the GPU machine, else `benchmarks/results/`), CUDA-synchronised step
timing, peak memory, a realistic fixed batch (ADE20K-like Voronoi masks with ~17 classes, or real
SynthScenes renders), a VGG19-shaped perceptual loss with random weights when the ImageNet file is
absent (same cost), and a `smis.train.TrainStep` on exactly what training builds (`smis.build.build`, no
data set) for any preset with the speed options as arguments.
"""
from __future__ import annotations

import argparse
import atexit
import datetime
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(BENCH.parent))

from torchvision.models.vgg import cfgs, make_layers  # noqa: E402

from smis.backbones import VGG19_FILE, EffNetFeatures, VGG19Features, hub_checkpoint  # noqa: E402
from smis.build import build  # noqa: E402
from smis.data import make_dataset  # noqa: E402
from smis.losses import PerceptualLoss  # noqa: E402
from smis.options import TrainConfig  # noqa: E402
from smis.train import TrainStep, configure_backends, schedule  # noqa: E402
from smis.utils import atomic_write_json, atomic_write_text, cpu_model, pick_device  # noqa: E402

__all__ = ["machine", "machine_info", "sync", "voronoi_masks", "results_path", "write_json", "write_text",
           "time_steps", "best_time", "time_once", "reference_args", "reset_peak", "peak_gib", "fixed_batch",
           "perceptual_loss", "make_train_step", "pick_device", "summary"]


def voronoi_masks(B: int, size: int, classes_per_mask: int = 17, generator: torch.Generator | None = None,
                  num_classes: int = 151) -> torch.Tensor:
    """(B, size, size) ids: `classes_per_mask` Voronoi cells (with weights, so sizes vary a lot), ids
    drawn from `num_classes` (ADE20K's 151 by default)."""
    ys, xs = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    pix = torch.stack([ys, xs], -1).reshape(-1, 1, 2).float()                       # (P, 1, 2)
    out = []
    for _ in range(B):
        seeds = torch.rand(classes_per_mask, 2, generator=generator) * size        # (K, 2)
        weight = torch.rand(classes_per_mask, generator=generator) * 3 + 0.2      # power-diagram weights
        cell = ((pix - seeds) ** 2).sum(-1).div(weight ** 2).argmin(-1)           # (P,)
        ids = torch.randperm(num_classes, generator=generator)[:classes_per_mask]
        out.append(ids[cell].view(size, size))
    return torch.stack(out)


def reference_args(description: str, name: str, reps_help: str, argv=None) -> argparse.Namespace:
    """--batch, --device, --reps, --out of the vectorised-vs-loop benchmarks (`name`: the JSON's stem)."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--batch", type=int, nargs="+", default=[4, 16])
    p.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    p.add_argument("--reps", type=int, default=5,
                   help=f"timed repetitions of {reps_help} (best kept; the loop runs once)")
    p.add_argument("--out", help=f"JSON path (default benchmarks/results/{name}_<device>.json)")
    a = p.parse_args(argv)
    a.device = pick_device(a.device)
    a.out = a.out or str(BENCH / "results" / f"{name}_{a.device.type}.json")
    return a


def machine(device) -> dict:
    cpu = cpu_model()
    return {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU: {cpu}",
            "cpus_usable": len(os.sched_getaffinity(0)), "torch_threads": torch.get_num_threads(),
            "load_avg_1min": os.getloadavg()[0], "torch": torch.__version__, "python": platform.python_version()}


# -- where results go and what they record ----------------------------------------------------------

def results_path(name: str) -> Path:
    """`$OUT/name` when OUT is set (the GPU machine collects it), else benchmarks/results/name."""
    out = os.environ.get("OUT")
    return (Path(out) if out else BENCH / "results") / name


def write_json(result: dict, name: str) -> Path:
    path = results_path(name)
    atomic_write_json(result, path)
    print(f"wrote {path}")
    return path


def write_text(text: str, name: str) -> Path:
    path = results_path(name)
    atomic_write_text(text, path)
    print(f"wrote {path}")
    return path


def machine_info(device: torch.device) -> dict:
    """`machine` plus the date, the 1/5/15-min load, CUDA details and other smis trainings running."""
    info = machine(device)
    info["date_utc"] = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M")
    info["load_avg_1_5_15"] = [round(x, 2) for x in os.getloadavg()]
    info["other_smis_trainings"] = _other_trainings()
    if device.type == "cuda":
        prop = torch.cuda.get_device_properties(device)
        info.update(cuda=torch.version.cuda, cudnn=torch.backends.cudnn.version(),
                    gpu_memory_gib=round(prop.total_memory / 2**30, 1), sm_count=prop.multi_processor_count)
    return info


def _other_trainings() -> int:
    """How many `smis.train --variant` processes run beside this one (they make CPU timings meaningless)."""
    n = 0
    for p in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            cmd = p.read_bytes().replace(b"\0", b" ")
        except OSError:
            continue
        n += b"smis.train --variant" in cmd and p.parent.name != str(os.getpid())
    return n


# -- timing -----------------------------------------------------------------------------------------

def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_steps(fn, device: torch.device, warmup: int, steps: int) -> list[float]:
    """Wall seconds of each of `steps` calls of fn after `warmup` untimed ones; the device is
    synchronised around every timed call."""
    for _ in range(warmup):
        fn()
    sync(device)
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    return times


def best_time(fn, device: torch.device, reps: int) -> float:
    """Best wall time of `reps` calls of fn, after one untimed warm-up call."""
    return min(time_steps(fn, device, 1, reps))


def time_once(fn, device: torch.device):
    """(fn(), wall seconds of that one call, device synchronised): for slow reference versions."""
    t0 = time.perf_counter()
    out = fn()
    sync(device)
    return out, time.perf_counter() - t0


def summary(times: list[float]) -> dict:
    return {"median_s": statistics.median(times), "min_s": min(times), "max_s": max(times), "n": len(times)}


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def peak_gib(device: torch.device) -> float | None:
    """torch.cuda.max_memory_allocated in GiB (None on the CPU)."""
    return round(torch.cuda.max_memory_allocated(device) / 2**30, 3) if device.type == "cuda" else None


# -- inputs -----------------------------------------------------------------------------------------

def fixed_batch(preset, batch: int, device: torch.device, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, str]:
    """(image (B, 3, H, W) in [-1, 1], label (B, H, W), description) for `preset`.

    SynthScenes: real renders of the data set. Otherwise: Voronoi label maps with ~17 classes per
    mask (as real ADE20K masks; ids drawn from the preset's classes) and images painted with one
    colour per region plus noise. The cost of a step does not depend on pixel values.
    """
    H, W = preset.image_size
    if preset.name == "synthscenes":
        ds = make_dataset("synthscenes", None, "train", size=preset.image_size, length=batch, seed=seed)
        items = [ds[i] for i in range(batch)]
        image = torch.stack([it["image"] for it in items])
        label = torch.stack([it["label"] for it in items]).long()
        what = "SynthScenes renders"
    else:
        g = torch.Generator().manual_seed(seed)
        k = min(17, preset.num_classes)
        label = voronoi_masks(batch, max(H, W), classes_per_mask=k, generator=g)[:, :H, :W] % preset.num_classes
        colours = torch.rand(batch, preset.num_classes, 3, generator=g) * 2 - 1
        image = colours.gather(1, label.reshape(batch, -1, 1).expand(-1, -1, 3)).reshape(batch, H, W, 3)
        image = (image.permute(0, 3, 1, 2) + 0.1 * torch.randn(batch, 3, H, W, generator=g)).clamp(-1, 1)
        what = f"Voronoi masks, {k} classes each, region colours + noise"
    return image.contiguous().to(device), label.to(device), what


def perceptual_loss(kind: str, device: torch.device) -> PerceptualLoss:
    """The perceptual loss network, described by its `.backbone`. kind: "vgg19" (ImageNet weights if
    cached, else the same VGG19 shape with random weights: same cost), "effnet" (EfficientNet-Lite0, the
    CPU fallback)."""
    if kind == "effnet":
        loss, loss.backbone = PerceptualLoss(EffNetFeatures()), "efficientnet_lite0 (ImageNet weights)"
    elif kind == "vgg19":
        path = hub_checkpoint(VGG19_FILE)
        if path is not None:
            loss, loss.backbone = PerceptualLoss(VGG19Features(path)), "vgg19 (ImageNet weights)"
        else:
            loss = PerceptualLoss(VGG19Features(_random_vgg19_file()))
            loss.backbone = "vgg19 shape, random weights (ImageNet file absent; same cost)"
    else:
        raise ValueError(f"perceptual kind {kind!r}; choose vgg19, effnet (or none: no perceptual loss)")
    return loss.to(device)


_VGG_FILE: list[Path] = []


def _random_vgg19_file() -> Path:
    """A file with VGG19's conv trunk (torchvision layout `features.*`) at random init, made once per process."""
    if not _VGG_FILE:
        tmp = tempfile.mkdtemp(prefix="smis_vgg_")
        atexit.register(shutil.rmtree, tmp, True)
        path = Path(tmp) / "vgg19_features_random.pth"
        torch.save({f"features.{k}": v for k, v in make_layers(cfgs["E"]).state_dict().items()}, path)
        _VGG_FILE.append(path)
    return _VGG_FILE[0]


def make_train_step(preset: str, batch: int, device: torch.device, *, variant: str = "clvae",
                    overrides: dict | None = None, perceptual: str = "vgg19", precision: str = "fp32",
                    channels_last: bool = False, fused_adam: bool = False, compile: bool = False,
                    keep_freed_memory: bool = True, perceptual_cache_mb: float = 1024):
    """(`smis.train.TrainStep`, description of its perceptual network): one training iteration on exactly
    the parts training builds (`smis.build.build`) for `preset` at `batch` with the given speed options.
    No data set: the benchmark feeds its own fixed batch (`fixed_batch`). `perceptual` picks the network
    (see `perceptual_loss`: VGG19's shape with random weights when its ImageNet file is absent). On a fixed batch
    the perceptual cache (`perceptual_cache_mb`, on by default on the CPU as in training) hits from the second
    step on: every real image seen before; `perceptual_cache_mb=0` times the pass on new images."""
    cfg = TrainConfig(variant=variant, preset=preset, preset_overrides=dict(overrides or {}), batch_size=batch,
                      perceptual={"none": "none", "effnet": "effnet"}.get(perceptual, "auto"), device=str(device),
                      precision=precision, channels_last=channels_last, fused_adam=fused_adam, compile=compile,
                      keep_freed_memory=keep_freed_memory, perceptual_cache_mb=perceptual_cache_mb,
                      tensorboard=False, progress=False, steps=10**6)
    configure_backends(device, cfg)                 # as Trainer does (cuDNN autotuning, the CPU allocator)
    parts = build(cfg, device, perceptual=lambda: perceptual_loss(perceptual, device))
    parts.nets.train()
    total, decay = schedule(cfg, parts.preset, batch, batch)
    what = parts.perceptual_name if perceptual != "none" else "none"
    return TrainStep(cfg, parts, total, decay, global_batch=batch), what
