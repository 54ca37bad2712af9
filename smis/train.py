"""Training: the paper's objective (Eq. 7 with the KL of Eq. 18), exact resume, logging, DDP.

    python -m smis.train --variant clvae --preset synthscenes --steps 3000 --run-dir outputs/runs/clvae
    torchrun --nproc_per_node=2 -m smis.train ...        # same entry point, DDP

Each iteration: one generator + encoder step (hinge GAN + lambda_FM FM + lambda_P perceptual +
lambda_KL KL), then one discriminator step (hinge) on the same fake, detached. Adam with betas
(0, 0.9); learning rates as in the published code, G/E 1e-4 and D 4e-4 (`--paper-text-lr` swaps
them to what the paper's text states); constant, then linear decay to zero.

Exact resume: data order, augmentation and latent noise are functions of (seed, step, sample), and
checkpoints (plain dicts, written atomically) hold the networks, optimisers, scaler, step and RNG
states, so a run killed at any moment and resumed ends with the same weights as an uninterrupted one.
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import os
import random
import sys
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from smis.config import get_preset
from smis.losses import d_hinge_loss, feature_matching_loss, g_hinge_loss, kl_divergence
from smis.networks import VARIANTS, Latents, Networks, build_networks
from smis.rundir import RunDirBusy, RunDirLock
from smis.utils import (CheckpointError, CorruptCheckpoint, atomic_torch_save, atomic_write_json, pick_device, plain_data,
                        resolve, safe_load)

CKPT_FORMAT = "smis-train-v2"                        # v2: plain data only (v1 held numpy's RNG state as an array)
CKPT_FORMATS = ("smis-train-v1", CKPT_FORMAT)        # what load_checkpoint / load_model read
MODEL_FORMAT = "smis-model-v1"

# Options that may differ when a run is resumed (recorded in config.json); every other option must
# equal the checkpoint's, or the resumed run would silently be another experiment.
RESUME_MAY_CHANGE = ("run_dir", "data_root", "steps", "device", "channels_last", "fused_adam", "compile",
                     "cudnn_benchmark", "num_workers", "log_every", "image_every", "ckpt_every", "keep_last",
                     "tensorboard", "progress")


class TrainingDiverged(RuntimeError):
    """A loss became NaN or Inf; the last good checkpoint is kept."""


class ResumeMismatch(ValueError):
    """--resume with options that differ from the checkpoint's; the message lists each difference."""


@dataclass
class TrainConfig:
    """Every option of a training run; saved as `config.json` beside its outputs."""

    run_dir: str = "outputs/runs/clvae"     # checkpoints, logs, samples (relative to the repo root)
    variant: str = "clvae"                  # smis.networks.VARIANTS key
    preset: str = "synthscenes"             # smis.config.PRESETS key
    preset_overrides: dict = field(default_factory=dict)  # e.g. {"ngf": 16, "image_size": [64, 64]}
    dataset: str = "synthscenes"            # smis.data.DATASETS key
    data_root: str | None = None            # None: SynthScenes generated on the fly
    data_length: int = 2000                 # on-the-fly SynthScenes: images per epoch
    data_seed: int = 0                      # dataset seed (SynthScenes)
    steps: int | None = None                # iterations; None = the preset's epochs x len(data) / batch
    batch_size: int | None = None           # global batch (all ranks); None = the preset's
    lr_decay: bool = True                   # constant then linear decay to 0 over the run
    decay_start: float = 0.5                # fraction of the run at the constant rate (preset: const/(const+decay))
    paper_text_lr: bool = False             # True: G/E 4e-4, D 1e-4 (the paper's text); False: the published code's
    perceptual: str = "auto"                # "auto" (VGG19 if cached, else EfficientNet-Lite0), "effnet", "none"
    kl_weight: float | None = None          # None = preset's lambda_KL
    seed: int = 0                           # noise, data order, augmentation
    flip: bool = True                       # random horizontal flips
    device: str = "auto"                    # "auto", "cpu", "cuda", "cuda:1"...
    precision: str = "fp32"                 # "fp32", "bf16" (autocast, GPU), "fp16" (autocast + GradScaler)
    channels_last: bool = False             # NHWC memory format for convolutions
    fused_adam: bool | None = None          # None = fused on CUDA
    compile: bool = False                   # torch.compile G, E and D
    cudnn_benchmark: bool = True            # CUDA: autotune conv algorithms on the first step (shapes are fixed)
    num_workers: int = 0                    # DataLoader workers
    log_every: int = 10                     # CSV + TensorBoard scalars
    image_every: int = 200                  # TensorBoard sample grid (0 = never)
    ckpt_every: int = 200                   # checkpoint interval in steps
    keep_last: int = 3                      # checkpoints kept
    tensorboard: bool = True
    progress: bool = True                   # tqdm bar

    def __post_init__(self):
        """Reject values that would train nothing, crash later or silently do something else."""
        from smis.config import PRESETS
        from smis.data import DATASETS
        from smis.networks import VARIANTS

        def need(ok: bool, name: str, rule: str):
            if not ok:
                raise ValueError(f"training option {name}={getattr(self, name)!r} (--{name.replace('_', '-')}): {rule}")

        is_int = lambda v: isinstance(v, int) and not isinstance(v, bool)
        for name in ("data_length", "log_every", "ckpt_every", "keep_last"):
            need(is_int(getattr(self, name)) and getattr(self, name) >= 1, name, "must be an integer >= 1")
        for name in ("image_every", "num_workers", "data_seed", "seed"):
            need(is_int(getattr(self, name)) and getattr(self, name) >= 0, name, "must be an integer >= 0")
        for name in ("steps", "batch_size"):
            need(getattr(self, name) is None or (is_int(getattr(self, name)) and getattr(self, name) >= 1), name,
                 "must be an integer >= 1 (or None: the preset's)")
        need(isinstance(self.decay_start, (int, float)) and 0 <= self.decay_start <= 1, "decay_start",
             "is the fraction of the run before the decay starts: give a number in [0, 1]")
        need(self.kl_weight is None or (isinstance(self.kl_weight, (int, float)) and self.kl_weight >= 0), "kl_weight",
             "must be >= 0 (or None: the preset's lambda_KL)")
        need(self.variant in VARIANTS, "variant", f"choose one of {sorted(VARIANTS)}")
        need(self.preset in PRESETS, "preset", f"choose one of {sorted(PRESETS)}")
        need(self.dataset in DATASETS, "dataset", f"choose one of {sorted(DATASETS)}")
        need(isinstance(self.preset_overrides, dict), "preset_overrides", "must be a dict of preset fields")
        need(self.precision in ("fp32", "bf16", "fp16"), "precision", "choose fp32, bf16 or fp16")
        need(self.perceptual in ("auto", "effnet", "none"), "perceptual", "choose auto, effnet or none")

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        names = {f.name for f in fields(cls)}
        bad = sorted(set(d) - names)
        if bad:
            raise TypeError(f"unknown training option(s) {bad}; valid: {sorted(names)}")
        return cls(**d)


def resume_conflicts(saved: dict,                 # the checkpoint's config (asdict of its TrainConfig)
                     cfg: TrainConfig) -> list[str]:  # the options given now
    """'name: checkpoint X, now Y' for every option outside RESUME_MAY_CHANGE that differs. batch_size
    and kl_weight compare as resolved (None = the preset's value), so spelling out the default is no change."""
    defaults = asdict(TrainConfig())
    old = {**defaults, **saved}
    now = asdict(cfg)

    def resolved(d: dict, name: str):
        if name in ("batch_size", "kl_weight") and d[name] is None:
            try:
                preset = get_preset(d["preset"], **d["preset_overrides"])
            except (KeyError, TypeError, ValueError):
                return None
            return preset.batch_size if name == "batch_size" else preset.lambda_kl
        return plain_data(d[name])

    return [f"{name}: checkpoint {resolved(old, name)!r}, now {resolved(now, name)!r}" for name in now
            if name not in RESUME_MAY_CHANGE and resolved(old, name) != resolved(now, name)]


def _numpy_rng_state() -> dict:
    """numpy's global RNG state as plain data + a tensor (loads with weights_only=True)."""
    key, state, pos, has_gauss, cached = np.random.get_state()
    return {"key": str(key), "state": torch.from_numpy(state.astype(np.int64)), "pos": int(pos),
            "has_gauss": int(has_gauss), "cached_gaussian": float(cached)}


def _set_numpy_rng_state(st) -> None:
    """Inverse of _numpy_rng_state; also takes numpy's own tuple (format smis-train-v1)."""
    if isinstance(st, dict):
        st = (st["key"], st["state"].numpy().astype(np.uint32), st["pos"], st["has_gauss"], st["cached_gaussian"])
    np.random.set_state(tuple(st))


# ---------------------------------------------------------------------------------------------
# Distributed helpers


def dist_info() -> tuple[int, int, int]:
    """(rank, world size, local rank) from torchrun's environment; (0, 1, 0) otherwise."""
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)), int(os.environ.get("LOCAL_RANK", 0))


def _setup_distributed(device: torch.device) -> tuple[int, int]:
    rank, world, _ = dist_info()
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return rank, world


# ---------------------------------------------------------------------------------------------
# Deterministic data stream


class SeededSamples(torch.utils.data.Dataset):
    """Wraps a dataset: item (index, seed) seeds torch's RNG before loading, so random crops and
    flips depend on (run seed, step, sample) only, in any worker, across resumes."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, item):
        index, seed = item
        torch.manual_seed(seed)
        return self.dataset[index]


class StepSampler(torch.utils.data.Sampler):
    """Yields this rank's (index, seed) items for global steps start..total-1.

    The global batch of step s is positions [s * GB, (s + 1) * GB) of a stream of epoch-wise
    permutations (seeded by run seed and epoch); rank r takes the r-th contiguous chunk. So any
    number of ranks sees exactly the samples of a single process with the same global batch.
    """

    def __init__(self, n: int, global_batch: int, seed: int, start: int, total: int, rank: int = 0, world: int = 1):
        if global_batch % world:
            raise ValueError(f"batch size {global_batch} is not divisible by the {world} processes; pick a multiple")
        self.n, self.gb, self.seed, self.start, self.total, self.rank, self.world = n, global_batch, seed, start, total, rank, world

    def __len__(self):
        return (self.total - self.start) * (self.gb // self.world)

    def __iter__(self):
        b = self.gb // self.world
        cache: dict[int, torch.Tensor] = {}
        for step in range(self.start, self.total):
            pos = torch.arange(step * self.gb + self.rank * b, step * self.gb + (self.rank + 1) * b)
            for p in pos.tolist():
                epoch, i = divmod(p, self.n)
                if epoch not in cache:
                    cache.clear()
                    cache[epoch] = torch.randperm(self.n, generator=torch.Generator().manual_seed(self.seed * 100_003 + epoch))
                yield int(cache[epoch][i]), (self.seed * 1_000_003 + p) % (2**63 - 1)


def latent_noise(mu: Latents, step: int, seed: int, global_batch: int, rank: int, device) -> Latents:
    """eps ~ N(0, I) shaped like `mu`, drawn for the whole global batch from (seed, step) and sliced
    to this rank's chunk, so DDP draws what one process would."""
    g = torch.Generator(device=device).manual_seed(seed * 7_919 + step)
    b = mu.batch_size
    sl = slice(rank * b, (rank + 1) * b)
    z = zc = None
    if mu.z is not None:
        z = torch.randn((global_batch, *mu.z.shape[1:]), generator=g, device=device)[sl]
    if mu.zc is not None:
        zc = torch.randn((global_batch, *mu.zc.shape[1:]), generator=g, device=device)[sl]
    return Latents(z, zc, mu.present)


# ---------------------------------------------------------------------------------------------
# The trainer


class GeneratorStep(nn.Module):
    """G and E together (one DDP unit): image + label -> fake image and KL (Eq. 18)."""

    def __init__(self, G: nn.Module, E: nn.Module | None, spec):
        super().__init__()
        self.G, self.E, self.spec = G, E, spec

    def forward(self, label, image, eps: Latents | None = None, prior: Latents | None = None):
        if self.E is None:
            return self.G(label, prior), image.new_zeros(())
        mu, logvar = self.E(image, label)
        z = Latents(None if mu.z is None else mu.z + eps.z * torch.exp(0.5 * logvar.z),
                    None if mu.zc is None else mu.zc + eps.zc * torch.exp(0.5 * logvar.zc), mu.present)
        return self.G(label, z), kl_divergence(mu.map(lambda t: t.float()), logvar.map(lambda t: t.float()))


def configure_backends(device: torch.device, cfg: TrainConfig) -> None:
    """On CUDA, let cuDNN autotune convolution algorithms (`cfg.cudnn_benchmark`). Training shapes are
    fixed, so the first step's search (10-35 s for the ADE20K preset on an H100; its trial workspaces use
    whatever memory is free, 25.3 GiB peak there against 21.3 GiB in later steps, fp32 batch 16) buys
    faster kernels for every later step. TF32 convolutions stay at torch's default (on). No effect on the CPU."""
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = bool(cfg.cudnn_benchmark)


class Trainer:
    def __init__(self, cfg: TrainConfig):
        self.cfg = cfg
        self.device = pick_device(cfg.device)
        self.rank, self.world = _setup_distributed(self.device)
        if self.world > 1 and self.device.type == "cuda":
            self.device = torch.device("cuda", dist_info()[2])
            torch.cuda.set_device(self.device)
        configure_backends(self.device, cfg)
        self.is_main = self.rank == 0
        self.run_dir = resolve(cfg.run_dir)
        self.preset = get_preset(cfg.preset, **cfg.preset_overrides)
        self.batch = cfg.batch_size or self.preset.batch_size
        if self.batch % self.world:
            raise ValueError(f"batch size {self.batch} is not divisible by the {self.world} processes; pick a multiple")
        self.local_batch = self.batch // self.world

        from smis.data import make_dataset
        kw = dict(size=self.preset.image_size, flip=cfg.flip)
        if cfg.dataset == "synthscenes" and cfg.data_root is None:
            kw.update(length=cfg.data_length, seed=cfg.data_seed)
        self.dataset = make_dataset(cfg.dataset, cfg.data_root, "train", **kw)
        if self.dataset.info.num_classes != self.preset.num_classes:
            raise ValueError(f"dataset {cfg.dataset} has {self.dataset.info.num_classes} classes but preset {cfg.preset} "
                             f"expects {self.preset.num_classes}. Fix: choose the matching preset.")
        if cfg.steps is None:
            per_epoch = math.ceil(len(self.dataset) / self.batch)
            self.total_steps = self.preset.epochs * per_epoch
            self.decay_start = self.preset.epochs_const * per_epoch
        else:
            self.total_steps = int(cfg.steps)
            self.decay_start = int(cfg.decay_start * cfg.steps)

        torch.manual_seed(cfg.seed)  # weight init
        nets = build_networks(cfg.variant, self.preset, device=self.device)
        if self.world > 1 and self.device.type == "cuda":
            nets.G = nn.SyncBatchNorm.convert_sync_batchnorm(nets.G)
        if cfg.channels_last:
            nets = nets.to(memory_format=torch.channels_last)
        self.nets: Networks = nets
        self.gstep = GeneratorStep(nets.G, nets.E, nets.spec)
        lr_g, lr_d = (self.preset.lr_d, self.preset.lr_g) if cfg.paper_text_lr else (self.preset.lr_g, self.preset.lr_d)
        fused = (self.device.type == "cuda") if cfg.fused_adam is None else cfg.fused_adam
        adam = lambda params, lr: torch.optim.Adam(params, lr=lr, betas=self.preset.betas, **({"fused": True} if fused else {}))
        self.opt_g = adam(list(self.gstep.parameters()), lr_g)
        self.opt_d = adam(list(nets.D.parameters()), lr_d)
        self.base_lr = (lr_g, lr_d)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=cfg.precision == "fp16")
        self.autocast_dtype = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[cfg.precision]
        self.kl_weight = self.preset.lambda_kl if cfg.kl_weight is None else cfg.kl_weight
        self.perceptual = None
        self.perceptual_name = "none"
        if cfg.perceptual != "none" and self.preset.lambda_perceptual > 0:
            from smis.losses import make_perceptual_loss
            self.perceptual = make_perceptual_loss(self.device, prefer="vgg19" if cfg.perceptual == "auto" else "efficientnet_lite0")
            self.perceptual_name = self.perceptual.backbone
            if cfg.channels_last:
                self.perceptual = self.perceptual.to(memory_format=torch.channels_last)

        self.g_model: nn.Module = self.gstep
        self.d_model: nn.Module = nets.D
        if self.world > 1:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.g_model = nn.parallel.DistributedDataParallel(self.gstep, device_ids=ids)
            self.d_model = nn.parallel.DistributedDataParallel(nets.D, device_ids=ids)
        if cfg.compile:
            self.g_model = torch.compile(self.g_model)
            self.d_model = torch.compile(self.d_model)
            self.d_plain = torch.compile(nets.D)
        else:
            self.d_plain = nets.D
        self.step = 0
        self._wall_before, self._wall_start = 0.0, time.perf_counter()

    def wall_time(self) -> float:
        """Training wall time in seconds, summed over resumed runs."""
        return self._wall_before + time.perf_counter() - self._wall_start

    # -- schedule --------------------------------------------------------------------------------
    def lr_factor(self, step: int) -> float:
        if not self.cfg.lr_decay or step < self.decay_start:
            return 1.0
        return max(0.0, 1.0 - (step - self.decay_start) / max(1, self.total_steps - self.decay_start))

    def _set_lr(self, step: int):
        f = self.lr_factor(step)
        for opt, base in ((self.opt_g, self.base_lr[0]), (self.opt_d, self.base_lr[1])):
            for group in opt.param_groups:
                group["lr"] = base * f

    # -- checkpoints -----------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {
            "format": CKPT_FORMAT, "step": self.step, "wall_time_s": self.wall_time(), "config": plain_data(asdict(self.cfg)),
            "preset": plain_data(asdict(self.preset)), "variant": self.cfg.variant, "perceptual": str(self.perceptual_name),
            "G": self.nets.G.state_dict(), "E": None if self.nets.E is None else self.nets.E.state_dict(),
            "D": self.nets.D.state_dict(), "opt_g": self.opt_g.state_dict(), "opt_d": self.opt_d.state_dict(),
            "scaler": self.scaler.state_dict(),
            "rng": {"torch": torch.get_rng_state(), "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
                    "numpy": _numpy_rng_state(), "python": random.getstate()},
        }

    def save_checkpoint(self) -> Path:
        path = self.run_dir / "checkpoints" / f"step_{self.step:08d}.pt"
        atomic_torch_save(self.state_dict(), path)
        ckpts = sorted((self.run_dir / "checkpoints").glob("step_*.pt"))
        for old in ckpts[: max(0, len(ckpts) - self.cfg.keep_last)]:
            old.unlink(missing_ok=True)
        return path

    def load_checkpoint(self, path: Path | str, ck: dict | None = None):
        """Restore networks, optimisers, scaler, RNG states and step from `path` (read with weights_only=True;
        `ck`: its already-read contents). Refuses a checkpoint whose options differ (ResumeMismatch)."""
        ck = safe_load(path, map_location=self.device) if ck is None else ck
        if not isinstance(ck, dict) or ck.get("format") not in CKPT_FORMATS:
            fmt = ck.get("format") if isinstance(ck, dict) else type(ck).__name__
            raise CheckpointError(f"{path} is not an smis training checkpoint (format {fmt!r}, expected one of "
                                  f"{CKPT_FORMATS}). Fix: pass a file from outputs/runs/*/checkpoints.")
        conflicts = resume_conflicts(ck.get("config", {}), self.cfg)
        if conflicts:
            raise ResumeMismatch(
                f"cannot resume {self.run_dir} from {Path(path).name}: options differ from the checkpoint's:\n  "
                + "\n  ".join(conflicts) + f"\nOnly {', '.join(RESUME_MAY_CHANGE)} may change on resume. Fix: pass "
                "the run's original options (its config.json lists them), or start a new run with another --run-dir.")
        self.nets.G.load_state_dict(ck["G"])
        if self.nets.E is not None:
            self.nets.E.load_state_dict(ck["E"])
        self.nets.D.load_state_dict(ck["D"])
        self.opt_g.load_state_dict(ck["opt_g"])
        self.opt_d.load_state_dict(ck["opt_d"])
        self.scaler.load_state_dict(ck["scaler"])
        torch.set_rng_state(ck["rng"]["torch"].cpu())
        if ck["rng"]["cuda"] is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all([s.cpu() for s in ck["rng"]["cuda"]])
        _set_numpy_rng_state(ck["rng"]["numpy"])
        random.setstate(tuple(tuple(x) if isinstance(x, list) else x for x in ck["rng"]["python"]))
        self.step = int(ck["step"])
        self._wall_before = float(ck.get("wall_time_s", 0.0))
        self.resumed_from = {"checkpoint": Path(path).name, "step": self.step,
                             "changed": {k: [ck["config"].get(k), v] for k, v in asdict(self.cfg).items()
                                         if k in ck.get("config", {}) and plain_data(ck["config"][k]) != plain_data(v)}}

    def load_latest_intact(self) -> Path | None:
        """Resume from the newest checkpoint that reads; a truncated or corrupt newer one is skipped with a
        message naming it and why. None when the run has no checkpoint. Unsafe files are never skipped."""
        ckpts = self.checkpoints()
        skipped = []
        for path in reversed(ckpts):
            try:
                ck = safe_load(path, map_location=self.device)
            except CorruptCheckpoint as e:
                skipped.append(path.name)
                print(f"[smis.train] skipping {path}: {e}", file=sys.stderr, flush=True)
                continue
            self.load_checkpoint(path, ck)
            if skipped:
                print(f"[smis.train] resumed from {path.name} (step {self.step}); skipped unreadable {', '.join(skipped)}",
                      file=sys.stderr, flush=True)
            return path
        if skipped:
            raise CheckpointError(f"{self.run_dir / 'checkpoints'}: no checkpoint is readable ({', '.join(skipped)} "
                                  "are truncated or corrupt). Fix: delete them to start over, or use another --run-dir.")
        return None

    def checkpoints(self) -> list[Path]:
        """The run's checkpoints, oldest first."""
        return sorted((self.run_dir / "checkpoints").glob("step_*.pt"))

    def latest_checkpoint(self) -> Path | None:
        ckpts = self.checkpoints()
        return ckpts[-1] if ckpts else None

    # -- one iteration ---------------------------------------------------------------------------
    def _autocast(self):
        return torch.autocast(self.device.type, dtype=self.autocast_dtype, enabled=self.autocast_dtype is not None)

    def train_step(self, image: torch.Tensor, label: torch.Tensor) -> dict[str, float]:
        cfg, p = self.cfg, self.preset
        if cfg.channels_last:
            image = image.contiguous(memory_format=torch.channels_last)
        self._set_lr(self.step)
        eps = prior = None
        if self.nets.E is not None:
            with torch.no_grad():
                shapes = Latents.prior(self.nets.spec, label[:1])  # only shapes matter
            eps = latent_noise(shapes.map(lambda t: t.expand(label.shape[0], *t.shape[1:])), self.step, cfg.seed,
                               self.batch, self.rank, self.device)
        elif self.nets.spec.z_dim > 0 or self.nets.spec.has_class_codes:
            prior = Latents.prior(self.nets.spec, label)

        # generator + encoder (D frozen: no weight gradients for it in this step)
        self.opt_g.zero_grad(set_to_none=True)
        self.nets.D.requires_grad_(False)
        with self._autocast():
            fake, kl = self.g_model(label, image, eps, prior)
            pred = self.d_plain(torch.cat([label, label]), torch.cat([fake, image]))   # D not updated here
            pred_fake = [[f[: len(label)] for f in s] for s in pred]
            pred_real = [[f[len(label):] for f in s] for s in pred]
            losses = {"g_gan": g_hinge_loss(pred_fake), "g_fm": feature_matching_loss(pred_real, pred_fake)}
            if self.perceptual is not None:
                losses["g_perceptual"] = self.perceptual(fake.float(), image.float())
        losses["kl"] = kl * self.world  # per-rank sum; DDP averages gradients, so x world = the global sum
        total_g = (losses["g_gan"] + p.lambda_fm * losses["g_fm"] + p.lambda_perceptual * losses.get("g_perceptual", 0)
                   + self.kl_weight * losses["kl"])
        self._check_finite({**losses, "g_total": total_g})
        self.scaler.scale(total_g).backward()
        self.scaler.step(self.opt_g)
        self.nets.D.requires_grad_(True)

        # discriminator, on the same fake (detached)
        self.opt_d.zero_grad(set_to_none=True)
        with self._autocast():
            pred = self.d_model(torch.cat([label, label]), torch.cat([fake.detach(), image]))
            d_loss = d_hinge_loss([[f[len(label):] for f in s] for s in pred], [[f[: len(label)] for f in s] for s in pred])
        self._check_finite({"d_hinge": d_loss})
        self.scaler.scale(d_loss).backward()
        self.scaler.step(self.opt_d)
        self.scaler.update()
        self.step += 1
        out = {k: float(v.detach()) for k, v in losses.items()}
        out.update(g_total=float(total_g.detach()), d_hinge=float(d_loss.detach()), lr_factor=self.lr_factor(self.step - 1))
        self._last_fake = fake.detach()
        return out

    def _check_finite(self, losses: dict):
        bad = [k for k, v in losses.items() if not torch.isfinite(torch.as_tensor(v)).all()]
        if bad:
            last = self.latest_checkpoint()
            raise TrainingDiverged(
                f"loss {', '.join(bad)} became NaN/Inf at step {self.step}; stopped without saving. The last good "
                f"checkpoint is {last or 'none (no checkpoint yet)'}. Fix: lower the learning rates, use fp32 or bf16 "
                "instead of fp16, or check the data for broken images.")

    # -- the loop --------------------------------------------------------------------------------
    def fit(self, resume: bool = False, callback=None) -> Path:
        """Train to `total_steps`; `callback(trainer, step, losses)` runs at every log step (e.g. a live plot).
        The run directory is locked for the whole run (smis.rundir): a second run on it is refused."""
        lock = RunDirLock(self.run_dir).acquire() if self.is_main else None
        try:
            return self._fit(resume, callback)
        finally:
            if lock is not None:
                lock.release()

    def _fit(self, resume: bool, callback) -> Path:
        cfg = self.cfg
        self.resumed_from = None
        if resume:
            self.load_latest_intact()
        elif self.latest_checkpoint() is not None and self.is_main:
            raise FileExistsError(f"{self.run_dir} already holds checkpoints. Fix: pass --resume to continue, or use "
                                  "another --run-dir.")
        if self.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            history = []
            if self.resumed_from is not None and (self.run_dir / "config.json").exists():
                try:
                    history = json.loads((self.run_dir / "config.json").read_text()).get("resumes", [])
                except (json.JSONDecodeError, AttributeError):
                    history = []
            if self.resumed_from is not None:
                history = history + [{**self.resumed_from, "time": time.strftime("%Y-%m-%d %H:%M:%S")}]
            atomic_write_json({**asdict(cfg), "resumes": history, "resolved": {
                "device": str(self.device), "device_name": device_name(self.device), "world_size": self.world,
                "global_batch": self.batch, "total_steps": self.total_steps, "decay_start": self.decay_start,
                "perceptual": self.perceptual_name, "preset": asdict(self.preset), "torch": torch.__version__,
                "params": self.nets.param_counts()}}, self.run_dir / "config.json")
            print(f"[smis.train] {cfg.variant} on {cfg.dataset} ({self.preset.name} preset), {self.total_steps} steps, "
                  f"batch {self.batch} on {self.world} x {device_name(self.device)}, perceptual: {self.perceptual_name}",
                  flush=True)
        log = _CsvLog(self.run_dir / "losses.csv", self.step) if self.is_main else None
        tb = None
        if self.is_main and cfg.tensorboard:
            from torch.utils.tensorboard import SummaryWriter
            tb = SummaryWriter(str(self.run_dir / "tensorboard"), purge_step=self.step)
        sampler = StepSampler(len(self.dataset), self.batch, cfg.seed, self.step, self.total_steps, self.rank, self.world)
        from smis.data import collate
        loader = torch.utils.data.DataLoader(SeededSamples(self.dataset), batch_size=self.local_batch, sampler=sampler,
                                             num_workers=cfg.num_workers, collate_fn=collate, drop_last=False,
                                             pin_memory=self.device.type == "cuda", persistent_workers=False)
        from tqdm.auto import tqdm
        bar = tqdm(total=self.total_steps, initial=self.step, disable=not (cfg.progress and self.is_main),
                   desc=f"train {cfg.variant}", dynamic_ncols=True)
        self.nets.train()
        self._wall_start = t0 = time.perf_counter()
        seen = 0
        try:
            for batch in loader:
                image = batch["image"].to(self.device, non_blocking=True)
                label = batch["label"].to(self.device, non_blocking=True)
                try:
                    losses = self.train_step(image, label)
                except torch.cuda.OutOfMemoryError as e:
                    raise RuntimeError(f"CUDA out of memory at batch size {self.batch} ({self.local_batch} per GPU). "
                                       f"Fix: try --batch-size {max(self.world, self.batch // 2)}, --precision bf16, or "
                                       "--channels-last off.") from e
                seen += self.batch
                ips = seen / (time.perf_counter() - t0)
                losses["images_per_s"] = ips
                bar.update(1)
                bar.set_postfix(g=f"{losses['g_total']:.2f}", d=f"{losses['d_hinge']:.2f}", kl=f"{losses['kl']:.1f}",
                                ips=f"{ips:.1f}")
                if self.is_main and (self.step % cfg.log_every == 0 or self.step == self.total_steps):
                    log.write(self.step, losses)
                    if callback is not None:
                        callback(self, self.step, losses)
                    if tb is not None:
                        for k, v in losses.items():
                            tb.add_scalar(f"loss/{k}" if k not in ("images_per_s", "lr_factor") else f"speed/{k}", v, self.step)
                if tb is not None and cfg.image_every and self.step % cfg.image_every == 0:
                    tb.add_image("mask|real|fake|prior samples", self.sample_grid(image, label), self.step)
                if self.is_main and (self.step % cfg.ckpt_every == 0 or self.step == self.total_steps):
                    self.save_checkpoint()
            if self.world > 1:
                self._check_ranks_in_sync()
        finally:
            bar.close()
            if tb is not None:
                tb.close()
            if log is not None:
                log.close()
        return self.run_dir

    @torch.no_grad()
    def _check_ranks_in_sync(self):
        """All-gather a fingerprint of every rank's parameters; rank 0 writes ddp_check.json; error if they differ."""
        params = [p.detach().double() for m in (self.nets.G, self.nets.E, self.nets.D) if m is not None for p in m.parameters()]
        fp = torch.stack([sum(p.sum() for p in params), sum((p * p).sum() for p in params)]).to(self.device)
        allfp = [torch.zeros_like(fp) for _ in range(self.world)]
        dist.all_gather(allfp, fp)
        prints = [[float(v) for v in f.cpu()] for f in allfp]
        if self.is_main:
            atomic_write_json({"world_size": self.world, "step": self.step, "fingerprints": prints}, self.run_dir / "ddp_check.json")
        if any(p != prints[0] for p in prints):
            raise RuntimeError(f"DDP ranks diverged at step {self.step}: parameter fingerprints {prints}")

    @torch.no_grad()
    def sample_grid(self, image, label, n: int = 4, samples: int = 3) -> torch.Tensor:
        """(3, H', W') grid: per row mask | real | reconstruction-ish fake | prior samples."""
        from smis.viz import colorize
        was = self.nets.training
        self.nets.eval()
        n = min(n, len(label))
        rows = []
        g = torch.Generator(device=self.device).manual_seed(0)
        lab = label[:n]
        outs = [self.nets.G(lab, Latents.prior(self.nets.spec, lab, generator=g)) if (self.nets.spec.z_dim or self.nets.spec.has_class_codes)
                else self.nets.G(lab) for _ in range(samples)]
        mask = torch.from_numpy(colorize(lab, self.dataset.info.palette)).permute(0, 3, 1, 2).float().div(127.5).sub(1).to(image.device)
        for i in range(n):
            rows.append(torch.cat([mask[i], image[i].float(), self._last_fake[i].float()] + [o[i].float() for o in outs], dim=2))
        self.nets.train(was)
        return (torch.cat(rows, dim=1).clamp(-1, 1) + 1) / 2


class _CsvLog:
    """losses.csv, append-only; on resume rows past the checkpoint's step are dropped."""

    def __init__(self, path: Path, resume_step: int):
        self.path = path
        self.rows: list[dict] = []
        if path.exists():
            with open(path) as f:
                self.rows = [r for r in csv.DictReader(f) if int(r["step"]) <= resume_step]
        self.keys = list(self.rows[0].keys()) if self.rows else None
        self._flush()

    def write(self, step: int, losses: dict):
        row = {"step": step, **{k: f"{v:.6g}" for k, v in losses.items()}}
        if self.keys is None:
            self.keys = list(row)
        self.rows.append(row)
        self._flush()

    def _flush(self):
        if self.keys is None:
            return
        from smis.utils import atomic_path
        with atomic_path(self.path) as tmp, open(tmp, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=self.keys, extrasaction="ignore")
            w.writeheader()
            w.writerows(self.rows)

    def close(self):
        self._flush()


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    import platform
    return f"CPU ({platform.machine()}, {os.cpu_count()} cores, {torch.get_num_threads()} threads)"


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
    cast = (lambda sd: {k: (v.half() if v.is_floating_point() else v) for k, v in sd.items()}) if half else (lambda sd: sd)
    obj = {"format": MODEL_FORMAT, "variant": ck["variant"], "preset": plain_data(ck["preset"]), "step": ck["step"],
           "G": cast(ck["G"]), "E": None if ck["E"] is None else cast(ck["E"]), "train_config": plain_data(ck["config"]),
           "perceptual": ck.get("perceptual"), **plain_data(extra or {})}
    atomic_torch_save(obj, out)
    return Path(out)


def load_model(path: str | Path,                         # an exported model or a training checkpoint
               device: str | torch.device | None = "cpu",
               ) -> Networks:
    """Networks (G, E; no D) in eval mode, fp32. Read with weights_only=True (a file cannot run code);
    a corrupt file, another kind of file or weights that do not fit their recorded preset raise a
    CheckpointError naming the file and the fix."""
    from smis.config import Preset
    from smis.official import CheckpointMismatch, check_state_dict
    ck = safe_load(path)
    if not isinstance(ck, dict) or ck.get("format") not in (MODEL_FORMAT, *CKPT_FORMATS):
        fmt = ck.get("format") if isinstance(ck, dict) else type(ck).__name__
        raise CheckpointError(f"{path} is not an smis model or checkpoint (format {fmt!r}). Fix: export one with "
                              "smis.train.export_model, pass a checkpoint from outputs/runs/*/checkpoints, or load the "
                              "authors' weights with smis.official.load_official.")
    if ck.get("variant") not in VARIANTS:
        raise CheckpointError(f"{path}: unknown variant {ck.get('variant')!r}; this smis knows {sorted(VARIANTS)}. "
                              "Fix: use the smis version that wrote the file.")
    pd = dict(ck["preset"])
    for key in ("image_size", "betas", "encoder_size"):
        if pd.get(key) is not None:
            pd[key] = tuple(pd[key])
    try:
        preset = Preset(**pd)
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
                                  "from its training checkpoint with smis.train.export_model.")
        except CheckpointMismatch as e:
            raise CheckpointError(str(e)) from None
        net.load_state_dict(fp32(ck[key]))
    nets.meta = {k: ck.get(k) for k in ("step", "train_config", "perceptual", "provenance")}
    return nets.to(pick_device(device)).eval()


# ---------------------------------------------------------------------------------------------
# Command line


def parse_args(argv=None) -> tuple[TrainConfig, bool]:
    p = argparse.ArgumentParser(prog="python -m smis.train", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    d = TrainConfig()
    p.add_argument("--run-dir", default=d.run_dir)
    p.add_argument("--variant", default=d.variant)
    p.add_argument("--preset", default=d.preset)
    p.add_argument("--set", nargs="*", default=[], metavar="FIELD=JSON", help="preset overrides, e.g. ngf=32 image_size=[128,128]")
    p.add_argument("--dataset", default=d.dataset)
    p.add_argument("--data-root", default=None)
    p.add_argument("--data-length", type=int, default=d.data_length)
    p.add_argument("--data-seed", type=int, default=d.data_seed)
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--no-lr-decay", action="store_true")
    p.add_argument("--decay-start", type=float, default=d.decay_start)
    p.add_argument("--paper-text-lr", action="store_true", help="G/E 4e-4, D 1e-4 as the paper's text states")
    p.add_argument("--perceptual", default=d.perceptual, choices=["auto", "effnet", "none"])
    p.add_argument("--kl-weight", type=float, default=None)
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--no-flip", action="store_true")
    p.add_argument("--device", default=d.device)
    p.add_argument("--precision", default=d.precision, choices=["fp32", "bf16", "fp16"])
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--no-fused-adam", action="store_true")
    p.add_argument("--no-cudnn-benchmark", action="store_true",
                   help="CUDA: skip cuDNN's first-step algorithm search (less memory at step 1, slower steps)")
    p.add_argument("--compile", action="store_true")
    p.add_argument("--num-workers", type=int, default=d.num_workers)
    p.add_argument("--log-every", type=int, default=d.log_every)
    p.add_argument("--image-every", type=int, default=d.image_every)
    p.add_argument("--ckpt-every", type=int, default=d.ckpt_every)
    p.add_argument("--keep-last", type=int, default=d.keep_last)
    p.add_argument("--no-tensorboard", action="store_true")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--resume", action="store_true", help="continue from the run's latest checkpoint")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    a = p.parse_args(argv)
    if a.threads is not None and a.threads < 1:
        p.error(f"--threads {a.threads}: give at least 1")
    if a.threads:
        torch.set_num_threads(a.threads)
    overrides = {}
    for item in a.set:
        k, sep, v = item.partition("=")
        if not sep or not k:
            p.error(f"--set {item!r}: write FIELD=JSON, e.g. --set ngf=32 image_size=[128,128]")
        try:
            overrides[k] = json.loads(v)
        except json.JSONDecodeError:
            overrides[k] = v
    try:
        get_preset(a.preset, **dict(overrides))
    except (KeyError, TypeError, ValueError) as e:
        p.error(f"--preset {a.preset} --set {' '.join(a.set)}: {e.args[0] if e.args else e}")
    try:
        cfg = TrainConfig(run_dir=a.run_dir, variant=a.variant, preset=a.preset, preset_overrides=overrides, dataset=a.dataset,
                      data_root=a.data_root, data_length=a.data_length, data_seed=a.data_seed, steps=a.steps,
                      batch_size=a.batch_size, lr_decay=not a.no_lr_decay, decay_start=a.decay_start,
                      paper_text_lr=a.paper_text_lr, perceptual=a.perceptual, kl_weight=a.kl_weight, seed=a.seed,
                      flip=not a.no_flip, device=a.device, precision=a.precision, channels_last=a.channels_last,
                      fused_adam=False if a.no_fused_adam else None, compile=a.compile, cudnn_benchmark=not a.no_cudnn_benchmark,
                      num_workers=a.num_workers,
                      log_every=a.log_every, image_every=a.image_every, ckpt_every=a.ckpt_every, keep_last=a.keep_last,
                      tensorboard=not a.no_tensorboard, progress=not a.no_progress)
    except ValueError as e:   # TrainConfig's checks, e.g. "training option keep_last=0: must be an integer >= 1"
        p.error(str(e))
    return cfg, a.resume


def main(argv=None) -> int:
    cfg, resume = parse_args(argv)
    try:
        trainer = Trainer(cfg)
        trainer.fit(resume=resume)
    except TrainingDiverged as e:
        print(f"[smis.train] STOPPED: {e}", file=sys.stderr)
        return 3
    except (RunDirBusy, ResumeMismatch, CheckpointError, FileExistsError) as e:
        print(f"[smis.train] ERROR: {e}", file=sys.stderr)
        return 2
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
