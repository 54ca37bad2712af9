"""cIMLE's generator: a cascaded refinement network (CRN) with a per-pixel noise input.

Li, Zhang and Malik, "Diverse Image Synthesis from Semantic Layouts via Conditional IMLE" (ICCV 2019),
the comparison system of the paper's Table 4 (GTA-5). Written from the paper and the behaviour of the
authors' TensorFlow code (github.com/zth667/Diverse-Image-Synthesis-from-Semantic-Layout, train.py):

    noise  eps (B, Cz, H, W) ~ N(0, I), Cz = 10, one value per pixel and channel
    noise encoder  [one-hot mask, eps] -> conv3x3 100 -> LN -> lrelu -> conv3x3 100 -> LN -> lrelu
                   -> conv1x1 Cz (bias, no activation) = e (B, Cz, H, W)
    module k (k = 0 .. n-1, height 4 * 2^k):
        input_0 = [mask_0, e_0]                                   (the coarsest, 4 x 4 W/H)
        input_k = [bilinear_up(out_{k-1}) (align corners), mask_k, e_k]
        out_k   = lrelu(LN(conv3x3(input_k)))  twice, width 1024 below height 128, 512 from 128 (GTA-5)
    image = conv1x1 3 (bias, linear) of out_{n-1}

mask_k is the one-hot mask area-averaged to module k's size, e_k the encoded noise subsampled (TF1's
legacy bilinear resize by 1/2 without aligned corners reads pixel 2i: nearest here, exactly).
LN is TF-slim's layer norm: over (C, H, W) of each sample with a per-channel scale and shift
(`nn.GroupNorm(1, C)`); convolutions followed by it have no bias. Weights start as TF-slim's Xavier
(Glorot uniform); the noise encoder's as a normal of sd 0.15 truncated at 2 sd.

The output is linear (no tanh), in the [-1, 1] scale of our images; in eval mode it is clipped to
[-1, 1], as the authors' test script clips to [0, 255]. The noise travels through the project's one
sampling path as a `Latents` whose global code is the flattened map: z (B, Cz H W) (`noise_spec`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import nn

from smis.networks.latents import Latents, LatentSpec, check_label
from smis.networks.ops import one_hot


SCHEDULE_FIELDS = ("batch_size", "pool_size", "samples", "resample_every", "rounds", "reinit_round", "lr", "lr_drop")


@dataclass(frozen=True)
class CIMLESettings:
    """cIMLE's network sizes and its IMLE training schedule for one preset (see CIMLE_SETTINGS)."""

    # -- network (CRN + noise encoder) -------------------------------------------------------------
    noise_channels: int = 10                 # Cz, noise channels per pixel (num_noise)
    noise_width: int = 100                   # noise encoder's hidden width
    base_height: int = 4                     # height of the coarsest module (width keeps the aspect ratio)
    width_coarse: int = 1024                 # module width below `fine_from`
    width_fine: int = 512                    # module width from `fine_from` on
    fine_from: int = 128                     # module height where the fine width starts
    # -- conditional IMLE (Sec. 3 of the paper; train.py's K, m, L, reinit_point) -------------------
    batch_size: int = 1                      # pool members per optimisation step
    pool_size: int = 400                     # K: layouts whose nearest codes are found per round
    samples: int = 10                        # m: latent samples drawn per layout to pick the nearest from
    resample_every: int = 10_000             # L: optimisation steps between recomputing the nearest codes
    rounds: int = 16                         # rounds of a full run (reinit_round + 11 in train.py)
    reinit_round: int | None = 5             # after this round: noise encoder re-initialised, Adam reset,
                                             # lr x lr_drop (train.py: "to avoid overfitting"); None: never
    lr: float = 1e-4                         # Adam learning rate (TF defaults: betas (0.9, 0.999), eps 1e-8)
    lr_drop: float = 0.1                     # learning-rate factor after reinit_round (1e-4 -> 1e-5)

    def __post_init__(self):
        for name in ("noise_channels", "noise_width", "base_height", "width_coarse", "width_fine", "fine_from",
                     "batch_size", "pool_size", "samples", "resample_every", "rounds"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"cIMLE setting {name}={getattr(self, name)!r} must be an integer >= 1")
        if self.batch_size > self.pool_size:
            raise ValueError(f"cIMLE batch_size={self.batch_size} exceeds pool_size={self.pool_size}: a step draws "
                             "its batch from the pool; lower the batch or raise the pool")
        if not (self.lr > 0 and 0 < self.lr_drop <= 1):
            raise ValueError(f"cIMLE lr={self.lr} must be > 0 and lr_drop={self.lr_drop} in (0, 1]")

    def with_schedule(self, overrides: dict | None) -> "CIMLESettings":
        """These settings with training-schedule fields replaced (`--imle FIELD=JSON`); the network sizes are the
        preset's and cannot change (a saved model is rebuilt from its preset name)."""
        overrides = dict(overrides or {})
        bad = sorted(set(overrides) - set(SCHEDULE_FIELDS))
        if bad:
            raise ValueError(f"unknown cIMLE schedule field(s) {bad}; --imle may set {list(SCHEDULE_FIELDS)} (the "
                             "network sizes are the preset's: smis.networks.crn.CIMLE_SETTINGS)")
        return replace(self, **overrides)

    def width(self, height: int) -> int:
        """Width of the module of `height` (train.py: 512 if sp >= 128 else 1024)."""
        return self.width_fine if height >= self.fine_from else self.width_coarse

    @property
    def total_steps(self) -> int:
        """Optimisation steps of a full run: rounds x resample_every (GTA-5: 160,000)."""
        return self.rounds * self.resample_every


CIMLE_SETTINGS: dict[str, CIMLESettings] = {
    # The authors' GTA-5 configuration (train.py): 256 x 512, modules 4 .. 256 high, batch 1, K = 400
    # layouts per round, m = 10 samples each, L = 10,000 steps per round, 16 rounds, lr 1e-4 -> 1e-5
    # with the noise encoder re-initialised after round 5. (Their run starts from a pretrained CRN.)
    "gta5": CIMLESettings(),
    # SynthScenes (64 x 64, CPU): modules 4 .. 64 high, 128 wide below 32, 64 from 32; batch 8 like the
    # clvae preset; rounds of 500 steps over a pool of 200 layouts (each layout ~20 times per round; GTA-5:
    # 25), m = 10; candidate passes per trained image 0.5 (GTA-5: 0.4). 10 rounds (5,000 steps: about
    # gaugan_vae's 8,000-step wall clock, benchmarks/bench_cimle_step.py), the reinit after round 3 (GTA-5:
    # after 6 of 16 rounds).
    "synthscenes": CIMLESettings(width_coarse=128, width_fine=64, fine_from=32, batch_size=8, pool_size=200,
                                 resample_every=500, rounds=10, reinit_round=3),
}


def cimle_settings(preset_name: str) -> CIMLESettings:
    """The cIMLE settings of a preset: CIMLE_SETTINGS, else the authors' GTA-5 ones (sizes follow the image)."""
    return CIMLE_SETTINGS.get(preset_name, CIMLE_SETTINGS["gta5"])


def crn_heights(image_size: tuple[int, int],    # (H, W) of the output
                base_height: int = 4,           # height of the coarsest module
                ) -> list[tuple[int, int]]:
    """(h, w) of each module, coarsest first: H / 2^k for k = n-1 .. 0; H must be base_height x 2^k."""
    H, W = image_size
    n = math.log2(H / base_height) if H >= base_height else -1
    if n < 0 or n != int(n) or W % (1 << int(n)):
        raise ValueError(f"cIMLE's CRN needs an image height of {base_height} x 2^k and a width divisible by 2^k, "
                         f"got {image_size}; choose e.g. (64, 64) or (256, 512)")
    n = int(n)
    return [(H >> k, W >> k) for k in range(n, -1, -1)]


def noise_spec(num_classes: int, image_size: tuple[int, int], noise_channels: int) -> LatentSpec:
    """The LatentSpec of a CRN: the noise map (Cz, H, W) flattened into the global code z (B, Cz H W)."""
    H, W = image_size
    return LatentSpec(noise_channels * H * W, 0, num_classes)


def _conv_ln(cin: int, cout: int) -> nn.Sequential:
    """conv3x3 (no bias) -> layer norm over (C, H, W) with per-channel affine -> lrelu 0.2 (TF-slim's conv2d
    with normalizer_fn=layer_norm)."""
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.GroupNorm(1, cout, eps=1e-12),
                         nn.LeakyReLU(0.2, inplace=True))    # in place: GroupNorm's backward needs no output


class CRNGenerator(nn.Module):
    """cIMLE's generator (module docstring): G(label, Latents(z = noise map flattened)) -> (B, 3, H, W)."""

    def __init__(self,
                 num_classes: int,                  # C, one-hot channels of the mask
                 image_size: tuple[int, int],       # output (H, W)
                 settings: CIMLESettings,           # widths and noise sizes
                 ):
        super().__init__()
        self.image_size, self.settings = tuple(image_size), settings
        self.sizes = crn_heights(self.image_size, settings.base_height)     # [(h, w)] coarsest first
        self.spec = noise_spec(num_classes, self.image_size, settings.noise_channels)
        C, Cz, Nw = num_classes, settings.noise_channels, settings.noise_width
        self.noise_encoder = nn.Sequential(_conv_ln(C + Cz, Nw), _conv_ln(Nw, Nw), nn.Conv2d(Nw, Cz, 1))
        blocks, prev = [], 0
        for h, _ in self.sizes:
            width = settings.width(h)
            blocks.append(nn.Sequential(_conv_ln(prev + C + Cz, width), _conv_ln(width, width)))
            prev = width
        self.blocks = nn.ModuleList(blocks)
        self.to_image = nn.Conv2d(prev, 3, 1)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """TF-slim's initialisation: Glorot-uniform convolutions, zero biases, LN scale 1 / shift 0."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.GroupNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        self.reset_noise_encoder()

    def reset_noise_encoder(self) -> None:
        """The noise encoder's initialisation (train.py: truncated normal, sd 0.15, cut at 2 sd); also what the
        IMLE schedule re-initialises after its reinit round."""
        for m in self.noise_encoder.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.trunc_normal_(m.weight, std=0.15, a=-0.3, b=0.3)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.GroupNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def noise_map(self, z: Latents) -> torch.Tensor:
        """The flattened code z (B, Cz H W) as the noise map (B, Cz, H, W)."""
        H, W = self.image_size
        return z.z.view(-1, self.settings.noise_channels, H, W)

    def forward(self,
                label: torch.Tensor,        # (B, H, W) class ids
                z: Latents,                 # z (B, Cz H W): the noise map, flattened (Latents.prior(G.spec, label))
                ) -> torch.Tensor:
        """(B, 3, H, W): linear output in training, clipped to [-1, 1] in eval mode (module docstring)."""
        spec = self.spec
        check_label(label, spec.num_classes, self.image_size)
        B = label.shape[0]
        spec.check_latents(z, B, who="cIMLE's generator")
        dtype = self.to_image.weight.dtype
        mask = one_hot(label, spec.num_classes, dtype)                          # (B, C, H, W)
        e = self.noise_encoder(torch.cat([mask, self.noise_map(z).to(dtype)], 1))   # (B, Cz, H, W)
        x = None
        for (h, w), block in zip(self.sizes, self.blocks):
            m_k = F.adaptive_avg_pool2d(mask, (h, w)) if h != mask.shape[2] else mask     # area resize
            e_k = F.interpolate(e, size=(h, w), mode="nearest") if h != e.shape[2] else e  # TF1 bilinear / 2^k
            parts = [m_k, e_k]
            if x is not None:
                parts.insert(0, F.interpolate(x, size=(h, w), mode="bilinear", align_corners=True))
            x = block(torch.cat(parts, 1))                                      # (B, width_k, h, w)
        out = self.to_image(x)                                                  # (B, 3, H, W)
        return out if self.training else out.clamp(-1, 1)
