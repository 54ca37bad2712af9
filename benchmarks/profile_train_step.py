"""Where a training step's time goes (torch.profiler) and what it costs in FLOPs (FlopCounterMode).

Profile: `smis.train.TrainStep` on a fixed batch after warm-up, with a profiler range per
network forward (G+E as `GeneratorStep`, E, G, D, perceptual) so that the table of top operators
(self time) comes with a per-network split; backward operators appear as `autograd::...` rows.
Also counted: host-device synchronisations (`aten::_local_scalar_dense`, i.e. `.item()` / `float()`
/ `int()` of a tensor), which stall a GPU's launch queue.

Memory (`--memory`, any device): the peak of the bytes held by tensors the step allocates (activations,
gradients, temporaries; tracked per storage by a dispatch mode) plus the persistent parameters,
buffers and Adam states, at several batch sizes, with a linear fit to predict larger batches. On a
CPU it stands in for torch.cuda.max_memory_allocated (which also counts cuDNN workspaces and the
caching allocator's rounding, so expect the GPU figure a little higher).

FLOPs (`--flops`): one training step (G+E step + D step) and one G-only prior sample at batch 1,
counted by torch.utils.flop_counter.FlopCounterMode per network, and the images/s that the
H100 / H200 dense bf16 peak would allow (an upper bound).

    python benchmarks/profile_train_step.py --preset synthscenes --batch 8 --perceptual effnet --device cpu --threads 1
    python benchmarks/profile_train_step.py --preset ade20k --batch 4 --device cuda --precision bf16
    python benchmarks/profile_train_step.py --flops --preset ade20k --device cpu     # cost model, ~1 min
    python benchmarks/profile_train_step.py --memory 2 4 --preset ade20k --device cpu --precision fp32  # ~1 min
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import weakref
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile, record_function
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import fixed_batch, machine_info, make_train_step, pick_device, sync, write_json, write_text  # noqa: E402
from smis import editing  # noqa: E402

PEAK_BF16_TFLOPS = {"H100 SXM": 989.0, "H200": 989.0, "H100 PCIe": 756.0}   # dense, vendor data sheets
ANCHOR_TFLOP = {"g_step": 1.26, "d_step": 0.46, "inference_E_G": 0.36}     # authors' code, per image
SYNC_OPS = ("aten::_local_scalar_dense", "cudaStreamSynchronize", "cudaDeviceSynchronize", "cudaMemcpyAsync")


def label_forwards(train_step) -> list:
    """Profiler ranges around each network's forward; returns the hook handles."""
    handles = []
    parts = train_step.parts
    mods = {"GeneratorStep (G+E fwd)": parts.gstep, "E fwd": parts.nets.E, "G fwd": parts.nets.G,
            "D fwd": parts.nets.D, "perceptual fwd": parts.perceptual}
    for name, m in mods.items():
        if m is None:
            continue
        state = []
        def pre(mod, args, name=name, state=state):
            r = record_function(name)
            r.__enter__()
            state.append(r)
        def post(mod, args, out, state=state):
            state.pop().__exit__(None, None, None)
        handles += [m.register_forward_pre_hook(pre), m.register_forward_hook(post)]
    return handles


def run_profile(a, device) -> dict:
    train_step, perceptual = make_train_step(a.preset, a.batch, device, overrides=a.overrides, perceptual=a.perceptual,
                                       precision=a.precision, channels_last=a.channels_last,
                                       fused_adam=device.type == "cuda")
    image, label, masks = fixed_batch(train_step.parts.preset, a.batch, device)
    for _ in range(a.warmup):
        train_step(image, label)
    sync(device)
    handles = label_forwards(train_step)
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=acts, record_shapes=False) as prof:
        for _ in range(a.steps):
            train_step(image, label)
        sync(device)
    for h in handles:
        h.remove()
    ka = prof.key_averages()
    key = "self_device_time_total" if device.type == "cuda" else "self_cpu_time_total"
    table = ka.table(sort_by=key, row_limit=a.rows, max_name_column_width=60)
    regions = {e.key: {"cpu_total_ms_per_step": round(e.cpu_time_total / 1000 / a.steps, 2),
                       "device_total_ms_per_step": round(getattr(e, "device_time_total", 0) / 1000 / a.steps, 2)}
               for e in ka if e.key in ("GeneratorStep (G+E fwd)", "E fwd", "G fwd", "D fwd", "perceptual fwd")}
    total_self = sum(getattr(e, key) for e in ka)
    backward = sum(getattr(e, key) for e in ka if e.key.startswith("aten::") and "backward" in e.key)
    top = sorted(ka, key=lambda e: getattr(e, key), reverse=True)[:a.rows]
    syncs = {e.key: e.count / a.steps for e in ka if e.key in SYNC_OPS}
    head = (f"profile of {a.steps} train_step(s), {a.preset} preset {a.overrides or ''}, batch {a.batch}, "
            f"{a.precision}{', channels_last' if a.channels_last else ''}, perceptual {perceptual}, masks: {masks}\n"
            f"device {machine_info(device)['device']}, torch {torch.__version__}, threads {torch.get_num_threads()}, "
            f"load {[round(x, 2) for x in os.getloadavg()]}\n"
            f"host-device synchronisations per step: {syncs}\n"
            f"forward ranges per step (inclusive, ms): {json.dumps(regions)}\n"
            f"sorted by {key}\n\n")
    suffix = f"{a.preset}_{device.type}" + (f"_{a.precision}" if a.precision != "fp32" else "")
    write_text(head + table, f"profile_train_step_{suffix}.txt")
    return {"kind": "profile", "preset": a.preset, "overrides": a.overrides, "batch": a.batch, "steps": a.steps,
            "precision": a.precision, "perceptual": perceptual, "threads": torch.get_num_threads(),
            "sorted_by": key, "syncs_per_step": syncs, "forward_regions": regions,
            "self_total_ms_per_step": round(total_self / 1000 / a.steps, 2),
            "aten_backward_kernels_self_share": round(backward / max(total_self, 1), 3),   # *_backward ops only
            "top_ops": [{"op": e.key, "self_ms_per_step": round(getattr(e, key) / 1000 / a.steps, 3),
                         "share": round(getattr(e, key) / max(total_self, 1), 4), "calls_per_step": e.count / a.steps}
                        for e in top],
            "machine": machine_info(device)}


def count_flops(a, device) -> dict:
    """FLOPs of one training step and one G-only sample at batch 1, per network."""
    train_step, perceptual = make_train_step(a.preset, 1, device, overrides=a.overrides, perceptual=a.perceptual)
    image, label, masks = fixed_batch(train_step.parts.preset, 1, device)
    train_step(image, label)                                     # warm (lazy init, no counting)
    with FlopCounterMode(display=False, depth=2) as fc:
        train_step(image, label)
    total = fc.get_total_flops()
    by_module = {k: sum(v.values()) for k, v in fc.get_flop_counts().items() if k.count(".") <= 1}
    train_step.parts.nets.eval()
    with FlopCounterMode(display=False, depth=4) as fc2:
        editing.sample_images(train_step.parts.nets, label, 1)
    g_parts = {"SPADE mlp_shared (conditioning map -> hidden)": 0, "SPADE mlp_gamma + mlp_beta": 0,
               "block convs conv_0 / conv_1 / conv_s": 0}
    for k, v in fc2.get_flop_counts().items():
        if k.count(".") != 3 and not (k.count(".") == 2 and k.split(".")[-1].startswith("conv_")):
            continue
        last = k.split(".")[-1]
        if last == "mlp_shared":
            g_parts["SPADE mlp_shared (conditioning map -> hidden)"] += sum(v.values())
        elif last in ("mlp_gamma", "mlp_beta"):
            g_parts["SPADE mlp_gamma + mlp_beta"] += sum(v.values())
        elif last.startswith("conv_") and k.count(".") == 2:
            g_parts["block convs conv_0 / conv_1 / conv_s"] += sum(v.values())
    g_blocks = {k.split(".")[-1]: sum(v.values()) for k, v in fc2.get_flop_counts().items() if k.count(".") == 1}
    with FlopCounterMode(display=False) as fc3:
        editing.encode(train_step.parts.nets, image, label)
    parts = {"train_step_total": total, "inference_G_prior_sample": fc2.get_total_flops(),
             "encoder_forward": fc3.get_total_flops()}
    tflop = {k: round(v / 1e12, 4) for k, v in parts.items()}
    bound = {gpu: round(peak / tflop["train_step_total"], 1) for gpu, peak in PEAK_BF16_TFLOPS.items()}
    return {"kind": "flops", "preset": a.preset, "overrides": a.overrides, "perceptual": perceptual, "masks": masks,
            "tflop_per_image": tflop,
            "tflop_by_module_train_step": {k: round(v / 1e12, 4) for k, v in by_module.items()},
            "gflop_G_forward_by_block": {k: round(v / 1e9, 2) for k, v in g_blocks.items()},
            "gflop_G_forward_by_part": {k: round(v / 1e9, 2) for k, v in g_parts.items()},
            "peak_bf16_tflops_dense": PEAK_BF16_TFLOPS, "images_per_s_upper_bound_at_peak": bound,
            "images_per_s_at_40pct_of_peak": {g: round(0.4 * v, 1) for g, v in bound.items()},
            "anchor_authors_tflop_per_image": ANCHOR_TFLOP, "machine": machine_info(device)}


class LivePeak(TorchDispatchMode):
    """Peak bytes of storages created inside the mode and still alive; `known` storages are skipped."""

    def __init__(self, known: set[int]):
        super().__init__()
        self.known, self.live, self.refs, self.cur, self.peak = known, {}, {}, 0, 0

    def _free(self, key):
        self.cur -= self.live.pop(key, 0)
        self.refs.pop(key, None)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor) and t.device.type != "meta":
                st = t.untyped_storage()
                key = id(st)
                if key in self.live or st.data_ptr() in self.known:
                    continue
                self.live[key] = st.nbytes()
                self.cur += st.nbytes()
                self.peak = max(self.peak, self.cur)
                self.refs[key] = weakref.ref(st, lambda _, key=key: self._free(key))
        return out


def measure_memory(a, device) -> dict:
    """Peak step memory at each batch of a.memory, persistent memory, and a linear fit in the batch."""
    rows = []
    for B in a.memory:
        train_step, perceptual = make_train_step(a.preset, B, device, overrides=a.overrides, perceptual=a.perceptual,
                                           precision=a.precision, channels_last=a.channels_last)
        image, label, _ = fixed_batch(train_step.parts.preset, B, device)
        train_step(image, label)                                 # optimiser states exist from here on
        train_step.parts.opt_g.zero_grad(set_to_none=True), train_step.parts.opt_d.zero_grad(set_to_none=True)
        mods = [m for m in (train_step.parts.nets, train_step.parts.perceptual) if m is not None]
        persistent = [t for m in mods for t in (*m.parameters(), *m.buffers())]
        persistent += [v for o in (train_step.parts.opt_g, train_step.parts.opt_d) for st in o.state.values()
                       for v in st.values()
                       if torch.is_tensor(v)]
        known = {t.untyped_storage().data_ptr() for t in persistent}
        nbytes = sum({t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in persistent}.values())
        mode = LivePeak(known)
        with mode:
            train_step(image, label)
        rows.append({"batch": B, "step_peak_gib": round(mode.peak / 2**30, 3),
                     "persistent_gib": round(nbytes / 2**30, 3),
                     "total_gib": round((mode.peak + nbytes) / 2**30, 3)})
        print(json.dumps(rows[-1]), flush=True)
        del train_step, mode
    fit = {}
    if len(rows) >= 2:
        (b0, m0), (b1, m1) = [(r["batch"], r["total_gib"]) for r in rows[-2:]]
        slope = (m1 - m0) / (b1 - b0)
        fit = {"gib_per_image": round(slope, 3),
               "predicted_total_gib": {str(b): round(m1 + slope * (b - b1), 2) for b in (4, 16, 32)}}
    return {"kind": "memory", "preset": a.preset, "overrides": a.overrides, "precision": a.precision,
            "channels_last": a.channels_last, "perceptual": perceptual, "results": rows, "linear_fit_last_two": fit,
            "note": "live tensor bytes on this device; torch.cuda.max_memory_allocated adds cuDNN workspaces and "
                    "allocator rounding. CPU autocast (bf16) casts a different op list than CUDA autocast.",
            "machine": machine_info(device)}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="synthscenes")
    p.add_argument("--set", nargs="*", default=[], metavar="FIELD=JSON", help="preset overrides (smoke runs)")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--perceptual", default=None, choices=["vgg19", "effnet", "none"],
                   help="default: effnet for synthscenes (what CPU training uses), else vgg19")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--rows", type=int, default=30)
    p.add_argument("--flops", action="store_true", help="count FLOPs instead of profiling")
    p.add_argument("--memory", type=int, nargs="*",
                   help="measure peak memory at these batch sizes instead of profiling")
    a = p.parse_args(argv)
    a.overrides = {k: json.loads(v) for k, _, v in (s.partition("=") for s in a.set)}
    a.perceptual = a.perceptual or ("effnet" if a.preset == "synthscenes" else "vgg19")
    if a.threads:
        torch.set_num_threads(a.threads)
    device = pick_device(a.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    if a.memory:
        res = measure_memory(a, device)
        print(json.dumps(res["linear_fit_last_two"]))
        write_json(res, f"profile_memory_{a.preset}_{device.type}_{a.precision}{'_custom' if a.overrides else ''}.json")
        return res
    if a.flops:
        res = count_flops(a, device)
        print(json.dumps({k: res[k] for k in ("tflop_per_image", "images_per_s_upper_bound_at_peak")}, indent=1))
        write_json(res, f"profile_flops_{a.preset}{'_custom' if a.overrides else ''}.json")
        return res
    res = run_profile(a, device)
    print(f"per step: syncs {res['syncs_per_step']}, forward regions {res['forward_regions']}")
    for r in res["top_ops"][:15]:
        print(f"{r['share']:6.1%} {r['self_ms_per_step']:9.2f} ms  x{r['calls_per_step']:<6g} {r['op']}")
    suffix = f"{a.preset}_{device.type}" + (f"_{a.precision}" if a.precision != "fp32" else "")
    write_json(res, f"profile_train_step_{suffix}.json")
    return res


if __name__ == "__main__":
    main()
