"""GroupDNet (Zhu et al., "Semantically Multi-modal Image Synthesis", CVPR 2020): group-convolution
encoder and group-decreasing generator, one latent code per class.

Encoder (the authors' `ConvEncoder`): each class's pixels of the photo are cut out (the photo times the
class mask), cropped to the class's bounding box and resized (legacy nearest) to the encoder input; the C
crops stacked along channels, (B, 3 C, H, W), go through 5 or 6 stride-2 3x3 convolutions with C groups
(one group per class: spectral norm, instance norm, LeakyReLU 0.2) and two grouped 3x3 heads `fc_mu` /
`fc_var`. Each class's code is a small spatial map, 8 channels x (gh, gw) (4 x 4 at 256 x 256, 4 x 8 at
256 x 512), held flattened as `zc` (B, 1, C, 8 gh gw) of a `Latents` (`LatentSpec.layers = (0,)`: one
code per class for the whole generator, presence read at full resolution).

Generator (the authors' `DeepFashionGenerator`, `CityscapesGenerator`, `ADE20KGenerator`): the codes,
(B, 8 C, gh, gw) class-major, pass a grouped 3x3 conv `fc`, then SPADE residual blocks whose convolutions
AND SPADE modulations are grouped convolutions, the number of groups decreasing block by block (the
"group decreasing" of the paper), nearest x2 upsampling between blocks, LeakyReLU, `conv_img`, tanh:

    structure     fc groups   head_0  G_middle_0  G_middle_1  up_0  up_1  up_2  up_3    widths
    deepfashion   8 (= C)     C       C           C/2         C/2   C/4   C/4   C/8     16 16 16 8 4 2 1 x ngf
    cityscapes    C           C       C           20          14    10    4     1       16 16 16 8 4 2 1 x ngf
    ade20k        C           C       16          16          8     4     2     1       16C 32 16 16 8 4 2 ngf
                                                                                        (+ an unused up_4)

Their group SPADE differs per structure (`GroupSPADE`): deepfashion: shared conv C -> 128 and gamma /
beta with the block's groups; cityscapes: each class's (mask, instance-edge) pair -> g channels (C groups)
and gamma / beta with C groups; ade20k: each class's mask -> 2 channels (g divides C) or g channels
(C groups), gamma / beta with the block's groups. Parameter-free norm: synchronised batch norm.

Published sizes (`PUBLISHED`): DeepFashion 8 classes (the authors' own version, not the paper's 16),
ngf 160, encoder width 256 (96.3 M G, 12.8 M E parameters); Cityscapes 35 label ids + instance edges,
ngf 280, width 350; ADE20K 151 (SPADE ids: 0 = unknown), ngf 64, width 604. Module names equal the
published ones, so their state dicts load with only the DataParallel prefix stripped (`smis.official`).
Training (`smis.train`, `Variant(family="groupdnet")`): the SPADE objective with the KL summed over every
class code (their `KLDLoss`, `LatentSpec.class_kl = "sum"`) at lambda_KL 0.05, TTUR as SPADE.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import nn

from smis.config import UPSAMPLING, Preset
from smis.networks.latents import Latents, LatentSpec, check_label
from smis.networks.ops import check_labels, label_presence, leaky_relu_, modulate, one_hot, spectral_norm
from smis.networks.spade import param_free_norm

STRUCTURES = ("deepfashion", "cityscapes", "ade20k")
CODE_CHANNELS = 8                       # channels of each class's code map (the published 8)


@dataclass(frozen=True)
class GroupDNetConfig:
    """Sizes of one GroupDNet: which published generator class (`structure`) and its widths."""

    structure: str                      # one of STRUCTURES: the published generator class it follows
    num_classes: int                    # C, one encoder group and one code per class
    image_size: tuple[int, int]         # (H, W) of the output and of the encoder's class crops
    ngf: int                            # generator base width
    nef: int                            # encoder width (the published ConvEncoder's `ndf`)
    upsampling: str = "more"            # "normal" (5 x2 ups) | "more" (6): code grid = image / 2^ups
    fc_groups: int | None = None        # groups of `fc`; None = C (deepfashion publishes the literal 8)
    spade_hidden: int = 128             # deepfashion structure's SPADE width (the others derive theirs)
    norm: str = "syncbatch"             # SPADE's parameter-free norm
    label_lut: tuple[int, ...] | None = None   # our class id -> the model's channel (None: identity)

    @property
    def code_grid(self) -> tuple[int, int]:
        """(gh, gw) of each class code: the generator's starting grid."""
        n = UPSAMPLING[self.upsampling]
        return self.image_size[0] >> n, self.image_size[1] >> n

    @property
    def encoder_depth(self) -> int:
        """Stride-2 encoder layers: 6 when the crop width is >= 256 (published `layer6` rule), else 5."""
        return 6 if self.image_size[1] >= 256 else 5

    @property
    def instance_edges(self) -> bool:
        """The cityscapes structure reads (class mask, instance edge) pairs."""
        return self.structure == "cityscapes"

    def spec(self) -> LatentSpec:
        gh, gw = self.code_grid
        return LatentSpec(0, CODE_CHANNELS * gh * gw, self.num_classes, (0,), class_kl="sum")


# The published configurations (Seanseattle/SMIS scripts/*.sh and dataset options).
PUBLISHED: dict[str, GroupDNetConfig] = {
    "deepfashion": GroupDNetConfig("deepfashion", 8, (256, 256), ngf=160, nef=256, fc_groups=8),
    "cityscapes": GroupDNetConfig("cityscapes", 35, (256, 512), ngf=280, nef=350),
    # SPADE's ADE20K ids (0 = unknown, k = class k); ours put unknown last (smis.data.ade20k.LUT)
    "ade20k": GroupDNetConfig("ade20k", 151, (256, 256), ngf=64, nef=604, label_lut=tuple(range(1, 151)) + (0,)),
}
# synthscenes: deepfashion structure (groups C, C, C/2, C/2, C/4, C/4, C/8) with fc grouped per class;
# 64 px crops -> 5 encoder layers -> 2 x 2 code grid (8 x 2 x 2 = 32 numbers per class). Widths are
# multiples of 10 / 5 / 2 (the groups); ngf 40, SPADE width 40, nef 60 give 5.32 M G + 0.41 M E parameters,
# close to the synthscenes clvae's 5.83 M + 0.43 M.
SYNTHSCENES = GroupDNetConfig("deepfashion", 10, (64, 64), ngf=40, nef=60, upsampling="normal",
                              spade_hidden=40, norm="batch")


def groupdnet_config(preset: Preset) -> GroupDNetConfig:
    """The GroupDNet of a preset: the published structure and widths for deepfashion / cityscapes /
    ade20k (with the preset's classes: deepfashion's 16-class profile gets a 16-group model), our
    synthscenes sizes, else an error naming the fix."""
    if preset.name in PUBLISHED:
        base = PUBLISHED[preset.name]
        C = preset.num_classes
        if C == base.num_classes:
            return replace(base, image_size=tuple(preset.image_size))
        # another class count (the deepfashion profile's 16, our cityscapes' 20): the published structure with
        # the encoder width rounded up to a multiple of C (one group per class) and the ids as they come
        return replace(base, num_classes=C, image_size=tuple(preset.image_size), nef=-(-base.nef // C) * C,
                       label_lut=None)
    if preset.name == "synthscenes":
        return replace(SYNTHSCENES, num_classes=preset.num_classes, image_size=tuple(preset.image_size),
                       norm=preset.norm_G)
    raise ValueError(f"groupdnet has no sizes for preset {preset.name!r}; it has {sorted(PUBLISHED)} and "
                     "synthscenes. Fix: add a GroupDNetConfig for it in smis.networks.groupdnet.groupdnet_config")


def block_table(cfg: GroupDNetConfig) -> list[tuple[str, int, int, int]]:
    """(name, fin, fout, groups) of the residual blocks, in order, for the config's structure."""
    C, nf = cfg.num_classes, cfg.ngf
    if cfg.structure == "deepfashion":
        g = [C, C, C // 2, C // 2, C // 4, C // 4, C // 8]
        g = [max(1, x) for x in g]                                      # C < 8: at least one group
        w = [16 * nf, 16 * nf, 16 * nf, 16 * nf, 8 * nf, 4 * nf, 2 * nf, nf]
    elif cfg.structure == "cityscapes":
        g = [C, C, 20, 14, 10, 4, 1]
        w = [16 * nf, 16 * nf, 16 * nf, 16 * nf, 8 * nf, 4 * nf, 2 * nf, nf]
    elif cfg.structure == "ade20k":
        g = [C, 16, 16, 8, 4, 2, 1, 1]
        w = [16 * C, 16 * C, 32 * nf, 16 * nf, 16 * nf, 8 * nf, 4 * nf, 2 * nf, nf]
    else:
        raise ValueError(f"structure={cfg.structure!r}; choose one of {STRUCTURES}")
    names = ["head_0", "G_middle_0", "G_middle_1", "up_0", "up_1", "up_2", "up_3", "up_4"][:len(g)]
    return [(n, w[i], w[i + 1], g[i]) for i, n in enumerate(names)]


class GroupSPADE(nn.Module):
    """SPADE with grouped convolutions: norm(x) * (1 + gamma(m)) + beta(m), per-structure group layout."""

    def __init__(self,
                 channels: int,             # channels of the normalised features x
                 num_classes: int,          # C, channels of the one-hot mask
                 groups: int,               # the block's groups g
                 structure: str,            # one of STRUCTURES (their `data_mode`)
                 hidden: int = 128,         # shared-conv width of the deepfashion structure
                 norm: str = "syncbatch",   # parameter-free normalisation
                 ):
        super().__init__()
        C = num_classes
        if structure == "deepfashion":          # mask -> hidden, g groups; gamma / beta: g groups
            cin, hid, shared_groups, mod_groups = C, hidden, groups, groups
        elif structure == "cityscapes":         # (mask, edge) per class -> g channels; gamma / beta: C groups
            cin, hid, shared_groups, mod_groups = 2 * C, C * groups, C, C
        elif structure == "ade20k":             # mask -> 2 (g | C) or g channels per class; gamma / beta: g groups
            cin, hid, shared_groups, mod_groups = C, (2 * C if C % groups == 0 else C * groups), C, groups
        else:
            raise ValueError(f"structure={structure!r}; choose one of {STRUCTURES}")
        for what, n, g in (("mask channels", cin, shared_groups), ("hidden", hid, shared_groups),
                           ("hidden", hid, mod_groups), ("features", channels, mod_groups)):
            if n % g:
                raise ValueError(f"GroupDNet {structure} SPADE: {what} {n} not divisible by {g} groups "
                                 f"({C} classes, block groups {groups}); pick ngf / classes that divide")
        self.param_free_norm = param_free_norm(norm, channels)
        self.mlp_shared = nn.Sequential(nn.Conv2d(cin, hid, 3, padding=1, groups=shared_groups), nn.ReLU())
        self.mlp_gamma = nn.Conv2d(hid, channels, 3, padding=1, groups=mod_groups)
        self.mlp_beta = nn.Conv2d(hid, channels, 3, padding=1, groups=mod_groups)

    def forward(self,
                x: torch.Tensor,            # (B, ch, h, w) features
                seg: torch.Tensor,          # (B, cin, H, W) mask (cityscapes: mask / edge pairs)
                ) -> torch.Tensor:
        normalized = self.param_free_norm(x)
        seg = F.interpolate(seg, size=x.shape[2:], mode="nearest")     # (B, cin, h, w)
        actv = self.mlp_shared(seg)                                     # (B, hidden, h, w)
        return modulate(normalized, self.mlp_gamma(actv), self.mlp_beta(actv))


class GroupResBlock(nn.Module):
    """SPADE residual block with grouped convolutions (their SPADEV2ResnetBlock)."""

    def __init__(self,
                 fin: int,                  # input channels
                 fout: int,                 # output channels; fin != fout adds the 1x1 shortcut conv_s
                 groups: int,               # groups of every conv and of the SPADE modulations
                 cfg: GroupDNetConfig,      # structure, classes, SPADE width and norm
                 ):
        super().__init__()
        self.learned_shortcut = fin != fout
        fmid = min(fin, fout)
        for n in (fin, fmid, fout):
            if n % groups:
                raise ValueError(f"GroupDNet block {fin}->{fout}: {n} channels not divisible by {groups} groups; "
                                 "pick an ngf that the block groups divide")
        spade = lambda ch: GroupSPADE(ch, cfg.num_classes, groups, cfg.structure, cfg.spade_hidden, cfg.norm)
        self.conv_0 = spectral_norm(nn.Conv2d(fin, fmid, 3, padding=1, groups=groups))
        self.conv_1 = spectral_norm(nn.Conv2d(fmid, fout, 3, padding=1, groups=groups))
        if self.learned_shortcut:
            self.conv_s = spectral_norm(nn.Conv2d(fin, fout, 1, bias=False, groups=groups))
        self.norm_0 = spade(fin)
        self.norm_1 = spade(fmid)
        if self.learned_shortcut:
            self.norm_s = spade(fin)

    def forward(self, x: torch.Tensor, seg: torch.Tensor) -> torch.Tensor:
        # x (B, fin, h, w) -> (B, fout, h, w)
        x_s = self.conv_s(self.norm_s(x, seg)) if self.learned_shortcut else x
        dx = self.conv_0(leaky_relu_(self.norm_0(x, seg)))
        dx = self.conv_1(leaky_relu_(self.norm_1(dx, seg)))
        return x_s + dx


def _lut(cfg: GroupDNetConfig, inverse: bool = False) -> torch.Tensor | None:
    if cfg.label_lut is None:
        return None
    lut = torch.tensor(cfg.label_lut, dtype=torch.long)
    if sorted(cfg.label_lut) != list(range(cfg.num_classes)):
        raise ValueError(f"label_lut must permute 0..{cfg.num_classes - 1}, got {cfg.label_lut}")
    return torch.argsort(lut) if inverse else lut


class GroupDNetGenerator(nn.Module):
    """The group-decreasing generator (see module docstring): label + per-class codes -> image."""

    def __init__(self, cfg: GroupDNetConfig):
        super().__init__()
        if cfg.upsampling not in ("normal", "more"):
            raise ValueError(f"GroupDNet upsampling={cfg.upsampling!r}; the published generators use "
                             "'normal' or 'more'")
        H, W = cfg.image_size
        n_up = UPSAMPLING[cfg.upsampling]
        if H % (1 << n_up) or W % (1 << n_up):
            raise ValueError(f"image_size {cfg.image_size} must be divisible by 2^{n_up} for "
                             f"upsampling={cfg.upsampling!r}")
        self.cfg, self.spec, self.image_size, self.upsampling = cfg, cfg.spec(), (H, W), cfg.upsampling
        self.sh, self.sw = cfg.code_grid
        C = cfg.num_classes
        blocks = block_table(cfg)
        fc_groups = cfg.fc_groups or C
        if (C * CODE_CHANNELS) % fc_groups or blocks[0][1] % fc_groups:
            raise ValueError(f"GroupDNet fc: {C * CODE_CHANNELS} -> {blocks[0][1]} channels not divisible by "
                             f"fc_groups={fc_groups}; pick an ngf / fc_groups that divide")
        self.fc = nn.Conv2d(C * CODE_CHANNELS, blocks[0][1], 3, padding=1, groups=fc_groups)
        for name, fin, fout, g in blocks:
            self.add_module(name, GroupResBlock(fin, fout, g, cfg))
        self.conv_img = nn.Conv2d(blocks[6][2], 3, 3, padding=1)
        lut = _lut(cfg)
        self.register_buffer("label_lut", lut, persistent=False)       # our id -> model channel, or None
        self.register_buffer("code_order", _lut(cfg, inverse=True), persistent=False)   # model channel -> our id

    def codes(self, z: Latents) -> torch.Tensor:
        """zc (B, 1, C, 8 gh gw) -> the model's code tensor (B, 8 C, gh, gw), class-major in its channel order."""
        zc = z.zc[:, 0]                                                 # (B, C, N)
        if self.code_order is not None:
            zc = zc[:, self.code_order]                                 # model channel order
        return zc.reshape(zc.shape[0], -1, self.sh, self.sw)           # (B, 8 C, gh, gw)

    def segmap(self, label: torch.Tensor, edges: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor:
        """The SPADE input: one-hot (B, C, H, W) in the model's channel order; cityscapes: (B, 2 C, H, W)
        with each class's mask followed by the instance-edge map (zeros when `edges` is None)."""
        if self.label_lut is not None:
            label = self.label_lut[label]
        seg = one_hot(label, self.cfg.num_classes, dtype)               # (B, C, H, W)
        if not self.cfg.instance_edges:
            return seg
        B, C, H, W = seg.shape
        e = seg.new_zeros(B, 1, H, W) if edges is None else edges.to(dtype).reshape(B, 1, H, W)
        return torch.stack([seg, e.expand(B, C, H, W)], dim=2).reshape(B, 2 * C, H, W)

    def forward(self,
                label: torch.Tensor,                    # (B, H, W) class ids
                z: Latents,                             # zc (B, 1, C, 8 gh gw): one code per class
                edges: torch.Tensor | None = None,      # (B, H, W) 0/1 instance edges (cityscapes structure)
                ) -> torch.Tensor:
        """-> (B, 3, H, W) in [-1, 1]. Label and latents are checked as for the SPADE generator."""
        check_label(label, self.spec.num_classes, self.image_size)
        B = label.shape[0]
        self.spec.check_latents(z, B, "this GroupDNet generator")
        if edges is not None and tuple(edges.shape) != tuple(label.shape):
            raise ValueError(f"edges {tuple(edges.shape)} must be (B, H, W) like the label {tuple(label.shape)}")
        dtype = self.conv_img.weight.dtype
        seg = self.segmap(label, edges, dtype)
        x = self.fc(self.codes(z).to(dtype)).view(B, -1, self.sh, self.sw)    # (B, fin of head_0, gh, gw)
        up = lambda t: F.interpolate(t, scale_factor=2, mode="nearest")
        x = self.head_0(x, seg)
        x = self.G_middle_0(up(x), seg)
        if self.upsampling == "more":
            x = up(x)
        x = self.G_middle_1(x, seg)
        x = self.up_0(up(x), seg)
        x = self.up_1(up(x), seg)
        x = self.up_2(up(x), seg)
        x = self.up_3(up(x), seg)
        return torch.tanh(self.conv_img(F.leaky_relu(x, 0.2)))         # (B, 3, H, W)


def class_crops(image: torch.Tensor,            # (B, 3, H, W) photo in [-1, 1]
                label: torch.Tensor,            # (B, H, W) class ids in the model's channel order
                num_classes: int,               # C
                size: tuple[int, int],          # (He, We) every crop is resized to
                ) -> torch.Tensor:
    """GroupDNet's encoder input (B, 3 C, He, We): per class, the photo times the class mask cropped to
    the class's bounding box and resized with legacy nearest; zeros for absent classes. Vectorised over
    samples and classes (one gather). The published code finds the box from the masked photo's nonzero
    pixels; the mask gives the same box unless a class's pixel colours sum exactly to zero."""
    B, _, H, W = image.shape
    He, We = size
    mask = one_hot(label, num_classes, image.dtype)                     # (B, C, H, W)
    rows, cols = mask.amax(-1) > 0, mask.amax(-2) > 0                   # (B, C, H), (B, C, W)

    def index(hit: torch.Tensor, n: int, out: int) -> torch.Tensor:    # (B, C, n) -> (B, C, out) source rows
        ar = torch.arange(n, device=hit.device)
        lo = torch.where(hit, ar, n).amin(-1)                           # (B, C) first row (n when absent)
        hi = torch.where(hit, ar, -1).amax(-1)                          # (B, C) last row
        lo = torch.where(hi >= 0, lo, 0)
        size_in = (hi - lo + 1).clamp(min=1)                            # (B, C)
        # legacy nearest: src = min(floor(i * (in / out)), in - 1) in float32, as F.interpolate
        scale = size_in.to(torch.float32) / out                         # (B, C)
        i = torch.arange(out, device=hit.device, dtype=torch.float32)
        src = torch.floor(i * scale[..., None]).long()                  # (B, C, out)
        return lo[..., None] + torch.minimum(src, size_in[..., None] - 1)

    ys, xs = index(rows, H, He), index(cols, W, We)                     # (B, C, He), (B, C, We)
    b = torch.arange(B, device=image.device)[:, None, None, None]
    c = torch.arange(num_classes, device=image.device)[None, :, None, None]
    yy, xx = ys[..., :, None], xs[..., None, :]                         # (B, C, He, 1), (B, C, 1, We)
    pix = image.permute(0, 2, 3, 1)[b, yy, xx]                          # (B, C, He, We, 3)
    crops = pix * mask[b, c, yy, xx][..., None]                         # masked, (B, C, He, We, 3)
    return crops.permute(0, 1, 4, 2, 3).reshape(B, 3 * num_classes, He, We)


class GroupDNetEncoder(nn.Module):
    """The group-convolution encoder: per-class crops -> per-class code maps (mean, log-variance)."""

    def __init__(self, cfg: GroupDNetConfig):
        super().__init__()
        C, nef = cfg.num_classes, cfg.nef
        depth = cfg.encoder_depth
        H, W = cfg.image_size
        if (H >> depth, W >> depth) != cfg.code_grid or H % (1 << depth) or W % (1 << depth):
            raise ValueError(f"GroupDNet encoder: {depth} stride-2 layers on {cfg.image_size} crops give a "
                             f"{(H >> depth, W >> depth)} grid but the generator starts at {cfg.code_grid}; use "
                             "upsampling 'more' from 256 px crops, 'normal' below")
        if nef % C:
            raise ValueError(f"GroupDNet encoder width nef={nef} must be divisible by the {C} classes (one group each)")
        self.cfg, self.spec, self.input_size, self.depth = cfg, cfg.spec(), (H, W), depth
        widths = [nef * m for m in (1, 2, 4, 8, 8, 8)][:depth]
        cin = 3 * C
        for l, cout in enumerate(widths, start=1):
            conv = spectral_norm(nn.Conv2d(cin, cout, 3, stride=2, padding=1, bias=False, groups=C))
            self.add_module(f"layer{l}", nn.Sequential(conv, nn.InstanceNorm2d(cout, affine=False)))
            cin = cout
        self.fc_mu = nn.Conv2d(cin, CODE_CHANNELS * C, 3, padding=1, groups=C)
        self.fc_var = nn.Conv2d(cin, CODE_CHANNELS * C, 3, padding=1, groups=C)
        self.register_buffer("label_lut", _lut(cfg), persistent=False)   # our id -> model channel, or None

    def encode_crops(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, 3 C, He, We) class crops -> (mu, logvar), each (B, 8 C, gh, gw): the published forward."""
        for l in range(1, self.depth + 1):
            x = getattr(self, f"layer{l}")(x if l == 1 else F.leaky_relu(x, 0.2))
        x = F.leaky_relu(x, 0.2)
        return self.fc_mu(x), self.fc_var(x)

    def forward(self, image: torch.Tensor, label: torch.Tensor) -> tuple[Latents, Latents]:
        """image (B, 3, H, W) in [-1, 1], label (B, H, W) ids -> (mu, logvar) as Latents, zc (B, 1, C, 8 gh gw).
        Every class gets a code (absent classes: the code of an empty crop, as published)."""
        C = self.cfg.num_classes
        if image.dim() != 4 or image.shape[1] != 3:
            raise ValueError(f"image must be (B, 3, H, W) in [-1, 1], got {tuple(image.shape)}")
        check_labels(label, C)
        if label.shape[0] != image.shape[0] or label.shape[-2:] != image.shape[-2:]:
            raise ValueError(f"image {tuple(image.shape)} and label {tuple(label.shape)} must share (B, H, W)")
        present = label_presence(label, C)[:, None]                     # (B, 1, C), our ids
        model_label = self.label_lut[label] if self.label_lut is not None else label
        dtype = self.fc_mu.weight.dtype
        mu, logvar = self.encode_crops(class_crops(image.to(dtype), model_label, C, self.input_size))
        B = image.shape[0]
        def flat(t):                                                    # (B, 8 C, gh, gw) -> (B, 1, C, 8 gh gw)
            t = t.reshape(B, C, -1)
            return (t[:, self.label_lut] if self.label_lut is not None else t)[:, None]   # our id order
        return Latents(None, flat(mu), present), Latents(None, flat(logvar), present)


def build_groupdnet(preset: Preset) -> tuple[GroupDNetGenerator, GroupDNetEncoder, LatentSpec]:
    """G, E and their LatentSpec for a preset (`groupdnet_config`)."""
    cfg = groupdnet_config(preset)
    return GroupDNetGenerator(cfg), GroupDNetEncoder(cfg), cfg.spec()
