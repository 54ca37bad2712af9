"""Training: the paper's objective (Eq. 7 with the KL of Eq. 18), exact resume, logging, DDP.

    python -m smis.train --variant clvae --preset synthscenes --steps 3000 --run-dir outputs/runs/clvae
    python -m smis.train --variant cimle --preset synthscenes --run-dir outputs/runs/cimle   # smis.imle
    torchrun --nproc_per_node=2 -m smis.train ...        # same entry point, DDP

    trainer = Trainer(TrainConfig(variant="clvae", steps=3000))      # the API: build + data + loop
    trainer.fit(resume=True)

Each iteration (`TrainStep`): one generator + encoder step (hinge GAN + lambda_FM FM + lambda_P perceptual +
lambda_KL KL, `smis.objective.generator_losses`), then one discriminator step (hinge,
`discriminator_losses`) on the same fake, detached. Adam with betas (0, 0.9); learning rates as in the
published code, G/E 1e-4 and D 4e-4 (`--paper-text-lr` swaps them to what the paper's text states);
constant, then linear decay to zero. The parts come from `smis.build.build` (no data), the options from
`smis.options.TrainConfig`, checkpoints from `smis.checkpoint.Checkpointer`, logs from `smis.runlog.RunLog`.

Exact resume: data order, augmentation and latent noise are functions of (seed, step, sample), and
checkpoints (plain dicts, written atomically) hold the networks, optimisers, scaler, step and RNG
states, so a run killed at any moment and resumed ends with the same weights as an uninterrupted one.

Stopping: SIGTERM or SIGINT (Ctrl-C) stops a single-process run cleanly after the step in progress: it saves a
checkpoint of that step, releases the run directory's lock and ends with "stopped at step N; rerun with --resume"
(exit 128 + the signal: 143 / 130), no traceback. A second signal abandons the step at once (a checkpoint write in
progress is deleted; the newest complete checkpoint stays). A run killed harder (SIGKILL, power loss) leaves at
most a temporary `.step_*.tmp`, which the next run on the folder deletes under the lock. Under torchrun the
signals keep their default effect (the ranks must stop together).

Errors that carry a message naming the fix (a bad dataset file, a busy run folder, an unreadable checkpoint) are
printed alone, without a traceback; `SMIS_TRACEBACK=1` shows the traceback too.
"""
from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import signal
import sys
import threading
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Callable, Sequence

import torch
import torch.distributed as dist
from tqdm.auto import tqdm

from smis.build import TrainingParts, build
from smis.checkpoint import CKPT_FORMAT, Checkpointer, rng_state, set_rng_state
from smis.config import get_preset
from smis.data import DatasetError, collate, distinct_training_images, make_dataset
from smis.networks import VARIANTS, Latents, LatentSpec, Networks
from smis.networks.ops import frozen_spectral_norm
from smis.objective import KLOptions, discriminator_losses, generator_losses, split_batch
from smis.options import (RESUME_MAY_CHANGE, ResumeMismatch, TrainConfig, add_config_arguments, parse_assignments,
                          parse_overrides, resume_conflicts)
from smis.rundir import RunDirBusy, RunDirLock, clear_run, remove_stale_temporaries
from smis.runlog import RunLog
from smis.sampling import sample_prior
from smis.utils import (CheckpointError, atomic_write_json, device_name, keep_freed_memory, pick_device, plain_data,
                        resolve, show_tracebacks)
from smis.viz import colorize


class TrainingDiverged(RuntimeError):
    """A loss became NaN or Inf; the last good checkpoint is kept."""


class TrainingStopped(RuntimeError):
    """SIGTERM or SIGINT stopped the run (see the module docstring); the message says where and how to go on."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.signum = signum


# ---------------------------------------------------------------------------------------------
# Distributed helpers


def dist_info() -> tuple[int, int, int]:
    """(rank, world size, local rank) from torchrun's environment; (0, 1, 0) otherwise."""
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)), int(os.environ.get("LOCAL_RANK", 0))


def setup_distributed(device: torch.device) -> tuple[torch.device, int, int]:
    """(device, rank, world): joins torchrun's process group when world > 1 (NCCL on CUDA, else gloo);
    on CUDA each rank takes the GPU of its local rank."""
    rank, world, local = dist_info()
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    if world > 1 and device.type == "cuda":
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    return device, rank, world


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
        self.n, self.gb, self.seed, self.start, self.total = n, global_batch, seed, start, total
        self.rank, self.world = rank, world

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
                    g = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
                    cache[epoch] = torch.randperm(self.n, generator=g)
                yield int(cache[epoch][i]), (self.seed * 1_000_003 + p) % (2**63 - 1)


def latent_noise(spec: LatentSpec,          # the latents E produces (shapes only)
                 batch: int,                # this rank's batch
                 step: int, seed: int,      # the noise is a function of (seed, step)
                 global_batch: int,         # all ranks' batch
                 rank: int,                 # this rank's chunk of the global batch
                 device) -> Latents:
    """eps ~ N(0, I) shaped like E's codes (z (B, N1), zc (B, L, K, N)), drawn for the whole global batch
    from (seed, step) (z first, then zc) and sliced to this rank's chunk, so DDP draws what one process
    would. Its `present` is all True (Latents.reparameterize does not read it)."""
    g = torch.Generator(device=device).manual_seed(seed * 7_919 + step)
    sl = slice(rank * batch, (rank + 1) * batch)
    z = zc = present = None
    if spec.z_dim > 0:
        z = torch.randn((global_batch, spec.z_dim), generator=g, device=device)[sl]
    if spec.has_class_codes:
        shape = (len(spec.layers), spec.code_classes, spec.z_dim_local)
        zc = torch.randn((global_batch, *shape), generator=g, device=device)[sl]
        present = torch.ones(batch, *shape[:2], dtype=torch.bool, device=device)
    return Latents(z, zc, present)


def configure_backends(device: torch.device, cfg: TrainConfig) -> None:
    """On CUDA, let cuDNN autotune convolution algorithms (`cfg.cudnn_benchmark`). Training shapes are
    fixed, so the first step's search buys faster kernels for every later step, at the price of a slower
    first step whose trial workspaces take whatever memory is free (measured: benchmarks/RESULTS.md,
    "cuDNN autotuning (`smis.train.configure_backends`)"). TF32 convolutions stay at torch's default (on).
    On the CPU, glibc's malloc keeps freed memory for reuse (`cfg.keep_freed_memory`, `smis.utils.
    keep_freed_memory`): the same numbers, ~10k fewer page faults a step."""
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = bool(cfg.cudnn_benchmark)
    elif device.type == "cpu" and cfg.keep_freed_memory:
        keep_freed_memory()


def make_train_dataset(cfg: TrainConfig, preset) -> torch.utils.data.Dataset:
    """cfg's training set at the preset's image size; a ValueError if its class count is not the preset's."""
    kw = dict(size=preset.image_size, flip=cfg.flip)
    if cfg.dataset == "synthscenes" and cfg.data_root is None:
        kw.update(length=cfg.data_length, seed=cfg.data_seed, object_factor=cfg.synth_object_factor)
    dataset = make_dataset(cfg.dataset, cfg.data_root, "train", **kw)
    if dataset.info.num_classes != preset.num_classes:
        raise DatasetError(f"dataset {cfg.dataset} has {dataset.info.num_classes} classes but preset {cfg.preset} "
                         f"expects {preset.num_classes}. Fix: choose the matching preset.")
    return dataset


def schedule(cfg: TrainConfig, preset, n_data: int, batch: int) -> tuple[int, int]:
    """(total steps, step where the linear decay starts): cfg.steps and cfg.decay_start, or without
    cfg.steps the preset's epochs (epochs_const at the base rate, epochs_decay decaying) of `n_data` images."""
    if cfg.steps is None:
        per_epoch = math.ceil(n_data / batch)
        return preset.epochs * per_epoch, preset.epochs_const * per_epoch
    return int(cfg.steps), int(cfg.decay_start * cfg.steps)


class TrainStep:
    """One iteration on built parts: the G/E step, then the D step on the same fake (detached).
    Needs no data set: call it on any (image, label) batch (the benchmarks do)."""

    def __init__(self,
                 cfg: TrainConfig,                  # the run's options (seed, precision, lr_decay, ...)
                 parts: TrainingParts,              # smis.build.build(cfg, ...)
                 total_steps: int,                  # the schedule's length
                 decay_start: int,                  # first step of the linear decay
                 global_batch: int,                 # all ranks' batch (the latent noise is drawn for it)
                 rank: int = 0,                     # this process (DDP)
                 world: int = 1,                    # processes (DDP)
                 checkpoints: Checkpointer | None = None,   # named in the divergence message
                 ):
        self.cfg, self.parts, self.total_steps, self.decay_start = cfg, parts, total_steps, decay_start
        self.global_batch, self.rank, self.world, self.checkpoints = global_batch, rank, world, checkpoints
        self.step = 0
        self.last_fake: torch.Tensor | None = None
        self.kl_options = KLOptions.of(cfg)            # against collapse; all off: Eq. 7's lambda_KL KL

    def lr_factor(self, step: int) -> float:
        """1 until decay_start, then linear to 0 at total_steps (1 throughout without cfg.lr_decay)."""
        if not self.cfg.lr_decay or step < self.decay_start:
            return 1.0
        return max(0.0, 1.0 - (step - self.decay_start) / max(1, self.total_steps - self.decay_start))

    def _set_lr(self, step: int):
        f = self.lr_factor(step)
        for opt, base in ((self.parts.opt_g, self.parts.base_lr[0]), (self.parts.opt_d, self.parts.base_lr[1])):
            for group in opt.param_groups:
                group["lr"] = base * f

    def __call__(self, image: torch.Tensor, label: torch.Tensor) -> dict[str, float]:
        """Train on (image (B, 3, H, W), label (B, H, W)); the losses as floats, plus lr_factor."""
        cfg, parts, nets = self.cfg, self.parts, self.parts.nets
        if cfg.channels_last:
            image = image.contiguous(memory_format=torch.channels_last)
        self._set_lr(self.step)
        eps = None                                     # (variants without E take no latents: gaugan)
        if nets.E is not None:
            eps = latent_noise(nets.spec, label.shape[0], self.step, cfg.seed, self.global_batch, self.rank,
                               parts.device)

        # generator + encoder (D frozen: no weight gradients for it in this step)
        parts.opt_g.zero_grad(set_to_none=True)
        nets.D.requires_grad_(False)
        with parts.autocast():
            fake, kl, layer_kl = parts.g_model(label, image, eps)           # layer_kl (L,): KL_l summed over the batch
            pred_fake = parts.d_plain(label, fake)                          # D not updated here
            with torch.no_grad(), frozen_spectral_norm(nets.D):            # FM's targets: no backward through them,
                pred_real = parts.d_plain(label, image)                     # and D's weights of the fake pass
            # KL: per-rank sum; DDP averages gradients, so x world = the global sum
            reg, kl_logs = self.kl_options.regularizer(kl, layer_kl, len(label), self.step)
            g = generator_losses(pred_fake, pred_real, fake, image, kl * self.world, parts.weights, parts.perceptual,
                                 kl_reg=None if self.kl_options.paper else reg * self.world)
        self._check_finite(g)
        parts.scaler.scale(g["g_total"]).backward()
        parts.scaler.step(parts.opt_g)
        nets.D.requires_grad_(True)

        # discriminator, on the same fake (detached)
        parts.opt_d.zero_grad(set_to_none=True)
        with parts.autocast():
            pred = parts.d_model(label, torch.cat([fake.detach(), image]))     # one label batch for both halves
            d = discriminator_losses(*split_batch(pred, len(label)))
        self._check_finite(d)
        parts.scaler.scale(d["d_hinge"]).backward()
        parts.scaler.step(parts.opt_d)
        parts.scaler.update()
        self.step += 1
        self.last_fake = fake.detach()
        per_image = (layer_kl.detach() / len(label)).tolist()          # KL_l per image (this rank's batch)
        return {**{k: float(v.detach()) for k, v in {**g, **d}.items()},
                **{f"kl_l{i}": v for i, v in enumerate(per_image)}, **kl_logs,
                "lr_factor": self.lr_factor(self.step - 1)}

    def _check_finite(self, losses: dict):
        bad = [k for k, v in losses.items() if not torch.isfinite(torch.as_tensor(v)).all()]
        if bad:
            last = self.checkpoints.latest() if self.checkpoints is not None else None
            raise TrainingDiverged(
                f"loss {', '.join(bad)} became NaN/Inf at step {self.step}; stopped without saving. The last good "
                f"checkpoint is {last or 'none (no checkpoint yet)'}. Fix: lower the learning rates, use fp32 or bf16 "
                "instead of fp16, or check the data for broken images.")


class Trainer:
    """A run: built parts + data + the loop (`fit`), checkpoints and logs in `run_dir`. For a variant of the
    cimle family, `Trainer(cfg)` is an `smis.imle.IMLETrainer` (same run machinery, the IMLE step)."""

    def __new__(cls, cfg: TrainConfig, *args, **kwargs):
        if cls is Trainer and VARIANTS[cfg.variant].family == "cimle":
            from smis.imle import IMLETrainer   # in the function: smis.imle builds on this module (a cycle otherwise)
            return super().__new__(IMLETrainer)
        return super().__new__(cls)

    def __init__(self,
                 cfg: TrainConfig,                          # the run's options
                 parts: TrainingParts | None = None,        # None: smis.build.build(cfg) on cfg.device
                 dataset: torch.utils.data.Dataset | None = None,   # None: cfg's data set (make_train_dataset)
                 ):
        self.cfg = cfg
        self.device, self.rank, self.world = setup_distributed(pick_device(cfg.device) if parts is None
                                                                else parts.device)
        configure_backends(self.device, cfg)
        self.is_main = self.rank == 0
        self.run_dir = resolve(cfg.run_dir)
        self.preset = get_preset(cfg.preset, **cfg.preset_overrides)
        self.batch = cfg.batch_size or self.preset.batch_size
        if self.batch % self.world:
            raise ValueError(f"batch size {self.batch} is not divisible by the {self.world} processes; pick a multiple")
        self.local_batch = self.batch // self.world
        self.dataset = make_train_dataset(cfg, self.preset) if dataset is None else dataset
        self.parts = build(cfg, self.device, self.world) if parts is None else parts
        cache = getattr(self.parts.perceptual, "real_cache", None)
        if cache is not None:                   # the distinct real images of the run: its data, flipped or not
            cache.expected_images = distinct_training_images(self.dataset, cfg.flip)    # inf with random crops
        self.checkpoints = Checkpointer(self.run_dir, cfg.keep_last, self.device)
        total, decay = schedule(cfg, self.preset, len(self.dataset), self.batch)
        self.train_step = TrainStep(cfg, self.parts, total, decay, self.batch, self.rank, self.world, self.checkpoints)
        self.resumed_from: dict | None = None
        self._wall_before, self._wall_start = 0.0, time.perf_counter()
        self._stop_signal: int | None = None            # set by a SIGTERM / SIGINT during fit

    @property
    def nets(self) -> Networks:
        return self.parts.nets

    @property
    def perceptual_name(self) -> str:
        return self.parts.perceptual_name

    @property
    def step(self) -> int:
        return self.train_step.step

    @property
    def total_steps(self) -> int:
        return self.train_step.total_steps

    def wall_time(self) -> float:
        """Training wall time in seconds, summed over resumed runs."""
        return self._wall_before + time.perf_counter() - self._wall_start

    # -- checkpoints -----------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {"format": CKPT_FORMAT, "step": self.step, "wall_time_s": self.wall_time(),
                "config": plain_data(asdict(self.cfg)), "preset": plain_data(asdict(self.preset)),
                "variant": self.cfg.variant, "perceptual": str(self.perceptual_name), **self.parts.state_dict(),
                "rng": rng_state()}

    def save_checkpoint(self) -> Path:
        return self.checkpoints.save(self.step, self.state_dict())

    def load_checkpoint(self, path: Path | str, ck: dict | None = None):
        """Restore networks, optimisers, scaler, RNG states and step from `path` (read with weights_only=True;
        `ck`: its already-read contents). Refuses a checkpoint whose options differ (ResumeMismatch)."""
        ck = self.checkpoints.load(path) if ck is None else ck
        conflicts = resume_conflicts(ck.get("config", {}), self.cfg)
        if conflicts:
            raise ResumeMismatch(
                f"cannot resume {self.run_dir} from {Path(path).name}: options differ from the checkpoint's:\n  "
                + "\n  ".join(conflicts) + f"\nOnly {', '.join(RESUME_MAY_CHANGE)} may change on resume. Fix: pass "
                "the run's original options (its config.json lists them), or start a new run with another --run-dir.")
        self.parts.load_state_dict(ck)
        set_rng_state(ck["rng"])
        self.train_step.step = int(ck["step"])
        self._wall_before = float(ck.get("wall_time_s", 0.0))
        self.resumed_from = {"checkpoint": Path(path).name, "step": self.step,
                             "changed": {k: [ck["config"].get(k), v] for k, v in asdict(self.cfg).items()
                                         if k in ck.get("config", {}) and plain_data(ck["config"][k]) != plain_data(v)}}

    # -- the loop --------------------------------------------------------------------------------
    def fit(self,
            resume: bool = False,    # continue from the newest intact checkpoint
            callback=None,           # callback(trainer, step, losses) at every log step (e.g. a live plot)
            fresh: bool = False,     # start anew: delete a previous run's files first (smis.rundir.clear_run)
            ) -> Path:
        """Train to `total_steps`. The run directory is locked for the whole run (smis.rundir): a second run on
        it is refused, and `fresh` deletes nothing while another process holds the folder, nor in a folder that
        holds no smis run. SIGTERM / SIGINT stop the run cleanly (TrainingStopped; see the module docstring)."""
        if resume and fresh:
            raise ValueError("fit(resume=True, fresh=True): choose one (continue the run, or start it anew)")
        lock = RunDirLock(self.run_dir).acquire() if self.is_main else None
        handlers = self._catch_signals()
        try:
            if fresh and self.is_main:
                removed = clear_run(self.run_dir)
                if removed:
                    print(f"[smis.train] fresh start: deleted the previous run's {', '.join(removed)} in "
                          f"{self.run_dir}", file=sys.stderr, flush=True)
            self._start(resume)
            with RunLog(self.run_dir, self.step, self.cfg.tensorboard) if self.is_main else _NoLog() as log:
                self._loop(log, callback)
            if self.world > 1:
                self._check_ranks_in_sync()
            return self.run_dir
        finally:
            for signum, handler in handlers.items():
                signal.signal(signum, handler)
            if lock is not None:
                lock.release()

    def _catch_signals(self) -> dict:
        """Turn SIGTERM and SIGINT into a clean stop (single process, main thread only); the handlers replaced."""
        self._stop_signal = None
        if self.world > 1 or threading.current_thread() is not threading.main_thread():
            return {}
        old = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
        for s in old:
            signal.signal(s, self._on_signal)
        return old

    def _on_signal(self, signum, frame) -> None:
        name = signal.Signals(signum).name
        if self._stop_signal is not None:   # a second signal: abandon the step (atomic writes delete their temporary)
            self._stop_signal = signum
            raise TrainingStopped(self._stopped_message(signum, saved=None), signum)
        self._stop_signal = signum
        print(f"\n[smis.train] {name}: stopping after the step in progress (saving a checkpoint); send it again "
              "to stop at once", file=sys.stderr, flush=True)

    def _stopped_message(self, signum: int, saved: Path | None) -> str:
        name = signal.Signals(signum).name
        if saved is not None:
            return (f"{name}: stopped at step {self.step}; rerun with --resume to continue from {saved} "
                    "(the lock is released).")
        latest = self.checkpoints.latest()
        return (f"{name}: stopped at step {self.step} without saving it (a second signal); rerun with --resume to "
                f"continue from {latest or 'the start (no checkpoint yet)'} (the lock is released).")

    def _start(self, resume: bool) -> None:
        """Resume (or refuse to overwrite a run), then write config.json and the start line (rank 0)."""
        self.resumed_from = None
        if self.is_main:   # under the lock: no live run is writing these
            stale = remove_stale_temporaries(self.run_dir)
            if stale:
                print(f"[smis.train] deleted {len(stale)} temporary file(s) of an interrupted write "
                      f"({sum(n for _, n in stale) / 2**20:.1f} MB): {', '.join(p.name for p, _ in stale)}",
                      file=sys.stderr, flush=True)
        if resume:
            path, ck = self.checkpoints.load_latest_intact()
            if path is not None:
                self.load_checkpoint(path, ck)
                if self.is_main:
                    print(f"[smis.train] resumed from {path} (step {self.step} of {self.total_steps})", file=sys.stderr,
                          flush=True)
                    retimed = self._retimed_decay(ck.get("config", {}))
                    if retimed:
                        print(f"[smis.train] WARNING: {retimed}", file=sys.stderr, flush=True)
            elif self.is_main:
                print(f"[smis.train] --resume: {self.run_dir} has no checkpoint yet; starting at step 0",
                      file=sys.stderr, flush=True)
        elif self.checkpoints.latest() is not None and self.is_main:
            raise FileExistsError(f"{self.run_dir} already holds checkpoints. Fix: pass --resume to continue, or use "
                                  "another --run-dir.")
        if self.is_main:
            self._write_config()
            print(f"[smis.train] {self.cfg.variant} on {self.cfg.dataset} ({self.preset.name} preset), "
                  f"{self.total_steps} steps, batch {self.batch} on {self.world} x {device_name(self.device)}, "
                  f"perceptual: {self.perceptual_name}", flush=True)

    def _retimed_decay(self, old: dict) -> str | None:
        """What a changed schedule does to the learning rate on resume (None when the schedule is unchanged)."""
        if not self.cfg.lr_decay or "steps" not in old or self.train_step.decay_start is None:
            return None     # no decay, an old config, or cIMLE (its rate drops by round, whatever the total)
        try:
            was = TrainConfig(**{**asdict(self.cfg), "steps": old["steps"],
                                 "decay_start": old.get("decay_start", self.cfg.decay_start)})
        except (TypeError, ValueError):
            return None
        total, decay = schedule(was, self.preset, len(self.dataset), self.batch)
        if (total, decay) == (self.total_steps, self.train_step.decay_start):
            return None
        before = TrainStep(was, self.parts, total, decay, self.batch).lr_factor(self.step)
        now = self.train_step.lr_factor(self.step)
        return (f"the schedule changed from {total} steps (decay from step {decay}) to {self.total_steps} (decay from "
                f"step {self.train_step.decay_start}): the learning-rate decay is re-timed, its factor at step "
                f"{self.step} is {now:.3g} (it was {before:.3g} on the old schedule) and reaches 0 at step "
                f"{self.total_steps}.")

    def _write_config(self) -> None:
        """config.json: the options, the resume history and what they resolved to."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        history = []
        if self.resumed_from is not None and (self.run_dir / "config.json").exists():
            try:
                history = json.loads((self.run_dir / "config.json").read_text()).get("resumes", [])
            except (json.JSONDecodeError, AttributeError):
                history = []
        if self.resumed_from is not None:
            history = history + [{**self.resumed_from, "time": time.strftime("%Y-%m-%d %H:%M:%S")}]
        atomic_write_json({**asdict(self.cfg), "resumes": history, "resolved": self.resolved()},
                          self.run_dir / "config.json")

    def resolved(self) -> dict:
        """What the options resolved to (config.json's "resolved")."""
        return {"device": str(self.device), "device_name": device_name(self.device), "world_size": self.world,
                "global_batch": self.batch, "total_steps": self.total_steps, "decay_start": self.train_step.decay_start,
                "perceptual": self.perceptual_name, "preset": asdict(self.preset), "torch": torch.__version__,
                "loss_weights": asdict(self.parts.weights), "params": self.nets.param_counts()}

    def _loop(self, log: RunLog, callback) -> None:
        cfg = self.cfg
        sampler = StepSampler(len(self.dataset), self.batch, cfg.seed, self.step, self.total_steps, self.rank,
                              self.world)
        loader = torch.utils.data.DataLoader(SeededSamples(self.dataset), batch_size=self.local_batch, sampler=sampler,
                                             num_workers=cfg.num_workers, collate_fn=collate, drop_last=False,
                                             pin_memory=self.device.type == "cuda", persistent_workers=False)
        self.nets.train()
        self._wall_start = t0 = time.perf_counter()
        batches = iter(loader)
        with tqdm(total=self.total_steps, initial=self.step, disable=not (cfg.progress and self.is_main),
                  desc=f"train {cfg.variant}", dynamic_ncols=True) as bar:
            for seen in itertools.count(1):
                try:
                    batch = next(batches)
                except StopIteration:
                    break
                except Exception:   # e.g. DataLoader workers ended by the same Ctrl-C
                    if self._stop_signal is None:
                        raise
                    raise TrainingStopped(self._stopped_message(self._stop_signal, saved=None),
                                          self._stop_signal) from None
                image = batch["image"].to(self.device, non_blocking=True)
                label = batch["label"].to(self.device, non_blocking=True)
                try:
                    losses = self.train_step(image, label)
                except torch.cuda.OutOfMemoryError as e:
                    raise RuntimeError(f"CUDA out of memory at batch size {self.batch} ({self.local_batch} per GPU). "
                                       f"Fix: try --batch-size {max(self.world, self.batch // 2)}, --precision bf16, "
                                       "or --no-channels-last.") from e
                losses["images_per_s"] = ips = seen * self.batch / (time.perf_counter() - t0)
                bar.update(1)
                bar.set_postfix(g=f"{losses['g_total']:.2f}", d=f"{losses['d_hinge']:.2f}", kl=f"{losses['kl']:.1f}",
                                ips=f"{ips:.1f}")
                self._after_step(log, callback, losses, image, label)

    def _after_step(self, log: RunLog, callback, losses: dict, image, label) -> None:
        """After an iteration (rank 0): log scalars, the sample grid and save a checkpoint when due; after a
        SIGTERM / SIGINT, save the step reached and stop (TrainingStopped)."""
        cfg, step = self.cfg, self.step
        last = step == self.total_steps
        if self.is_main and (step % cfg.log_every == 0 or last):
            log.scalars(step, losses)
            if callback is not None:
                callback(self, step, losses)
        if self.is_main and cfg.tensorboard and cfg.image_every and step % cfg.image_every == 0:
            log.image("mask|real|fake|prior samples", self.sample_grid(image, label), step)
        saved = None
        if self.is_main and (step % cfg.ckpt_every == 0 or last):
            saved = self.save_checkpoint()
        if self._stop_signal is not None and not last:
            saved = saved or self.save_checkpoint()
            raise TrainingStopped(self._stopped_message(self._stop_signal, saved), self._stop_signal)

    @torch.no_grad()
    def _check_ranks_in_sync(self):
        """All-gather a fingerprint of every rank's parameters; rank 0 writes ddp_check.json; error if they differ."""
        params = [p.detach().double() for m in (self.nets.G, self.nets.E, self.nets.D) if m is not None
                  for p in m.parameters()]
        fp = torch.stack([sum(p.sum() for p in params), sum((p * p).sum() for p in params)]).to(self.device)
        allfp = [torch.zeros_like(fp) for _ in range(self.world)]
        dist.all_gather(allfp, fp)
        prints = [[float(v) for v in f.cpu()] for f in allfp]
        if self.is_main:
            atomic_write_json({"world_size": self.world, "step": self.step, "fingerprints": prints},
                              self.run_dir / "ddp_check.json")
        if any(p != prints[0] for p in prints):
            raise RuntimeError(f"DDP ranks diverged at step {self.step}: parameter fingerprints {prints}")

    @torch.no_grad()
    def sample_grid(self, image, label, n: int = 4, samples: int = 3) -> torch.Tensor:
        """(3, H', W') grid in [0, 1]: per row mask | real | the last training fake | prior samples
        (`smis.sampling.sample_prior`, seed 0; one sample for gaugan)."""
        was = self.nets.training
        self.nets.eval()
        n = min(n, len(label))
        lab = label[:n]
        g = torch.Generator(device=lab.device).manual_seed(0)
        outs = sample_prior(self.nets, lab, samples, g)                 # (n, k, 3, H, W); k = 1 for gaugan
        mask = torch.from_numpy(colorize(lab, self.dataset.info.palette)).permute(0, 3, 1, 2).float().div(127.5).sub(1)
        rows = [torch.cat([mask[i].to(image.device), image[i].float(), self.train_step.last_fake[i].float(),
                           *outs[i].float()], dim=2) for i in range(n)]
        self.nets.train(was)
        return (torch.cat(rows, dim=1).clamp(-1, 1) + 1) / 2


def train_variants(variants: Sequence[str],          # smis.networks.VARIANTS keys, trained one after the other
                   run_root: str | Path,               # their run folders: <run_root>/<variant>_s<steps>_b<batch>
                   base: TrainConfig,                  # every other option (its run_dir and variant are replaced)
                   log: Callable[[str], None] = print,  # "<variant>: <seconds> s" after each
                   ) -> dict[str, tuple[str, float]]:
    """Train every variant with the same options (notebook 05's ablations trained in the notebook), each in its own
    run folder named by its steps and batch, so that a rerun resumes it or reuses it once finished.
    Returns {variant: (run folder, wall seconds)}."""
    runs = {}
    for v in variants:
        cfg = replace(base, run_dir=f"{run_root}/{v}_s{base.steps}_b{base.batch_size}", variant=v)
        t0 = time.perf_counter()
        Trainer(cfg).fit(resume=True)
        runs[v] = (cfg.run_dir, time.perf_counter() - t0)
        log(f"{v}: {runs[v][1]:.0f} s")
    return runs


class _NoLog:
    """RunLog's stand-in on ranks other than 0 (they log nothing)."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return None


# ---------------------------------------------------------------------------------------------
# Command line (generated from TrainConfig's fields: smis.options)


def parse_args(argv=None) -> tuple[TrainConfig, bool]:
    """(TrainConfig, resume) from the command line; bad values end with argparse's usage error (exit 2)."""
    p = argparse.ArgumentParser(prog="python -m smis.train", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_arguments(p)
    p.add_argument("--resume", action="store_true", help="continue from the run's latest checkpoint")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    a = vars(p.parse_args(argv))
    resume, threads = a.pop("resume"), a.pop("threads")
    if threads is not None and threads < 1:
        p.error(f"--threads {threads}: give at least 1")
    if threads:
        torch.set_num_threads(threads)
    a["preset_overrides"] = parse_overrides(p, a["preset_overrides"], a["preset"])
    a["imle"] = parse_assignments(p, a["imle"], "--imle")
    try:
        cfg = TrainConfig(**a)
    except ValueError as e:   # TrainConfig's checks, e.g. "training option keep_last=0: must be an integer >= 1"
        p.error(str(e))
    return cfg, resume


def main(argv=None) -> int:
    cfg, resume = parse_args(argv)
    try:
        Trainer(cfg).fit(resume=resume)
    except TrainingStopped as e:
        print(f"[smis.train] {e}", file=sys.stderr)
        return 128 + e.signum
    except TrainingDiverged as e:
        print(f"[smis.train] STOPPED: {e}", file=sys.stderr)
        return 3
    except PermissionError as e:
        if show_tracebacks():
            raise
        print(f"[smis.train] ERROR: cannot write {e.filename or cfg.run_dir}: {e.strerror or e}. Fix: choose a "
              "--run-dir you may write to (SMIS_TRACEBACK=1 shows the traceback).", file=sys.stderr)
        return 2
    except (RunDirBusy, ResumeMismatch, CheckpointError, FileExistsError, FileNotFoundError, DatasetError) as e:
        if show_tracebacks():
            raise
        print(f"[smis.train] ERROR: {e} (SMIS_TRACEBACK=1 shows the traceback)", file=sys.stderr)
        return 2
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    # run the imported module's main, not this __main__ copy: smis.imle's IMLETrainer subclasses (and raises the
    # errors of) smis.train, so `python -m smis.train --variant cimle` must use the same classes
    from smis.train import main as _main
    sys.exit(_main())
