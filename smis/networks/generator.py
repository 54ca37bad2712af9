"""The generator (Eq. 10) with class-wise semantics embedding (CSE, Eq. 12).

z1 -> `fc` -> (16 ngf, sh, sw) -> head_0 -> G_middle_0 -> G_middle_1 -> up_0 .. up_3 (-> up_4)
-> LeakyReLU -> conv_img -> tanh, nearest x2 upsampling between blocks. Each block is a SPADE
residual block; its conditioning map is the CSE map `W[L] + Z_l[L]` of the encoder layer wired to
it (table below) at 1/2^l of the label size, or the one-hot mask for the full-resolution blocks.

    block       encoder layer l   CSE map scale
    head_0      5                 1/32
    G_middle_*  4                 1/16
    up_0        3                 1/8
    up_1        2                 1/4
    up_2        1                 1/2
    up_3, up_4  - (one-hot mask)  1
"""
from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from torch import nn

from smis.config import UPSAMPLING  # the one table: number of x2 upsamplings from fc to output
from smis.networks.latents import Latents, LatentSpec, check_label
from smis.networks.ops import PiecewiseMap, one_hot, resize_labels
from smis.networks.spade import SPADEResBlock

BLOCK_LAYER = {"head_0": 5, "G_middle_0": 4, "G_middle_1": 4, "up_0": 3, "up_1": 2, "up_2": 1}


class Generator(nn.Module):
    """Eq. 10 / 12: SPADE generator whose blocks are conditioned on class-wise latent maps.

    `piecewise_cond` (attribute, default True): SPADE's shared conv reads the conditioning maps as
    (label, class table) pairs (`ops.PiecewiseMap`, gathers); False feeds the dense one-hot / CSE maps
    to the convolution, the unoptimised reference path (same function up to float summation order).
    `float32_tail` (attribute, default False): inside an autocast region, run the full-resolution blocks
    (up_3, up_4) and conv_img with autocast off, on a float32 copy of up_2's output
    (`--precision bf16-g-coarse`); outside autocast it changes nothing.
    """

    piecewise_cond: bool = True
    float32_tail: bool = False          # the full-resolution blocks and conv_img in float32 inside autocast

    def __init__(self,
                 spec: LatentSpec,                  # latents fed in (z_dim 0: GauGAN's mask input)
                 image_size: tuple[int, int],       # output (H, W)
                 ngf: int = 64,                     # base width; blocks are 16, 16, 16, 8, 4, 2, 1 x ngf
                 upsampling: str = "normal",        # "normal" | "more" | "most", see UPSAMPLING
                 cse: bool = True,                  # condition blocks on CSE maps (False: one-hot only)
                 norm: str = "syncbatch",           # SPADE parameter-free normalisation
                 spade_hidden: int = 128,           # SPADE shared-conv width
                 ):
        super().__init__()
        if upsampling not in UPSAMPLING:
            raise ValueError(f"upsampling={upsampling!r} is unknown; choose one of {sorted(UPSAMPLING)}")
        H, W = image_size
        n_up = UPSAMPLING[upsampling]
        if H % (1 << n_up) or W % (1 << n_up):
            raise ValueError(f"image_size {image_size} must be divisible by 2^{n_up} = {1 << n_up} for "
                             f"upsampling={upsampling!r}; pick another size or upsampling variant")
        if cse and spec.z_dim_local <= 0:
            raise ValueError("cse=True needs spec.z_dim_local > 0 (the CSE embedding width N)")
        self.spec, self.image_size, self.upsampling, self.use_cse = spec, (H, W), upsampling, cse
        self.sh, self.sw = H >> n_up, W >> n_up
        C, nf = spec.num_classes, ngf
        N = spec.z_dim_local if cse else C                              # channels of the block conditioning

        if spec.z_dim > 0:
            self.fc = nn.Linear(spec.z_dim, 16 * nf * self.sh * self.sw)
        else:                                                           # GauGAN: downsampled mask in
            self.fc = nn.Conv2d(C, 16 * nf, 3, padding=1)
        if cse:
            self.embedding = nn.Embedding(C, N)                         # W of Eq. 12, (C, N)
        block = lambda fin, fout, cond: SPADEResBlock(fin, fout, cond, norm, spade_hidden)
        self.head_0 = block(16 * nf, 16 * nf, N)
        self.G_middle_0 = block(16 * nf, 16 * nf, N)
        self.G_middle_1 = block(16 * nf, 16 * nf, N)
        self.up_0 = block(16 * nf, 8 * nf, N)
        self.up_1 = block(8 * nf, 4 * nf, N)
        self.up_2 = block(4 * nf, 2 * nf, N)
        self.up_3 = block(2 * nf, nf, C)
        out_nf = nf
        if upsampling == "most":
            self.up_4 = block(nf, nf // 2, C)
            out_nf = nf // 2
        self.conv_img = nn.Conv2d(out_nf, 3, 3, padding=1)

        # code index on the L axis of zc for each CSE block (-1: no code, the embedding alone)
        where = {l: i for i, l in enumerate(spec.layers)}
        self.code_index = {name: (0 if spec.has_class_codes and not spec.layerwise else where.get(l, -1))
                           for name, l in BLOCK_LAYER.items()}

    def cse_tables(self, z: Latents | None, batch: int) -> torch.Tensor:
        """W + Z_l for all latent layers at once: (B, L, C, N); L = 1 (embedding only) without codes."""
        W = self.embedding.weight                                       # (C, N)
        if z is None or z.zc is None:
            return W.expand(batch, 1, *W.shape)                         # (B, 1, C, N)
        return W + z.zc                                                 # (B, L, K, N) + (C, N) -> (B, L, C, N)

    def forward(self, label: torch.Tensor, z: Latents | None = None) -> torch.Tensor:
        """label (B, H, W) ids; z the latents (None only for the gaugan variant) -> (B, 3, H, W) in [-1, 1].

        Checked first (clear ValueError / TypeError naming expected and given): label is a (B, H, W)
        integer map of this generator's size with ids in [0, C) (`check_label`); z fits `self.spec`
        and the label batch: z (B, N1), zc (B, L, K, N) (`LatentSpec.check_latents`, shapes only).
        """
        spec = self.spec
        check_label(label, spec.num_classes, self.image_size)
        B, H, W = label.shape
        spec.check_latents(z, B)
        dtype = self.conv_img.weight.dtype
        if spec.z_dim > 0:
            x = self.fc(z.z.to(dtype)).view(B, -1, self.sh, self.sw)   # (B, 16 nf, sh, sw)
        else:                                                           # GauGAN: downsampled mask in
            x = self.fc(one_hot(resize_labels(label, (self.sh, self.sw)), spec.num_classes, dtype))

        # conditioning maps as (label, class table): SPADE's shared conv gathers per class instead of
        # convolving C or N channels; `piecewise_cond = False` passes the dense maps (the reference path)
        mask = PiecewiseMap(label, None, spec.num_classes)              # one-hot mask (B, C, H, W)
        conds = {}
        if self.use_cse:
            tables = self.cse_tables(z if spec.has_class_codes else None, B)   # (B, L, C, N)
            labels = {l: mask.resized((H >> l, W >> l)) for l in set(BLOCK_LAYER.values())}   # one per scale
            for name, l in BLOCK_LAYER.items():                         # 6 blocks, one table each
                i = self.code_index[name]
                table = tables[:, i] if i >= 0 else self.embedding.weight.expand(B, -1, -1)  # (B, C, N)
                conds[name] = labels[l].with_table(table.to(dtype))     # (B, N, H/2^l, W/2^l)
        if not self.piecewise_cond or torch.compiler.is_compiling():    # dense: one_hot / cse_map
            mask = mask.dense(dtype)
            conds = {name: m.dense(dtype) for name, m in conds.items()}
        cond = lambda name: conds.get(name, mask)

        up = lambda t: F.interpolate(t, scale_factor=2, mode="nearest")
        x = self.head_0(x, cond("head_0"))
        x = self.G_middle_0(up(x), cond("G_middle_0"))
        if self.upsampling in ("more", "most"):
            x = up(x)
        x = self.G_middle_1(x, cond("G_middle_1"))
        x = self.up_0(up(x), cond("up_0"))
        x = self.up_1(up(x), cond("up_1"))
        x = self.up_2(up(x), cond("up_2"))
        with torch.autocast(label.device.type, enabled=False) if self.float32_tail else contextlib.nullcontext():
            if self.float32_tail:                                       # float32 from here on
                x = x.float()
            x = self.up_3(up(x), mask)
            if self.upsampling == "most":
                x = self.up_4(up(x), mask)
            return torch.tanh(self.conv_img(F.leaky_relu(x, 0.2)))     # (B, 3, H, W)
