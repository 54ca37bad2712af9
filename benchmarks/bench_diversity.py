"""Diversity (paper Sec. 4.3) with cached features vs one LPIPS call per pair.

K samples of one mask: the cached route runs the backbone K times and gets all K (K - 1) / 2
distances from one Gram matrix per layer; the pairwise route calls the metric on every
unordered pair (2 backbone passes each, K (K - 1) in all, batched `pairs_per_call` at a time).
Both must give the same matrix. Results go to benchmarks/results/diversity_<device>.json.

    python -m benchmarks.bench_diversity                   # K = 40, 128 px (+ 256 px if < 1 min)
    python -m benchmarks.bench_diversity --sizes 64 --k 8  # smoke run
"""
from __future__ import annotations

import argparse
import os
import platform
import time
import warnings
from pathlib import Path

import torch

from smis.metrics import LPIPS, pairwise_by_calls
from smis.utils import atomic_write_json, pick_device

RESULTS = Path(__file__).resolve().parent / "results"


def _metrics(device: torch.device) -> list[LPIPS]:
    """lpips_effnet (the offline metric) and the lpips package's AlexNet LPIPS (random trunk:
    the cost of the paper's lpips_alex, whose trunk weights are not needed to time it)."""
    import lpips

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        alex = lpips.LPIPS(net="alex", version="0.1", pretrained=True, pnet_rand=True, verbose=False)
    return [LPIPS("effnet", device=device), LPIPS(alex, device=device)]


def _timed(fn):
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    t = time.perf_counter()
    out = fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return out, time.perf_counter() - t


def bench_one(metric: LPIPS, samples: torch.Tensor, batch_size: int, pairs_per_call: int) -> dict:
    k = samples.shape[0]
    cached, t_cached = _timed(lambda: metric.pairwise(metric.features(samples, batch_size)).cpu())
    calls, t_calls = _timed(lambda: pairwise_by_calls(samples, metric, pairs_per_call))
    diff = float((cached - calls).abs().max())
    assert diff < 1e-5, f"{metric.name}: cached and pairwise results differ by {diff:.3g}"
    i, j = torch.triu_indices(k, k, offset=1)
    return {
        "metric": metric.name,
        "size": samples.shape[-1],
        "seconds_cached": round(t_cached, 3),
        "seconds_pairwise_calls": round(t_calls, 3),
        "speedup": round(t_calls / t_cached, 1),
        "max_abs_difference": diff,
        "diversity": float(cached[i, j].mean()),
        "backbone_passes_cached": k,
        "backbone_passes_pairwise_calls": k * (k - 1),
    }


def main(k: int = 40,                        # samples per mask (paper: 40)
         sizes: tuple[int, ...] = (128, 256),
         max_extra_seconds: float = 60.0,    # run a size after the first only if estimated under this
         batch_size: int = 8,                # images per backbone pass, cached route
         pairs_per_call: int = 20,           # pairs per metric call, pairwise route
         seed: int = 0,
         device: str | None = None,
         out: str | None = None) -> dict:
    dev = pick_device(device)
    torch.manual_seed(seed)
    metrics = _metrics(dev)
    gen = torch.Generator().manual_seed(seed)
    rows, skipped = [], []
    for n, size in enumerate(sizes):
        for metric in metrics:
            if n > 0:
                prev = [r for r in rows if r["metric"] == metric.name]
                estimate = sum(r["seconds_cached"] + r["seconds_pairwise_calls"] for r in prev[-1:]) \
                    * (size / prev[-1]["size"]) ** 2 if prev else 0.0
                if estimate > max_extra_seconds:
                    skipped.append({"metric": metric.name, "size": size, "estimated_seconds": round(estimate, 1),
                                    "reason": f"estimated over {max_extra_seconds:.0f} s"})
                    print(f"skip {metric.name} {size}px: estimated {estimate:.0f} s")
                    continue
            samples = (torch.rand(k, 3, size, size, generator=gen) * 2 - 1).to(dev)   # (K, 3, H, W)
            row = bench_one(metric, samples, batch_size, pairs_per_call)
            rows.append(row)
            print(f"{row['metric']:>22} {size:4d}px K={k}: cached {row['seconds_cached']:.2f} s, "
                  f"pairwise calls {row['seconds_pairwise_calls']:.2f} s, x{row['speedup']}, "
                  f"max |diff| {row['max_abs_difference']:.1e}")
    report = {
        "device": str(dev),
        "device_name": (torch.cuda.get_device_name(dev) if dev.type == "cuda"
                        else platform.processor() or platform.machine()),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch_version": torch.__version__,
        "load_average_1min_at_end": round(os.getloadavg()[0], 2),   # the CPU may be shared
        "config": {"k": k, "sizes": list(sizes), "batch_size": batch_size, "pairs_per_call": pairs_per_call,
                   "seed": seed, "max_extra_seconds": max_extra_seconds,
                   "pairs": "all K(K-1)/2 unordered pairs", "images": "uniform noise in [-1, 1]"},
        "results": rows,
        "skipped": skipped,
    }
    path = Path(out) if out else RESULTS / f"diversity_{dev.type}.json"
    atomic_write_json(report, path)
    print(f"wrote {path}")
    return report


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--k", type=int, default=40)
    p.add_argument("--sizes", type=int, nargs="+", default=[128, 256])
    p.add_argument("--max-extra-seconds", type=float, default=60.0)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--pairs-per-call", type=int, default=20)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default=None)
    p.add_argument("--out", default=None)
    a = p.parse_args()
    main(a.k, tuple(a.sizes), a.max_extra_seconds, a.batch_size, a.pairs_per_call, a.seed, a.device, a.out)
