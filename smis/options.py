"""Training options: every option declared once, in `TrainConfig`; the command line is generated from it.

    cfg = TrainConfig(variant="clvae", preset="synthscenes", steps=3000)     # the API
    p = add_config_arguments(argparse.ArgumentParser())                        # the CLI, same fields
    p.parse_args(["--variant", "clvae", "--steps", "3000", "--no-flip"])     # (smis.train.parse_args)

Each field's help text lives in its `metadata["help"]`; `add_config_arguments` turns field `name` into `--name`
(underscores as dashes), booleans into `--name/--no-name` (argparse.BooleanOptionalAction), and the preset
overrides dict into `--set FIELD=JSON ...`. `TrainConfig.__post_init__` checks every value, so the API and
the CLI reject the same things with the same message. A run's options are saved as `config.json`;
`resume_conflicts` lists what differs from a checkpoint's (only RESUME_MAY_CHANGE may).
"""
from __future__ import annotations

import argparse
import json
from dataclasses import MISSING, asdict, dataclass, field, fields

from smis.config import PRESETS, get_preset
from smis.data import DATASETS
from smis.networks import VARIANTS
from smis.networks.crn import cimle_settings
from smis.utils import plain_data

# Options that may differ when a run is resumed (recorded in config.json); every other option must
# equal the checkpoint's, or the resumed run would silently be another experiment.
RESUME_MAY_CHANGE = ("run_dir", "data_root", "steps", "device", "channels_last", "fused_adam", "keep_freed_memory",
                     "perceptual_cache_mb", "compile", "cudnn_benchmark", "num_workers", "log_every", "image_every",
                     "ckpt_every", "keep_last", "tensorboard", "progress")


def option(default, help: str, **extra):
    """A TrainConfig field: its default, its help text and extra argparse settings (`choices`, `flag`)."""
    kw = {"default_factory": default} if callable(default) else {"default": default}
    return field(**kw, metadata={"help": help, **extra})


class ResumeMismatch(ValueError):
    """--resume with options that differ from the checkpoint's; the message lists each difference."""


@dataclass
class TrainConfig:
    """Every option of a training run; saved as `config.json` beside its outputs."""

    run_dir: str = option("outputs/runs/clvae", "checkpoints, logs and samples (relative to the repo root)")
    variant: str = option("clvae", f"network variant, one of {sorted(VARIANTS)} (smis.networks.VARIANTS)")
    preset: str = option("synthscenes", f"sizes and training constants, one of {sorted(PRESETS)} (smis.config)")
    preset_overrides: dict = option(dict, "preset fields to override, e.g. ngf=32 image_size=[128,128]",
                                    flag="--set", metavar="FIELD=JSON")
    dataset: str = option("synthscenes", f"data set, one of {sorted(DATASETS)} (smis.data.DATASETS)")
    data_root: str | None = option(None, "data set folder; none: SynthScenes generated on the fly")
    data_length: int = option(2000, "on-the-fly SynthScenes: images per epoch")
    data_seed: int = option(0, "dataset seed (SynthScenes)")
    synth_object_factor: bool = option(False, "on-the-fly SynthScenes with its object-scale factor (a shading "
                                       "direction per class region, smis.data.synthetic); evaluation of the run "
                                       "uses the same data")
    steps: int | None = option(None, "iterations; default: the preset's epochs x len(data) / batch")
    batch_size: int | None = option(None, "global batch (all ranks); default: the preset's")
    lr_decay: bool = option(True, "constant learning rate, then linear decay to 0 over the run")
    decay_start: float = option(0.5, "with --steps: fraction of the run at the constant rate (without: the "
                                "preset's epochs_const / epochs)")
    paper_text_lr: bool = option(False, "G/E 4e-4, D 1e-4 as the paper's text states (default: the published "
                                 "code's G/E 1e-4, D 4e-4)")
    perceptual: str = option("auto", "perceptual loss: auto (VGG19 if cached, else EfficientNet-Lite0), effnet, none",
                             choices=("auto", "effnet", "none"))
    kl_weight: float | None = option(None, "KL weight lambda_KL; default: the variant's (gaugan_vae_lowkl: "
                                       "0.0005), else the preset's")
    kl_free_bits: float = option(0.0, "free bits: KL floor per latent layer in nats per image (the layer's Eq. 18 "
                                 "term, batch mean, not per class code: the layer is the unit that collapses, and "
                                 "a class absent from a batch has no KL to floor; below it the layer gets no KL "
                                 "gradient). "
                                 "Kingma et al. 2016, "
                                 "'Improved Variational Inference with Inverse Autoregressive Flow', free bits. "
                                 "0: off (the paper's objective)")
    kl_warmup_steps: int = option(0, "KL warm-up: lambda_KL ramps linearly from 0 at step 0 to its value at this step. "
                                  "Bowman et al. 2016, 'Generating Sentences from a Continuous Space'; Sonderby et al. "
                                  "2016, 'Ladder Variational Autoencoders'. 0: off (the paper's objective)")
    kl_balance: str = option("none", "KL balancing across latent layers: coefficients proportional to each layer's "
                             "mean KL + 0.01, normalised to mean 1 (NVAE, Vahdat & Kautz 2020, App. A); 'warmup': "
                             "while the warm-up ramps, as NVAE (needs --kl-warmup-steps); 'always'; 'none': off "
                             "(the paper's objective)", choices=("none", "warmup", "always"))
    imle: dict = option(dict, "cimle only: IMLE schedule fields to override, e.g. pool_size=20 samples=4 "
                        "resample_every=50 (smis.networks.crn.CIMLESettings)", flag="--imle", metavar="FIELD=JSON")
    seed: int = option(0, "seed of the weight init, noise, data order and augmentation")
    flip: bool = option(True, "random horizontal flips")
    device: str = option("auto", "auto, cpu, cuda, cuda:1, ...")
    precision: str = option("fp32", "fp32, bf16 (autocast; GPU, or a CPU with AVX512-BF16 / AMX: 1.47x on "
                            "SynthScenes, benchmarks/RESULTS.md), bf16-g (bf16 autocast for G only: E and D in "
                            "float32, as fast on that CPU, the same scores as bf16 over four seeds), bf16-g-coarse "
                            "(bf16-g with G's full-resolution blocks and output conv in float32 too) or fp16 "
                            "(autocast + GradScaler)",
                            choices=("fp32", "bf16", "bf16-g", "bf16-g-coarse", "fp16"))
    channels_last: bool = option(False, "NHWC memory format for convolutions")
    fused_adam: bool | None = option(None, "fused Adam; default: on CUDA only")
    keep_freed_memory: bool = option(True, "CPU on Linux: glibc keeps freed memory for reuse instead of returning "
                                     "it to the OS (smis.utils.keep_freed_memory: ~10k fewer page faults a step, "
                                     "1.07x the SynthScenes fp32 step); the same numbers either way")
    perceptual_cache_mb: float = option(1024, "CPU: MiB of the real images' perceptual feature maps kept for the "
                                        "next time an image (or its flip) comes round (smis.backbones."
                                        "ImageFeatureCache; 110 KiB a 64x64 image with EfficientNet-Lite0): one "
                                        "extractor pass fewer per image seen before, the same numbers bit for bit "
                                        "(it turns itself off where the extractor's maps depend on the batch, or "
                                        "when it holds under a quarter of the run's images); 0: off")
    compile: bool = option(False, "torch.compile G, E and D")
    cudnn_benchmark: bool = option(True, "CUDA: autotune conv algorithms on the first step (shapes are fixed); "
                                   "--no-cudnn-benchmark: less memory at step 1, slower steps")
    num_workers: int = option(0, "DataLoader workers")
    log_every: int = option(10, "steps between CSV + TensorBoard scalars")
    image_every: int = option(200, "steps between TensorBoard sample grids (0 = never)")
    ckpt_every: int = option(200, "steps between checkpoints")
    keep_last: int = option(3, "checkpoints kept")
    tensorboard: bool = option(True, "write TensorBoard logs")
    progress: bool = option(True, "tqdm progress bar")

    def __post_init__(self):
        """Reject values that would train nothing, crash later or silently do something else."""
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
        need(isinstance(self.perceptual_cache_mb, (int, float)) and not isinstance(self.perceptual_cache_mb, bool)
             and self.perceptual_cache_mb >= 0, "perceptual_cache_mb", "must be a number of MiB >= 0 (0: off)")
        need(isinstance(self.decay_start, (int, float)) and 0 <= self.decay_start <= 1, "decay_start",
             "is the fraction of the run before the decay starts: give a number in [0, 1]")
        need(self.kl_weight is None or (isinstance(self.kl_weight, (int, float)) and self.kl_weight >= 0), "kl_weight",
             "must be >= 0 (or None: the preset's lambda_KL)")
        need(isinstance(self.kl_free_bits, (int, float)) and not isinstance(self.kl_free_bits, bool)
             and 0 <= self.kl_free_bits < float("inf"), "kl_free_bits",
             "is a KL floor in nats per image per latent layer: give a number >= 0 (0: off)")
        need(is_int(self.kl_warmup_steps) and self.kl_warmup_steps >= 0, "kl_warmup_steps",
             "must be an integer >= 0 (0: no warm-up)")
        need(self.kl_balance != "warmup" or self.kl_warmup_steps > 0, "kl_balance",
             "'warmup' balances the layers while lambda_KL warms up, and --kl-warmup-steps is 0; give "
             "--kl-warmup-steps N, or --kl-balance always")
        need(self.variant in VARIANTS, "variant", f"choose one of {sorted(VARIANTS)}")
        need(self.preset in PRESETS, "preset", f"choose one of {sorted(PRESETS)}")
        need(self.dataset in DATASETS, "dataset", f"choose one of {sorted(DATASETS)}")
        need(isinstance(self.preset_overrides, dict), "preset_overrides", "must be a dict of preset fields")
        need(not self.synth_object_factor or (self.dataset == "synthscenes" and self.data_root is None),
             "synth_object_factor", "applies to SynthScenes generated on the fly; for a written copy pass "
             "--object-factor to `python -m smis.data.synthetic` and train on it with --data-root")
        need(isinstance(self.imle, dict), "imle", "must be a dict of cIMLE schedule fields")
        variant = VARIANTS[self.variant]
        if not variant.encoder or variant.family == "cimle":    # no encoder: no KL to warm up, floor or balance
            for name in ("kl_free_bits", "kl_warmup_steps"):
                need(not getattr(self, name), name, f"{self.variant} has no encoder and no KL term; drop "
                     f"--{name.replace('_', '-')}")
        if not variant.class_codes:                         # free bits and balancing act on the latent layers
            need(not self.kl_free_bits, "kl_free_bits", f"{self.variant} has no latent layers (class codes); use a "
                 "variant with them (clvae, groupdnet, ...)")
            need(self.kl_balance == "none", "kl_balance", f"{self.variant} has no latent layers (class codes); use "
                 "a variant with them (clvae, groupdnet, ...)")
        if variant.class_codes and (not variant.layerwise or variant.family == "groupdnet"):   # one latent layer
            need(self.kl_balance == "none", "kl_balance", f"{self.variant} has a single latent layer, so balancing "
                 "across layers changes nothing; drop --kl-balance (or use clvae, whose codes have 5 layers)")
        if variant.family == "cimle":        # IMLE: no KL, no GAN, a distance it cannot train without
            need(self.kl_weight is None, "kl_weight", "cimle has no encoder and no KL term; drop --kl-weight")
            need(self.perceptual != "none", "perceptual", "cimle's objective is its perceptual distance; use auto "
                 "(VGG19 if cached, else EfficientNet-Lite0) or effnet")
            need(not self.paper_text_lr, "paper_text_lr", "cimle trains with Adam at its own rate; set it with "
                 "--imle lr=... instead")
            try:
                cimle_settings(self.preset).with_schedule(self.imle_overrides())
            except (TypeError, ValueError) as e:
                need(False, "imle", str(e))
        else:
            need(not self.imle, "imle", "IMLE schedule fields apply to --variant cimle only")
        for f in fields(self):
            if "choices" in f.metadata:
                need(getattr(self, f.name) in f.metadata["choices"], f.name, f"choose one of {f.metadata['choices']}")

    def imle_overrides(self) -> dict:
        """cimle: the schedule fields --imle sets, with --batch-size as the batch when given."""
        return {**self.imle, **({"batch_size": self.batch_size} if self.batch_size is not None else {})}

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
    and kl_weight compare as resolved (None = the variant's or the preset's value), so spelling out the
    default is no change."""
    defaults = asdict(TrainConfig())
    old = {**defaults, **saved}
    now = asdict(cfg)

    def resolved(d: dict, name: str):
        if name in ("batch_size", "kl_weight") and d[name] is None:
            try:
                preset = get_preset(d["preset"], **d["preset_overrides"])
            except (KeyError, TypeError, ValueError):
                return None
            if name == "batch_size":
                if d["variant"] in VARIANTS and VARIANTS[d["variant"]].family == "cimle":   # its own batch
                    return cimle_settings(d["preset"]).with_schedule(d.get("imle") or {}).batch_size
                return preset.batch_size
            variant = VARIANTS.get(d["variant"])
            return preset.lambda_kl if variant is None or variant.kl_weight is None else variant.kl_weight
        return plain_data(d[name])

    return [f"{name}: checkpoint {resolved(old, name)!r}, now {resolved(now, name)!r}" for name in now
            if name not in RESUME_MAY_CHANGE and resolved(old, name) != resolved(now, name)]


# ---------------------------------------------------------------------------------------------
# Command line, generated from the fields


_TYPES = {"int": int, "float": float, "str": str}


def _add_field(p: argparse.ArgumentParser, f) -> None:
    """One TrainConfig field as an argparse option (see the module docstring for the spelling)."""
    flag = f.metadata.get("flag", "--" + f.name.replace("_", "-"))
    default = f.default_factory() if f.default is MISSING else f.default
    kind = f.type.replace(" | None", "")
    kw = dict(dest=f.name, default=default, help=f.metadata["help"])
    if kind == "bool":
        p.add_argument(flag, action=argparse.BooleanOptionalAction, **kw)
    elif kind == "dict":
        p.add_argument(flag, nargs="*", metavar=f.metadata.get("metavar"), **{**kw, "default": []})
    else:
        p.add_argument(flag, type=_TYPES[kind], choices=f.metadata.get("choices"), **kw)


def add_config_arguments(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """One option per TrainConfig field on `p` (`python -m smis.train` adds --resume and --threads)."""
    for f in fields(TrainConfig):
        _add_field(p, f)
    return p


def parse_assignment(item: str,            # "KEY=VALUE", as typed after --set (here and in smis.reproduce)
                     ) -> tuple[str, object] | None:
    """(KEY, VALUE parsed as JSON, else the raw string); None when `item` has no "=" or no KEY."""
    key, sep, raw = item.partition("=")
    if not sep or not key:
        return None
    try:
        return key, json.loads(raw)
    except json.JSONDecodeError:
        return key, raw


def parse_assignments(p: argparse.ArgumentParser, items: list[str], flag: str,
                      example: str = "pool_size=20") -> dict:
    """FIELD=JSON ... -> {field: value} (a value that is not JSON stays a string); argparse's error otherwise."""
    out = {}
    for item in items:
        kv = parse_assignment(item)
        if kv is None:
            p.error(f"{flag} {item!r}: write FIELD=JSON, e.g. {flag} {example}")
        out[kv[0]] = kv[1]
    return out


def parse_overrides(p: argparse.ArgumentParser, items: list[str], preset: str) -> dict:
    """--set FIELD=JSON ... -> {field: value} (a value that is not JSON stays a string), checked against `preset`."""
    overrides = parse_assignments(p, items, "--set", "ngf=32 image_size=[128,128]")
    try:
        get_preset(preset, **dict(overrides))
    except (KeyError, TypeError, ValueError) as e:
        p.error(f"--preset {preset} --set {' '.join(items)}: {e.args[0] if e.args else e}")
    return overrides
