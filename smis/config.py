"""Per-dataset presets: one frozen dataclass holding every size and training constant.

`get_preset("ade20k")` returns the published ADE20K configuration; `get_preset("synthscenes",
ngf=16, image_size=(128, 128))` overrides fields. ADE20K, DeepFashion and GTA-5 reproduce the
authors' checkpoint shapes exactly (see `smis.official`).

Training constants follow the published SPADE / CLVAE code: Adam betas (0, 0.9), learning rates
1e-4 for G and E and 4e-4 for D (TTUR; the paper's text states the reverse, the code does this),
lambda_FM 10, lambda_perceptual 10, lambda_KL 0.05, and a schedule of `epochs_const` epochs at the
base rate followed by `epochs_decay` epochs of linear decay to 0 (SPADE's 100 + 100).
"""
from __future__ import annotations

from dataclasses import dataclass, fields, replace

UPSAMPLING = {"normal": 5, "more": 6, "most": 7}     # x2 upsamplings from fc to output (smis.networks.generator)
# preset fields of networks that train a step in a few CPU seconds: notebooks 02 and 05 with SMOKE, and the tests
TINY = {"ngf": 8, "nef": 8, "ndf": 8, "spade_hidden": 16, "z_dim": 8, "z_dim_local": 4}


@dataclass(frozen=True)
class Preset:
    """Everything needed to build the networks and train them for one dataset."""

    name: str                                   # dataset name, a key of PRESETS
    num_classes: int                            # C, label ids 0..C-1, dontcare class included
    image_size: tuple[int, int]                 # generator output (H, W)
    upsampling: str                             # "normal" (5 x2 ups) | "more" (6) | "most" (7)
    ngf: int                                    # generator base width (blocks 16..1 x ngf)
    z_dim: int                                  # N1, global latent size
    z_dim_local: int                            # N, class-code and CSE-embedding size
    ndf: int                                    # discriminator base width
    nef: int                                    # encoder base width (layers 1, 2, 4, 8, 8, 8 x nef)
    encoder_size: tuple[int, int] | None        # (H, W) the encoder resizes images to; None = image_size
    dontcare_id: int | None                     # id of the "unknown" class, None if every id is real
    batch_size: int                             # images per optimisation step
    epochs_const: int                           # epochs at the base learning rate
    epochs_decay: int                           # epochs of linear decay to 0 that follow
    norm_G: str = "syncbatch"                   # SPADE parameter-free norm: syncbatch | batch | instance
    spade_hidden: int = 128                     # SPADE shared-conv width
    num_D: int = 2                              # discriminator scales
    n_layers_D: int = 4                         # conv layers per PatchGAN
    lr_g: float = 1e-4                          # Adam learning rate of G and E
    lr_d: float = 4e-4                          # Adam learning rate of D
    betas: tuple[float, float] = (0.0, 0.9)     # Adam betas for all networks
    lambda_fm: float = 10.0                     # feature-matching weight
    lambda_perceptual: float = 10.0             # perceptual (VGG19 / EfficientNet-Lite0) weight
    lambda_kl: float = 0.05                     # KL weight (Eq. 18)

    def __post_init__(self):
        def need(ok: bool, msg: str):
            if not ok:
                raise ValueError(f"preset {self.name!r}: {msg}")
        need(self.upsampling in UPSAMPLING,
             f"upsampling={self.upsampling!r}; choose one of {sorted(UPSAMPLING)}")
        step = 1 << UPSAMPLING.get(self.upsampling, 5)
        H, W = self.image_size
        need(H % step == 0 and W % step == 0,
             f"image_size {self.image_size} must be divisible by {step} for upsampling={self.upsampling!r}")
        eh, ew = self.enc_size
        need(eh % 64 == 0 and ew % 64 == 0 and min(eh, ew) >= 128,
             f"encoder_size {self.enc_size} must be divisible by 64 and at least 128 (instance norm needs "
             "more than one pixel at the sixth stride-2 layer); the encoder resizes its input to it")
        need(self.num_classes >= 1, f"num_classes={self.num_classes} must be >= 1")
        need(self.dontcare_id is None or 0 <= self.dontcare_id < self.num_classes,
             f"dontcare_id={self.dontcare_id} must be None or in [0, {self.num_classes})")
        for f in ("ngf", "z_dim", "z_dim_local", "ndf", "nef", "batch_size", "spade_hidden", "num_D", "n_layers_D"):
            need(getattr(self, f) >= 1, f"{f}={getattr(self, f)} must be >= 1")
        need(self.ngf % 2 == 0 or self.upsampling != "most", "upsampling='most' needs an even ngf")
        need(self.lr_g > 0 and self.lr_d > 0, f"learning rates must be > 0, got {self.lr_g}, {self.lr_d}")
        need(self.epochs_const >= 0 and self.epochs_decay >= 0, "epoch counts must be >= 0")

    @property
    def enc_size(self) -> tuple[int, int]:
        """The encoder's input (H, W)."""
        return tuple(self.encoder_size) if self.encoder_size is not None else tuple(self.image_size)

    @property
    def epochs(self) -> int:
        return self.epochs_const + self.epochs_decay

    @classmethod
    def from_dict(cls, d: dict) -> "Preset":
        """Inverse of `dataclasses.asdict` after a JSON / checkpoint round trip (lists back to tuples)."""
        return cls(**_tuples(d))


PRESETS: dict[str, Preset] = {
    # Published configurations (checkpoint shapes listed in shared/reference/official_checkpoint_keys.json).
    "ade20k": Preset(name="ade20k", num_classes=151, image_size=(256, 256), upsampling="normal",
                     ngf=64, z_dim=256, z_dim_local=151, ndf=64, nef=64, encoder_size=(256, 256),
                     dontcare_id=150, batch_size=32, epochs_const=100, epochs_decay=100),
    "deepfashion": Preset(name="deepfashion", num_classes=16, image_size=(256, 256), upsampling="more",
                          ngf=160, z_dim=256, z_dim_local=16, ndf=64, nef=160, encoder_size=(256, 256),
                          dontcare_id=None, batch_size=32, epochs_const=100, epochs_decay=100),
    "gta5": Preset(name="gta5", num_classes=20, image_size=(256, 512), upsampling="more",
                   ngf=64, z_dim=256, z_dim_local=20, ndf=64, nef=64, encoder_size=(256, 256),
                   dontcare_id=None, batch_size=16, epochs_const=100, epochs_decay=100),
    # Cityscapes as our loader yields it (19 train ids + 19 = everything else, like GTA-5), 256x512,
    # SPADE's "normal" upsampling, with the CLVAE latents; no published CLVAE weights.
    "cityscapes": Preset(name="cityscapes", num_classes=20, image_size=(256, 512), upsampling="normal",
                         ngf=64, z_dim=256, z_dim_local=20, ndf=64, nef=64, encoder_size=(256, 256),
                         dontcare_id=None, batch_size=16, epochs_const=100, epochs_decay=100),
    # CPU-trainable toy preset for the SynthScenes data set (10 classes, ids 0..9, no dontcare).
    "synthscenes": Preset(name="synthscenes", num_classes=10, image_size=(64, 64), upsampling="normal",
                          ngf=16, z_dim=32, z_dim_local=8, ndf=16, nef=16, encoder_size=(128, 128),
                          dontcare_id=None, batch_size=8, epochs_const=10, epochs_decay=10,
                          norm_G="batch", spade_hidden=32),
}


def get_preset(name: str, **overrides) -> Preset:
    """The preset `name` with fields replaced by `overrides` (validated again)."""
    if name not in PRESETS:
        raise KeyError(f"unknown preset {name!r}; valid names: {sorted(PRESETS)}")
    valid = {f.name for f in fields(Preset)} - {"name"}
    bad = sorted(set(overrides) - valid)
    if bad:
        raise TypeError(f"unknown preset field(s) {bad}; valid fields: {sorted(valid)}")
    return replace(PRESETS[name], **_tuples(overrides))


def _tuples(d: dict) -> dict:
    """`d` with the tuple fields of Preset (image_size, betas, encoder_size) as tuples (JSON gives lists)."""
    return {k: tuple(v) if k in ("image_size", "betas", "encoder_size") and v is not None else v for k, v in d.items()}
