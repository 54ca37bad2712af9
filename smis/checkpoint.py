"""Training checkpoints (save, list, load, resume from the newest intact one) and exported models.

    ckpt = Checkpointer(run_dir, keep_last=3)
    ckpt.save(step, state)                            # run_dir/checkpoints/step_00000200.pt, atomically
    path, state = ckpt.load_latest_intact()           # (None, None) for a run without checkpoints
    export_model(path, "model.pt"); nets = load_model("model.pt")   # G and E only, for inference

Checkpoints are plain dicts of tensors and plain data (format CKPT_FORMAT), written atomically and
read with weights_only=True, so a file cannot run code; `rng_state` / `set_rng_state` carry torch's,
CUDA's, numpy's and Python's RNG states through them for exact resume.
"""
from __future__ import annotations

import random
import sys
from pathlib import Path

import numpy as np
import torch

from smis.config import Preset
from smis.networks import VARIANTS, Networks, build_networks
from smis.official import CheckpointMismatch, check_state_dict
from smis.utils import CheckpointError, CorruptCheckpoint, atomic_torch_save, pick_device, plain_data, safe_load

CKPT_FORMAT = "smis-train-v2"                        # v2: plain data only (v1 held numpy's RNG state as an array)
CKPT_FORMATS = ("smis-train-v1", CKPT_FORMAT)        # what Checkpointer.load / load_model read
MODEL_FORMAT = "smis-model-v1"


# ---------------------------------------------------------------------------------------------
# RNG states (plain data + tensors: they load with weights_only=True)


def rng_state() -> dict:
    """torch's, CUDA's (None without CUDA), numpy's and Python's global RNG states."""
    key, state, pos, has_gauss, cached = np.random.get_state()
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
    return {"torch": torch.get_rng_state(), "cuda": cuda,
            "numpy": {"key": str(key), "state": torch.from_numpy(state.astype(np.int64)), "pos": int(pos),
                      "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
            "python": random.getstate()}


def set_rng_state(rng: dict) -> None:
    """Inverse of `rng_state`; numpy's state may also be numpy's own tuple (format smis-train-v1)."""
    torch.set_rng_state(rng["torch"].cpu())
    if rng["cuda"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in rng["cuda"]])
    st = rng["numpy"]
    if isinstance(st, dict):
        st = (st["key"], st["state"].numpy().astype(np.uint32), st["pos"], st["has_gauss"], st["cached_gaussian"])
    else:   # (key, uint32 array, ...); safe_load reads the array of a v1 file as smis.utils._LegacyUint32Array
        st = (st[0], np.asarray(st[1], dtype=np.uint32), *st[2:])
    np.random.set_state(tuple(st))
    random.setstate(tuple(tuple(x) if isinstance(x, list) else x for x in rng["python"]))


# ---------------------------------------------------------------------------------------------
# Training checkpoints


def check_format(ck, path: str | Path) -> dict:
    """`ck` if it is an smis training checkpoint, else a CheckpointError naming `path` and the fix."""
    if not isinstance(ck, dict) or ck.get("format") not in CKPT_FORMATS:
        fmt = ck.get("format") if isinstance(ck, dict) else type(ck).__name__
        raise CheckpointError(f"{path} is not an smis training checkpoint (format {fmt!r}, expected one of "
                              f"{CKPT_FORMATS}). Fix: pass a file from outputs/runs/*/checkpoints.")
    return ck


def list_checkpoints(run_dir: str | Path) -> list[tuple[int, Path]]:
    """[(step, path)] of run_dir/checkpoints/step_*.pt, sorted by step."""
    found = [(p.stem.partition("_")[2], p) for p in (Path(run_dir) / "checkpoints").glob("step_*.pt")]
    return sorted((int(step), p) for step, p in found if step.isdigit())


class Checkpointer:
    """The checkpoints of one run: run_dir/checkpoints/step_XXXXXXXX.pt, the newest `keep_last` kept."""

    def __init__(self,
                 run_dir: Path,                             # the run's folder
                 keep_last: int = 3,                        # checkpoints kept after each save
                 map_location: torch.device | str | None = None,   # where loaded tensors go
                 ):
        self.dir, self.keep_last, self.map_location = Path(run_dir) / "checkpoints", keep_last, map_location

    def list(self) -> list[Path]:
        """The run's checkpoints, oldest first."""
        return [path for _, path in list_checkpoints(self.dir.parent)]

    def latest(self) -> Path | None:
        ckpts = self.list()
        return ckpts[-1] if ckpts else None

    def save(self, step: int, state: dict) -> Path:
        """Write `state` (plain data + tensors) atomically as step `step`; delete all but the newest keep_last."""
        path = self.dir / f"step_{step:08d}.pt"
        atomic_torch_save(state, path)
        ckpts = self.list()
        for old in ckpts[: max(0, len(ckpts) - self.keep_last)]:
            old.unlink(missing_ok=True)
        return path

    def load(self, path: Path | str) -> dict:
        """The checkpoint at `path`, read with weights_only=True; CheckpointError if it is another kind of file."""
        return check_format(safe_load(path, map_location=self.map_location), path)

    def load_latest_intact(self) -> tuple[Path | None, dict | None]:
        """(path, contents) of the newest checkpoint that reads; a truncated or corrupt newer one is skipped
        with a message naming it and why. (None, None) when the run has no checkpoint. Unsafe files are
        never skipped (safe_load's CheckpointError propagates)."""
        skipped = []
        for path in reversed(self.list()):
            try:
                ck = safe_load(path, map_location=self.map_location)
            except CorruptCheckpoint as e:
                skipped.append(path.name)
                print(f"[smis.train] skipping {path}: {e}", file=sys.stderr, flush=True)
                continue
            ck = check_format(ck, path)
            if skipped:
                print(f"[smis.train] resumed from {path.name} (step {ck['step']}); skipped unreadable "
                      f"{', '.join(skipped)}", file=sys.stderr, flush=True)
            return path, ck
        if skipped:
            raise CheckpointError(f"{self.dir}: no checkpoint is readable ({', '.join(skipped)} are truncated or "
                                  "corrupt). Fix: delete them to start over, or use another --run-dir.")
        return None, None


# ---------------------------------------------------------------------------------------------
# Exported models (small files for inference: G and E only)


def export_model(checkpoint: str | Path,           # a training checkpoint (outputs/runs/*/checkpoints/step_*.pt)
                 out: str | Path,                  # the model file to write
                 half: bool = True,                # fp16 storage (loaded back as fp32)
                 extra: dict | None = None,        # plain data stored beside the weights (e.g. provenance)
                 ) -> Path:
    """Write G and E with everything needed to rebuild them. The file holds tensors and plain data only,
    so `load_model` reads it with weights_only=True."""
    ck = safe_load(checkpoint)
    if not isinstance(ck, dict) or ck.get("format") not in CKPT_FORMATS:
        raise CheckpointError(f"{checkpoint} is not an smis training checkpoint. Fix: pass a file from "
                              "outputs/runs/*/checkpoints.")
    cast = lambda sd: {k: (v.half() if half and v.is_floating_point() else v) for k, v in sd.items()}
    obj = {"format": MODEL_FORMAT, "variant": ck["variant"], "preset": plain_data(ck["preset"]), "step": ck["step"],
           "G": cast(ck["G"]), "E": None if ck["E"] is None else cast(ck["E"]),
           "train_config": plain_data(ck["config"]), "perceptual": ck.get("perceptual"), **plain_data(extra or {})}
    atomic_torch_save(obj, out)
    return Path(out)


def load_model(path: str | Path,                         # an exported model or a training checkpoint
               device: str | torch.device | None = "cpu",
               ) -> Networks:
    """Networks (G, E; no D) in eval mode, fp32. Read with weights_only=True (a file cannot run code);
    a corrupt file, another kind of file or weights that do not fit their recorded preset raise a
    CheckpointError naming the file and the fix."""
    ck = safe_load(path)
    if not isinstance(ck, dict) or ck.get("format") not in (MODEL_FORMAT, *CKPT_FORMATS):
        fmt = ck.get("format") if isinstance(ck, dict) else type(ck).__name__
        raise CheckpointError(f"{path} is not an smis model or checkpoint (format {fmt!r}). Fix: export one with "
                              "smis.checkpoint.export_model, pass a checkpoint from outputs/runs/*/checkpoints, or "
                              "load the authors' weights with smis.official.load_official.")
    if ck.get("variant") not in VARIANTS:
        raise CheckpointError(f"{path}: unknown variant {ck.get('variant')!r}; this smis knows {sorted(VARIANTS)}. "
                              "Fix: use the smis version that wrote the file.")
    try:
        preset = Preset.from_dict(ck["preset"])
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{path}: its preset does not fit this smis ({e}). Fix: use the smis version that wrote "
                              "the file, or re-export it.") from None
    nets = build_networks(ck["variant"], preset, discriminator=False)
    fp32 = lambda sd: {k: (v.float() if v.is_floating_point() else v) for k, v in sd.items()}
    for net, key in ((nets.G, "G"), (nets.E, "E")):
        if net is None:
            continue
        if not isinstance(ck.get(key), dict):
            raise CheckpointError(f"{path} has no {key} weights for variant {ck['variant']!r}. Fix: re-export it.")
        try:
            check_state_dict(net, ck[key], f"{path}: {key} of a {ck['variant']} {preset.name} model",
                             hint="Fix: the weights do not fit the preset recorded in the file; re-export the model "
                                  "from its training checkpoint with smis.checkpoint.export_model.")
        except CheckpointMismatch as e:
            raise CheckpointError(str(e)) from None
        net.load_state_dict(fp32(ck[key]))
    nets.meta = {k: ck.get(k) for k in ("step", "train_config", "perceptual", "provenance")}
    if nets.meta["train_config"] is None and isinstance(ck.get("config"), dict):   # a training checkpoint
        nets.meta["train_config"] = plain_data(ck["config"])
    return nets.to(pick_device(device)).eval()
