"""How much the resize in front of the FID network moves the Fréchet distance (clean-fid's finding, Parmar et al.
2022: the filter that brings images to the network's input size changes FID, most when it downsamples without
antialiasing and when the reference statistics and the generated images are resized differently).

Two disjoint sets of real SynthScenes images (train and test split, the same renderer: the FD a perfect generator
would get) at a source size, resized to the network's input by each filter, FD between them:

- same filter for both sets ("matched"): the floor of the FD moves with the filter;
- reference statistics with one filter (bilinear + antialias, smis's) and the other set with another
  ("mismatched"): what a paper gets when its reference statistics were computed by another tool.

The network is pytorch-fid's FID Inception (299) where its weights are cached, otherwise the EfficientNet-Lite0
stand-in (224; reported as fd_effnet, never as FID). Source size 64 and 128 are upsampled to the input (the
paper's 256 to 299 is an upsampling too); 512 is downsampled, where aliasing appears.

    python benchmarks/bench_fid_resize.py                       # 300 images per set, sizes 64 128 512
    python benchmarks/bench_fid_resize.py --n 100 --sizes 64    # quick
Writes benchmarks/results/fid_resize_<device>.json.
"""
from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F
from torch import nn

from common import machine_info, pick_device, write_json
from smis.backbones import hub_checkpoint
from smis.metrics import FID_INCEPTION_FILE, EffNetPool, InceptionPool, frechet_distance
from smis.data.synthetic import synthscenes_arrays

FILTERS = {                      # name -> F.interpolate arguments
    "bilinear+antialias (smis fd_effnet)": dict(mode="bilinear", align_corners=False, antialias=True),
    "bilinear (pytorch-fid)": dict(mode="bilinear", align_corners=False),
    "bicubic+antialias (PIL-like, clean-fid)": dict(mode="bicubic", align_corners=False, antialias=True),
    "nearest": dict(mode="nearest"),
}
REFERENCE = "bilinear+antialias (smis fd_effnet)"


class Features(nn.Module):
    """The FD network with its own resize replaced by `filter` (images already at its input size skip it)."""

    def __init__(self, device):
        super().__init__()
        inception = hub_checkpoint(FID_INCEPTION_FILE) is not None
        self.net = (InceptionPool() if inception else EffNetPool()).to(device).eval()
        self.size, self.name = (299 if inception else 224), ("fid" if inception else "fd_effnet (stand-in, not FID)")
        if inception:
            self.net.net.resize_input = False                           # we resize here

    @torch.no_grad()
    def forward(self, x: torch.Tensor, filter: dict) -> torch.Tensor:
        x = F.interpolate(x, size=(self.size, self.size), **filter).clamp(-1, 1)
        if isinstance(self.net, EffNetPool):
            return self.net.net.pooled(x)
        return self.net(x)


def stats(feats: torch.Tensor):
    f = feats.double().cpu().numpy()
    import numpy as np
    return f.mean(0), np.cov(f, rowvar=False)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=300, help="images per set")
    p.add_argument("--sizes", type=int, nargs="+", default=[64, 128, 512], help="source image sizes")
    p.add_argument("--batch", type=int, default=25)
    p.add_argument("--device", default="auto")
    a = p.parse_args(argv)
    device = pick_device(a.device)
    net = Features(device)
    rows = []
    for size in a.sizes:
        t0 = time.perf_counter()
        sets = [synthscenes_arrays(split, size, a.n, seed=0, progress=False)[0] for split in ("train", "test")]
        feats = {}
        for fname, filt in FILTERS.items():
            for i, imgs in enumerate(sets):
                out = [net(chunk.to(device).float() / 127.5 - 1, filt) for chunk in imgs.split(a.batch)]
                feats[(fname, i)] = stats(torch.cat(out))
        for fname in FILTERS:
            matched = frechet_distance(*feats[(fname, 0)], *feats[(fname, 1)])
            mismatched = frechet_distance(*feats[(REFERENCE, 0)], *feats[(fname, 1)])
            rows.append({"source_size": size, "filter": fname, "fd_matched": round(matched, 3),
                         "fd_reference_bilinear_aa_vs_this": round(mismatched, 3)})
            print(f"{size:4d} -> {net.size}  {fname:42s} matched {matched:8.3f}   reference statistics with "
                  f"bilinear+antialias, this set with this filter {mismatched:8.3f}")
        print(f"  ({time.perf_counter() - t0:.0f} s)")
    write_json({"benchmark": "fid_resize", "network": net.name, "input_size": net.size, "n_per_set": a.n,
                "sets": "SynthScenes train vs test split, seed 0 (two real sets)", "reference_filter": REFERENCE,
                "machine": machine_info(device), "results": rows}, f"fid_resize_{device.type}.json")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
