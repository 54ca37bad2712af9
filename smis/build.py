"""Everything a training step needs, built from a TrainConfig alone (no data set).

    parts = build(TrainConfig(variant="clvae", preset="ade20k", precision="bf16"), device="cuda")
    parts.nets, parts.opt_g, parts.opt_d, parts.scaler, parts.perceptual      # what smis.train.Trainer trains

Networks (seeded by `cfg.seed`, SyncBatchNorm for several CUDA ranks, channels_last), Adam optimisers at
the published code's rates (or the paper's text's, `paper_text_lr`), the fp16 GradScaler, the autocast
dtype, the loss weights and perceptual network, and the DDP / torch.compile wrappers. The benchmarks
build exactly this and time `smis.train.TrainStep` on it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from smis.backbones import ImageFeatureCache
from smis.config import Preset, get_preset
from smis.losses import PerceptualLoss, make_perceptual_loss
from smis.networks import VARIANTS, Networks, build_networks
from smis.objective import GeneratorStep, LossWeights
from smis.options import TrainConfig
from smis.utils import pick_device

AUTOCAST_DTYPES = {"fp32": None, "bf16": torch.bfloat16, "bf16-g": torch.bfloat16, "bf16-g-coarse": torch.bfloat16,
                   "fp16": torch.float16}
# the networks a precision keeps in float32 inside its autocast region ("G_tail": Generator.float32_tail, G's
# full-resolution blocks and output convolution)
FLOAT32_NETS = {"bf16-g": ("E", "D"), "bf16-g-coarse": ("E", "D", "G_tail")}


class Float32Forward(nn.Module):
    """`module` called in float32 inside an autocast region: autocast off, floating tensor arguments cast to float32.

    `--precision bf16-g` wraps D's calls in it (not D itself: checkpoints and state dicts keep their keys). On this
    CPU D and E (16-channel convolutions) run no faster in bf16 (benchmarks/RESULTS.md, issue 26), and feature
    matching is an L1 of differences of D's features, which bf16 rounds to 3 significant digits.
    """

    def __init__(self, module: nn.Module):
        super().__init__()
        self.module = module

    def forward(self, *args):
        device = next(self.module.parameters()).device.type
        with torch.autocast(device, enabled=False):
            return self.module(*(a.float() if torch.is_tensor(a) and a.is_floating_point() else a for a in args))


@dataclass
class TrainingParts:
    """The built objects of a run; `g_model` / `d_model` are what the steps call (DDP / compiled)."""

    preset: Preset                          # the resolved preset (cfg.preset + cfg.preset_overrides)
    device: torch.device
    nets: Networks                          # G, E (None for gaugan), D: the plain modules (checkpointed)
    gstep: GeneratorStep                    # G and E as one module (one DDP unit)
    g_model: nn.Module                      # gstep, DDP-wrapped (world > 1) and/or compiled
    d_model: nn.Module                      # D, DDP-wrapped and/or compiled: the D step
    d_plain: nn.Module                      # D without DDP (compiled if cfg.compile): the frozen D of the G step
    opt_g: torch.optim.Optimizer            # Adam over G and E
    opt_d: torch.optim.Optimizer            # Adam over D
    base_lr: tuple[float, float]            # (G/E, D) learning rates before the schedule's factor
    scaler: torch.amp.GradScaler            # enabled for fp16 only
    autocast_dtype: torch.dtype | None      # None: fp32, no autocast
    weights: LossWeights                    # the lambdas of Eq. 7
    perceptual: nn.Module | None            # perceptual loss network, None without the term
    perceptual_name: str                    # its backbone's name ("none" without)

    def autocast(self):
        """The forward passes' autocast context (a no-op in fp32)."""
        return torch.autocast(self.device.type, dtype=self.autocast_dtype, enabled=self.autocast_dtype is not None)

    def state_dict(self) -> dict:
        """Networks, optimisers and scaler (the trained state of a checkpoint)."""
        return {"G": self.nets.G.state_dict(), "E": None if self.nets.E is None else self.nets.E.state_dict(),
                "D": self.nets.D.state_dict(), "opt_g": self.opt_g.state_dict(), "opt_d": self.opt_d.state_dict(),
                "scaler": self.scaler.state_dict()}

    def load_state_dict(self, ck: dict) -> None:
        """Inverse of state_dict (extra keys of a checkpoint are ignored)."""
        self.nets.G.load_state_dict(ck["G"])
        if self.nets.E is not None:
            self.nets.E.load_state_dict(ck["E"])
        self.nets.D.load_state_dict(ck["D"])
        load_optimizer(self.opt_g, ck["opt_g"])
        load_optimizer(self.opt_d, ck["opt_d"])
        self.scaler.load_state_dict(ck["scaler"])


def make_adam(params,                                # the parameters (an iterable, as torch.optim takes)
              lr: float,                             # learning rate
              betas: tuple[float, float],            # Adam's (beta1, beta2)
              fused: bool,                           # torch's fused kernel (not bitwise the others' numbers)
              **kw,                                  # more torch.optim.Adam options (eps)
              ) -> torch.optim.Adam:
    """Adam, fused or torch's default implementation (on the CPU a per-tensor loop). foreach computes the loop's
    numbers bit for bit but is slower on the CPU once glibc keeps freed memory (smis.utils.keep_freed_memory):
    SynthScenes' 6.6 M channels_last parameters, one quiet core, 11.2 ms loop vs 12.6 foreach vs 7.4 fused a step
    (`benchmarks/bench_adam.py`, benchmarks/RESULTS.md, issue 26)."""
    return torch.optim.Adam(params, lr=lr, betas=tuple(float(b) for b in betas), **({"fused": True} if fused else {}),
                            **kw)


def load_optimizer(opt: torch.optim.Optimizer, state: dict) -> None:
    """opt.load_state_dict(state), keeping opt's implementation (foreach / fused): torch restores those flags
    from the file too, so a run resumed with `--fused-adam` changed (a RESUME_MAY_CHANGE option) kept the old one."""
    impl = [{k: g.get(k) for k in ("foreach", "fused")} for g in opt.param_groups]
    opt.load_state_dict(state)
    for group, flags in zip(opt.param_groups, impl):
        group.update(flags)


def kl_weight(cfg: TrainConfig) -> float | None:
    """lambda_KL of a run: --kl-weight, else the variant's (gaugan_vae_lowkl), else None (the preset's)."""
    return cfg.kl_weight if cfg.kl_weight is not None else VARIANTS[cfg.variant].kl_weight


def build(cfg: TrainConfig,                                   # the run's options
          device: torch.device | str | None = None,           # None: pick_device(cfg.device)
          world: int = 1,                                     # processes (DDP wrappers when > 1; group joined)
          perceptual: Callable[[], nn.Module] | None = None,  # makes the perceptual net instead of cfg's
          ) -> TrainingParts:
    """Build the parts of a run from `cfg`. `perceptual` (benchmarks: VGG19's shape without its ImageNet
    file) is called, at the point where cfg.perceptual's network would be loaded (same RNG stream), instead
    of loading it; either is used only when cfg.perceptual is not "none" and the preset's lambda_P > 0, and
    named by its `.backbone` attribute."""
    if VARIANTS[cfg.variant].family == "cimle":     # the spade and groupdnet families train with the GAN step
        raise ValueError(f"build() makes the parts of the GAN step; variant {cfg.variant!r} (family 'cimle') trains "
                         "with IMLE. Fix: smis.imle.build_imle(cfg), or smis.train.Trainer(cfg), which picks the "
                         "right one")
    device = pick_device(cfg.device) if device is None else torch.device(device)
    preset = get_preset(cfg.preset, **cfg.preset_overrides)
    torch.manual_seed(cfg.seed)  # weight init
    nets = build_networks(cfg.variant, preset, device=device)
    if world > 1 and device.type == "cuda":
        nets.G = nn.SyncBatchNorm.convert_sync_batchnorm(nets.G)
    if cfg.channels_last:
        nets = nets.to(memory_format=torch.channels_last)
    float32 = FLOAT32_NETS.get(cfg.precision, ())
    if "G_tail" in float32:
        if not hasattr(nets.G, "float32_tail"):
            raise ValueError(f"--precision {cfg.precision} keeps the generator's full-resolution blocks in float32, "
                             f"which {type(nets.G).__name__} (variant {cfg.variant!r}) does not support. Fix: "
                             "--precision bf16-g or bf16")
        nets.G.float32_tail = True
    gstep = GeneratorStep(nets.G, nets.E, nets.spec, e_float32="E" in float32)
    lr_g, lr_d = (preset.lr_d, preset.lr_g) if cfg.paper_text_lr else (preset.lr_g, preset.lr_d)
    fused = (device.type == "cuda") if cfg.fused_adam is None else cfg.fused_adam
    opt_g = make_adam(list(gstep.parameters()), lr_g, preset.betas, fused)
    opt_d = make_adam(list(nets.D.parameters()), lr_d, preset.betas, fused)

    loss_net, name = None, "none"
    if cfg.perceptual != "none" and preset.lambda_perceptual > 0:
        loss_net = perceptual() if perceptual is not None else make_perceptual_loss(
            device, prefer="vgg19" if cfg.perceptual == "auto" else "efficientnet_lite0")
        name = str(loss_net.backbone)
        if cfg.channels_last:
            loss_net = loss_net.to(memory_format=torch.channels_last)
        if device.type == "cpu" and cfg.perceptual_cache_mb > 0 and isinstance(loss_net, PerceptualLoss):
            loss_net.real_cache = ImageFeatureCache(int(cfg.perceptual_cache_mb * 2**20))   # real images seen before

    g_model: nn.Module = gstep
    d_model: nn.Module = nets.D
    if world > 1:
        ids = [device.index] if device.type == "cuda" else None
        g_model = nn.parallel.DistributedDataParallel(gstep, device_ids=ids)
        d_model = nn.parallel.DistributedDataParallel(nets.D, device_ids=ids)
    d_plain: nn.Module = nets.D
    if "D" in float32:                              # D's calls in float32 (D's modules and state dict unchanged)
        d_model, d_plain = Float32Forward(d_model), Float32Forward(nets.D)
    if cfg.compile:
        g_model, d_model, d_plain = torch.compile(g_model), torch.compile(d_model), torch.compile(d_plain)
    return TrainingParts(preset=preset, device=device, nets=nets, gstep=gstep, g_model=g_model, d_model=d_model,
                         d_plain=d_plain, opt_g=opt_g, opt_d=opt_d, base_lr=(lr_g, lr_d),
                         scaler=torch.amp.GradScaler(device.type, enabled=cfg.precision == "fp16"),
                         autocast_dtype=AUTOCAST_DTYPES[cfg.precision], weights=LossWeights.of(preset, kl_weight(cfg)),
                         perceptual=loss_net, perceptual_name=name)
