"""Training cIMLE: the conditional IMLE objective with the authors' resampling schedule.

    python -m smis.train --variant cimle --preset synthscenes --run-dir outputs/runs/cimle   # 5,000 steps
    trainer = Trainer(TrainConfig(variant="cimle"))        # smis.train.Trainer hands cimle to IMLETrainer

Conditional IMLE (Li, Zhang and Malik, ICCV 2019; the authors' train.py): for each training
layout M_i with photo I_i, draw m codes eps_ij ~ N(0, I), keep the one whose output is nearest to the
photo in the perceptual distance d (`smis.losses.IMLEDistance`),

    eps_i* = argmin_j d(G(M_i, eps_ij), I_i),

and minimise sum_i d(G(M_i, eps_i*), I_i) over G. The nearest codes are recomputed once per round:

    round r (every `resample_every` = L steps): a pool of `pool_size` = K layouts (the next K of the
        seeded epoch-wise permutation, `smis.train.StepSampler`), m codes each, the nearest kept;
    each step: `batch_size` pool members (seeded by step), one Adam step on their mean distance;
    after round `reinit_round`: the noise encoder re-initialised, Adam's moments reset, lr x lr_drop.

GTA-5 (`smis.networks.crn.CIMLE_SETTINGS`): K = 400, m = 10, L = 10,000, batch 1, 16 rounds, Adam 1e-4
(TF defaults) -> 1e-5 after round 5. Not ported: the authors start from a pretrained CRN, and on GTA-5
they rebalance by colour rarity (images drawn by KDE rarity of class mean colours, pixels weighted by
a rarity mask; `IMLEDistance` takes such pixel weights, nothing computes them here).

Exact resume: pool members, codes and batches are functions of (seed, round, step); a checkpoint holds,
besides the weights, Adam and RNG states, the pool's round and its K chosen code indices, so a resumed
run regenerates the same codes and ends with the same weights as an uninterrupted one.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass

import torch
from tqdm.auto import tqdm

from smis.build import AUTOCAST_DTYPES, load_optimizer, make_adam
from smis.checkpoint import Checkpointer
from smis.config import Preset, get_preset
from smis.data import collate
from smis.losses import IMLEDistance, make_imle_distance
from smis.networks import Latents, Networks, build_networks
from smis.networks.crn import CIMLESettings, cimle_settings
from smis.options import TrainConfig
from smis.sampling import chunks, prior_latents
from smis.train import (SeededSamples, StepSampler, Trainer, TrainingDiverged, configure_backends, dist_info,
                        make_train_dataset)
from smis.utils import device_name, pick_device, resolve


def imle_settings(preset: Preset, overrides: dict | None = None) -> CIMLESettings:
    """The preset's cIMLE settings (`cimle_settings`) with schedule fields from `overrides` (--imle)."""
    return cimle_settings(preset.name).with_schedule(overrides)


# ---------------------------------------------------------------------------------------------
# The nearest-sample selection (vectorised over layouts and samples)


@torch.no_grad()
def nearest_samples(G: torch.nn.Module,           # generator: G(label, latents) -> (N, 3, H, W)
                    distance: IMLEDistance,       # d, per sample
                    label: torch.Tensor,          # (B, H, W) layouts
                    image: torch.Tensor,          # (B, 3, H, W) their photos in [-1, 1]
                    latents: Latents,             # B m candidate codes, mask-major (sampling.prior_latents)
                    samples: int,                 # m, candidates per layout
                    chunk: int = 64,              # images per G call
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """(choice (B,) int64, distances (B, m)): for each layout the index j of its candidate nearest to its photo,
    argmin_j d(G(M_i, eps_ij), I_i), and all the distances. The photos' features are computed once per layout."""
    B = label.shape[0]
    if latents.batch_size != B * samples:
        raise ValueError(f"{latents.batch_size} candidate codes for {B} layouts x {samples} samples; draw them with "
                         "smis.sampling.prior_latents(nets, label, samples, seeds)")
    per = max(1, chunk // samples)                                      # layouts per G call
    out = []
    for s in chunks(B, per):
        rows = slice(s.start * samples, s.stop * samples)
        fake = G(label[s].repeat_interleave(samples, 0), latents[rows])              # (n m, 3, H, W)
        real = [f.repeat_interleave(samples, 0) for f in distance.features(image[s])]
        out.append(distance.between(distance.features(fake), real).view(-1, samples))   # (n, m)
    d = torch.cat(out)                                                  # (B, m)
    return d.argmin(1), d


# ---------------------------------------------------------------------------------------------
# Parts and the step


@dataclass
class IMLEParts:
    """The built objects of a cIMLE run (what `IMLEStep` trains and the checkpoint holds)."""

    preset: Preset
    settings: CIMLESettings                 # network sizes + the schedule (with --imle overrides)
    device: torch.device
    nets: Networks                          # G only (E and D are None)
    g_model: torch.nn.Module                # G, compiled with cfg.compile
    opt: torch.optim.Optimizer              # Adam over G
    scaler: torch.amp.GradScaler            # enabled for fp16 only
    autocast_dtype: torch.dtype | None
    distance: IMLEDistance                  # the perceptual distance d
    perceptual_name: str                    # its backbone

    def autocast(self):
        return torch.autocast(self.device.type, dtype=self.autocast_dtype, enabled=self.autocast_dtype is not None)

    def state_dict(self) -> dict:
        return {"G": self.nets.G.state_dict(), "E": None, "D": None, "opt_g": self.opt.state_dict(),
                "scaler": self.scaler.state_dict()}

    def load_state_dict(self, ck: dict) -> None:
        self.nets.G.load_state_dict(ck["G"])
        load_optimizer(self.opt, ck["opt_g"])
        self.scaler.load_state_dict(ck["scaler"])


def build_imle(cfg: TrainConfig,                              # the run's options (variant cimle)
               device: torch.device | str | None = None,      # None: pick_device(cfg.device)
               distance: IMLEDistance | None = None,          # the distance to use instead of cfg.perceptual's
               ) -> IMLEParts:
    """G (seeded by cfg.seed), Adam at the settings' rate (TF's defaults: betas (0.9, 0.999), eps 1e-8), the
    scaler and the distance: VGG19 when cached and cfg.perceptual is "auto", else EfficientNet-Lite0."""
    device = pick_device(cfg.device) if device is None else torch.device(device)
    preset = get_preset(cfg.preset, **cfg.preset_overrides)
    settings = imle_settings(preset, cfg.imle_overrides())
    torch.manual_seed(cfg.seed)
    nets = build_networks(cfg.variant, preset, device=device)
    if cfg.channels_last:
        nets = nets.to(memory_format=torch.channels_last)
    fused = (device.type == "cuda") if cfg.fused_adam is None else cfg.fused_adam
    opt = make_adam(nets.G.parameters(), settings.lr, (0.9, 0.999), fused, eps=1e-8)
    if distance is None:
        distance = make_imle_distance(device, prefer="vgg19" if cfg.perceptual == "auto" else "efficientnet_lite0")
    g_model = torch.compile(nets.G) if cfg.compile else nets.G
    return IMLEParts(preset=preset, settings=settings, device=device, nets=nets, g_model=g_model, opt=opt,
                     scaler=torch.amp.GradScaler(device.type, enabled=cfg.precision == "fp16"),
                     autocast_dtype=AUTOCAST_DTYPES[cfg.precision], distance=distance,
                     perceptual_name=str(getattr(distance, "backbone", type(distance.extractor).__name__)))


class IMLEStep:
    """One cIMLE iteration (module docstring): at a round's first step the pool's nearest codes are found (and,
    after `reinit_round`, the noise encoder re-initialised first), then one Adam step on a batch of pool members.
    `optimize(image, label, latents)` is the gradient step alone, for any batch (tests, benchmarks)."""

    def __init__(self,
                 cfg: TrainConfig,                  # seed, precision
                 parts: IMLEParts,                  # build_imle(cfg)
                 total_steps: int,                  # the run's length
                 batch: int,                        # pool members per step
                 dataset: torch.utils.data.Dataset | None = None,   # training pairs (None: optimize() only)
                 checkpoints: Checkpointer | None = None,           # named in the divergence message
                 ):
        self.cfg, self.parts, self.settings = cfg, parts, parts.settings
        self.total_steps, self.batch, self.dataset, self.checkpoints = total_steps, batch, dataset, checkpoints
        if batch > self.settings.pool_size:
            raise ValueError(f"batch size {batch} exceeds the cIMLE pool of {self.settings.pool_size} layouts; lower "
                             "--batch-size or raise --imle pool_size=N")
        self.step = 0
        self.decay_start = None                     # (the GAN step's linear decay; IMLE drops lr once instead)
        self.pool_round: int | None = None          # round whose nearest codes `choice` holds
        self.choice: torch.Tensor | None = None     # (K,) int64 index of each pool member's nearest code
        self.pool_distance = float("nan")           # mean nearest distance at the last pool refresh
        self.last_fake: torch.Tensor | None = None

    # -- schedule ----------------------------------------------------------------------------------
    def round_of(self, step: int) -> int:
        return step // self.settings.resample_every

    def lr_factor(self, step: int) -> float:
        """1, then lr_drop from the round after `reinit_round` on."""
        r = self.settings.reinit_round
        return self.settings.lr_drop if r is not None and self.round_of(step) > r else 1.0

    # -- the pool ----------------------------------------------------------------------------------
    def pool_items(self, round_: int) -> list[tuple[int, int]]:
        """The K (dataset index, augmentation seed) of round `round_`: positions r K .. (r + 1) K - 1 of the
        run's seeded epoch-wise permutation stream (the GAN path's data order, K per 'step')."""
        return list(StepSampler(len(self.dataset), self.settings.pool_size, self.cfg.seed, round_, round_ + 1))

    def code_seeds(self, round_: int, members: torch.Tensor) -> list[int]:
        """The seed of each pool member's m candidate codes (a function of run seed, round and member)."""
        base = (self.cfg.seed * 9_973 + round_) * 1_000_003
        return [(base + int(i)) % (2**63 - 1) for i in members.tolist()]

    def load(self, items: list[tuple[int, int]]) -> tuple[torch.Tensor, torch.Tensor]:
        """(image (n, 3, H, W), label (n, H, W)) of dataset items, each augmented under its own seed."""
        data = SeededSamples(self.dataset)
        batch = collate([data[it] for it in items])
        return batch["image"].to(self.parts.device), batch["label"].to(self.parts.device)

    def candidates(self, round_: int, members: torch.Tensor, label: torch.Tensor) -> Latents:
        """The m candidate codes of each member, (n m) mask-major."""
        return prior_latents(self.parts.nets, label, self.settings.samples, self.code_seeds(round_, members))

    @torch.no_grad()
    def refresh_pool(self, round_: int, chunk: int = 64) -> None:
        """Find the nearest of m codes for each of the round's K layouts (G as it is now)."""
        items = self.pool_items(round_)
        choice, best = [], []
        for s in chunks(len(items), max(1, chunk // self.settings.samples)):
            image, label = self.load(items[s])
            members = torch.arange(s.start, s.stop)
            with self.parts.autocast():
                c, d = nearest_samples(self.parts.g_model, self.parts.distance, label, image,
                                       self.candidates(round_, members, label), self.settings.samples, chunk)
            choice.append(c.cpu())
            best.append(d.float().min(1).values.cpu())
        self.pool_round, self.choice = round_, torch.cat(choice)
        self.pool_distance = float(torch.cat(best).mean())

    def pool_batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor, Latents]:
        """(image, label, nearest codes) of the step's `batch` pool members (drawn without replacement, seeded)."""
        g = torch.Generator().manual_seed(self.cfg.seed * 7_919 + step)
        members = torch.randperm(self.settings.pool_size, generator=g)[: self.batch]
        items = self.pool_items(self.pool_round)
        image, label = self.load([items[i] for i in members.tolist()])
        codes = self.candidates(self.pool_round, members, label)                       # (n m)
        pick = torch.arange(len(members)) * self.settings.samples + self.choice[members]
        return image, label, codes[pick.to(label.device)]

    def reinit(self, round_: int) -> None:
        """After `reinit_round`: the noise encoder re-initialised (seeded by run seed and round) and Adam reset."""
        device = self.parts.device
        cuda = [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" \
            else []
        with torch.random.fork_rng(devices=cuda):              # the global RNG states are left as they were
            torch.manual_seed(self.cfg.seed * 31 + round_)
            self.parts.nets.G.reset_noise_encoder()
        self.parts.opt.state.clear()

    def pool_state(self) -> dict:
        return {"round": self.pool_round, "choice": self.choice, "distance": self.pool_distance}

    def load_pool_state(self, state: dict) -> None:
        self.pool_round, self.choice = state["round"], None if state["choice"] is None else state["choice"].cpu()
        self.pool_distance = float(state["distance"])

    # -- one iteration -----------------------------------------------------------------------------
    def optimize(self, image: torch.Tensor, label: torch.Tensor, latents: Latents) -> torch.Tensor:
        """One Adam step on mean_i d(G(M_i, eps_i), I_i); the (B,) distances before the step."""
        parts = self.parts
        for group in parts.opt.param_groups:
            group["lr"] = self.settings.lr * self.lr_factor(self.step)
        if self.cfg.channels_last:
            image = image.contiguous(memory_format=torch.channels_last)
        parts.opt.zero_grad(set_to_none=True)
        with parts.autocast():
            fake = parts.g_model(label, latents)
            d = parts.distance(fake, image)                                 # (B,)
            loss = d.float().mean()
        self._check_finite(loss)
        parts.scaler.scale(loss).backward()
        parts.scaler.step(parts.opt)
        parts.scaler.update()
        self.step += 1
        self.last_fake = fake.detach()
        return d.detach()

    def __call__(self) -> dict[str, float]:
        """The next iteration on the pool (refreshed at round starts); the losses as floats, plus lr_factor."""
        if self.dataset is None:
            raise ValueError("IMLEStep() draws from the pool and needs the training set: pass dataset=..., or call "
                             "optimize(image, label, latents) on a batch of your own")
        r = self.round_of(self.step)
        if self.pool_round != r:
            if self.step % self.settings.resample_every == 0 and self.settings.reinit_round is not None \
                    and r == self.settings.reinit_round + 1:
                self.reinit(r)
            self.refresh_pool(r)
        image, label, z = self.pool_batch(self.step)
        factor = self.lr_factor(self.step)
        d = self.optimize(image, label, z)
        return {"imle_distance": float(d.float().mean()), "pool_distance": self.pool_distance, "lr_factor": factor}

    def _check_finite(self, loss: torch.Tensor) -> None:
        if not torch.isfinite(loss):
            last = self.checkpoints.latest() if self.checkpoints is not None else None
            raise TrainingDiverged(
                f"loss imle_distance became NaN/Inf at step {self.step}; stopped without saving. The last good "
                f"checkpoint is {last or 'none (no checkpoint yet)'}. Fix: lower the learning rate (--imle lr=...), "
                "use fp32 or bf16 instead of fp16, or check the data for broken images.")


# ---------------------------------------------------------------------------------------------
# The run (smis.train.Trainer's checkpoints, lock, logs and config; this loop and step)


class IMLETrainer(Trainer):
    """A cIMLE run: `smis.train.Trainer` (lock, checkpoints, resume checks, losses.csv, TensorBoard, config.json)
    with `IMLEStep` as its iteration. One process (no DDP)."""

    def __init__(self,
                 cfg: TrainConfig,
                 parts: IMLEParts | None = None,        # None: build_imle(cfg) on cfg.device
                 dataset: torch.utils.data.Dataset | None = None,
                 ):
        if dist_info()[1] > 1:
            raise ValueError("cIMLE trains in one process: its pool step is not distributed. Fix: run "
                             "python -m smis.train --variant cimle ... without torchrun")
        self.cfg = cfg
        self.device, self.rank, self.world = (pick_device(cfg.device) if parts is None else parts.device), 0, 1
        configure_backends(self.device, cfg)
        self.is_main = True
        self.run_dir = resolve(cfg.run_dir)
        self.preset = get_preset(cfg.preset, **cfg.preset_overrides)
        self.parts = build_imle(cfg, self.device) if parts is None else parts
        self.batch = self.local_batch = self.parts.settings.batch_size
        self.dataset = make_train_dataset(cfg, self.preset) if dataset is None else dataset
        self.checkpoints = Checkpointer(self.run_dir, cfg.keep_last, self.device)
        total = int(cfg.steps) if cfg.steps is not None else self.parts.settings.total_steps
        self.train_step = IMLEStep(cfg, self.parts, total, self.batch, self.dataset, self.checkpoints)
        self.resumed_from: dict | None = None
        self._wall_before, self._wall_start = 0.0, time.perf_counter()

    def state_dict(self) -> dict:
        return {**super().state_dict(), "imle_pool": self.train_step.pool_state()}

    def load_checkpoint(self, path, ck: dict | None = None):
        ck = self.checkpoints.load(path) if ck is None else ck
        super().load_checkpoint(path, ck)
        self.train_step.load_pool_state(ck["imle_pool"])

    def resolved(self) -> dict:
        settings = asdict(self.parts.settings)
        out = {"device": str(self.device), "device_name": device_name(self.device), "world_size": 1,
               "global_batch": self.batch, "total_steps": self.total_steps, "perceptual": self.perceptual_name,
               "preset": asdict(self.preset), "torch": torch.__version__, "params": self.nets.param_counts()}
        out.update(imle=settings, schedule=(
            f"IMLE: nearest of {settings['samples']} codes for a pool of {settings['pool_size']} layouts every "
            f"{settings['resample_every']} steps; lr {settings['lr']}"
            + (f", x {settings['lr_drop']} and noise encoder re-initialised after round {settings['reinit_round']}"
               if settings["reinit_round"] is not None else "")))
        return out

    def _loop(self, log, callback) -> None:
        cfg = self.cfg
        self.nets.train()
        self._wall_start = t0 = time.perf_counter()
        first = self.step
        with tqdm(total=self.total_steps, initial=self.step, disable=not cfg.progress, desc=f"train {cfg.variant}",
                  dynamic_ncols=True) as bar:
            while self.step < self.total_steps:
                losses = self.train_step()
                losses["images_per_s"] = ips = (self.step - first) * self.batch / (time.perf_counter() - t0)
                bar.update(1)
                bar.set_postfix(d=f"{losses['imle_distance']:.3g}", ips=f"{ips:.1f}")
                self._after_step(log, callback, losses, *self._last_batch())

    def _last_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The last step's (image, label), regenerated only when a sample grid is due."""
        cfg, step = self.cfg, self.step
        if not (cfg.tensorboard and cfg.image_every and step % cfg.image_every == 0):
            return None, None
        image, label, _ = self.train_step.pool_batch(step - 1)
        return image, label

