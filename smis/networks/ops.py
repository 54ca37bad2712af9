"""Vectorised per-class tensor operations shared by the generator, the encoder and the losses.

Everything here works on a whole batch at once: no Python loop over samples, classes or pixels.
Label maps are `(B, H, W)` int64 class ids in `[0, C)`.
"""
from __future__ import annotations

import warnings
from contextlib import contextmanager
from typing import Iterator

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils._pytree import tree_map


def check_labels(label: torch.Tensor, num_classes: int, size: tuple[int, int] | None = None) -> None:
    """Raise a clear error unless `label` is a (B, H, W) integer map with ids in [0, num_classes)."""
    if label.dim() != 3:
        raise ValueError(f"label must be a (B, H, W) map of class ids, got shape {tuple(label.shape)}; "
                         "add a batch dimension with label[None] or take argmax(1) of a one-hot mask")
    if label.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8):
        raise TypeError(f"label must hold integer class ids, got dtype {label.dtype}; use label.long()")
    if size is not None and tuple(label.shape[1:]) != tuple(size):
        raise ValueError(f"label is {tuple(label.shape[1:])} (H, W) but this network was built for {tuple(size)}; "
                         "resize the label map with smis.networks.resize_labels or build for that size")
    if label.numel() and not torch.compiler.is_compiling():            # no graph break under torch.compile
        lo, hi = int(label.min()), int(label.max())                    # one device sync
        if lo < 0 or hi >= num_classes:
            raise ValueError(f"label ids must lie in [0, {num_classes}), found [{lo}, {hi}]; map the "
                             "dontcare / ignore id (e.g. 255) to a class id first")


def resize_labels(label: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Resize a (B, H, W) label map with legacy `nearest` (the SPADE convention) -> (B, h, w) long."""
    if tuple(label.shape[-2:]) == tuple(size):
        return label.long()
    out = F.interpolate(label[:, None].float(), size=tuple(size), mode="nearest")  # (B, 1, h, w)
    return out[:, 0].long()


def one_hot(label: torch.Tensor, num_classes: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """(B, H, W) ids -> (B, C, H, W) one-hot mask."""
    return F.one_hot(label.long(), num_classes).permute(0, 3, 1, 2).to(dtype)


def label_presence(label: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(B, H, W) ids -> (B, C) bool: which classes occur in each sample."""
    B = label.shape[0]
    present = torch.zeros(B, num_classes, dtype=torch.bool, device=label.device)
    return present.scatter_(1, label.reshape(B, -1).long(), True)      # (B, C)


def classwise_max_pool(feat: torch.Tensor, label: torch.Tensor, num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Eq. 16-17: max of `feat` over the pixels of each class region of each sample.

    feat  (B, D, h, w) features of one encoder layer; label (B, h, w) ids at that layer's size.
    Returns pooled (B, C, D), zero for classes absent from a sample, and present (B, C) bool.
    One `scatter_reduce` over (sample, class) bins; gradients reach the arg-max pixels.
    """
    B, D, h, w = feat.shape
    if tuple(label.shape) != (B, h, w):
        raise ValueError(f"label {tuple(label.shape)} must match the feature map (B, h, w) = {(B, h, w)}; "
                         "resize it with resize_labels(label, feat.shape[-2:])")
    index = label.reshape(B, 1, h * w).long().expand(B, D, h * w)     # (B, D, hw), no copy
    pooled = feat.new_zeros(B, D, num_classes)                         # (B, D, C)
    pooled = pooled.scatter_reduce(2, index, feat.reshape(B, D, h * w), reduce="amax", include_self=False)
    return pooled.transpose(1, 2), label_presence(label, num_classes)  # (B, C, D), (B, C)


def cse_map(table: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
    """Eq. 12 by gather: out[b, :, y, x] = table[b, label[b, y, x], :].

    table (B, C, N) per-sample class vectors (`W + Z_l`); label (B, h, w) -> (B, N, h, w).
    Costs O(B N h w): no one-hot matrix product over all pixels and classes.
    """
    B, C, N = table.shape
    h, w = label.shape[-2:]
    index = label.reshape(B, 1, h * w).long().expand(B, N, h * w)     # (B, N, hw), no copy
    out = torch.gather(table.transpose(1, 2), 2, index)                # (B, N, hw)
    return out.view(B, N, h, w)


NEIGHBOURS = [(ky, kx) for ky in range(3) for kx in range(3) if (ky, kx) != (1, 1)]   # a 3x3 window's 8 off-centre taps


class BagPlan:
    """How a 3x3 conv (zero padding) reads an id map (B, h, w) with ids in [0, K): its distinct neighbourhoods.

    The conv of any map that is a function of the ids (a table row per id) is, at pixel p, the sum of 9
    rows of a tap table of (K + 1) 9 rows (per sample with `per_sample`, rows offset by b (K + 1) 9): for
    tap k = 3 ky + kx the row 9 id[y + ky - 1, x + kx - 1] + k, or row 9 K + k (zeros) outside the image.
    A bag is a distinct set of 9 rows: all pixels inside a region of one id (per sample with
    `per_sample`) share one, pixels along a straight boundary share a few. `bags` (U, 9) lists each
    bag's rows, `inv` (B h w,) each pixel's bag: conv = (row sums of each bag)[inv]. At 256x256 with 17
    regions U is ~800 against 65,536 pixels.
    """

    __slots__ = ("bags", "inv", "rows", "_csr")

    def __init__(self,
                 ids: torch.Tensor,                  # (B, h, w) int64 ids in [0, K)
                 K: int,                             # number of ids
                 per_sample: bool,                   # each sample reads its own tap table
                 ):
        B, h, w = ids.shape
        K1, dev = K + 1, ids.device
        padded = F.pad(ids, (1, 1, 1, 1), value=K)                                  # (B, h+2, w+2), K outside
        centre = ids.reshape(B * h * w)                                             # (Bhw,)
        # boundary pixels: a 3x3 neighbour differs from the centre (eight shifted views: no (Bhw, 9) copy)
        differs = torch.zeros_like(ids, dtype=torch.bool)                           # (B, h, w)
        for ky, kx in NEIGHBOURS:
            differs |= padded[:, ky:ky + h, kx:kx + w] != ids
        edge = differs.reshape(-1).nonzero()[:, 0]                                  # (E,) boundary pixels
        # their windows, read from the padded map: tap k = 3 ky + kx of pixel (b, y, x) is padded[b, y + ky, x + kx]
        b, yx = edge.div(h * w, rounding_mode="floor"), edge.remainder(h * w)
        start = (b * (h + 2) + yx.div(w, rounding_mode="floor")) * (w + 2) + yx.remainder(w)     # (E,)
        offsets = torch.tensor([ky * (w + 2) + kx for ky in range(3) for kx in range(3)], device=dev)
        windows = padded.reshape(-1)[start[:, None] + offsets]                      # (E, 9) ids
        inside = torch.arange(K, device=dev)[:, None].expand(K, 9)                  # (K, 9) bag of id c inside
        if per_sample:                                                              # id b (K + 1) + c: sample b's
            inside = (inside + torch.arange(B, device=dev)[:, None, None] * K1).reshape(B * K, 9)   # (B K, 9)
            windows = windows + (b * K1)[:, None]                                   # (E, 9)
            inv = torch.arange(B, device=dev).repeat_interleave(h * w) * K + centre  # (Bhw,)
        else:
            inv = centre.clone()
        inv[edge] = inside.shape[0] + torch.arange(edge.numel(), device=dev)
        bags = torch.cat([inside, windows])                                         # (B K + E or K + E, 9) ids
        n_ids = (B if per_sample else 1) * K1                                       # ids of the tap table
        self.rows = 9 * n_ids                                                       # R, rows of the tap table
        # keep the bags some pixel uses, one of each distinct id set (boundary pixels repeat a few patterns); ranks
        # in the lexicographic order of the id sets, which is that of the row sets (row 9 id + k of tap k)
        used = torch.zeros(bags.shape[0], dtype=torch.bool, device=dev).index_fill_(0, inv, True)
        bags = bags[used]
        rank, U = _row_ranks(bags, n_ids)                                           # equal ids, equal rank
        first = torch.empty(U, dtype=torch.long, device=dev).scatter_(0, rank, torch.arange(rank.numel(), device=dev))
        remap = torch.full(used.shape, -1, dtype=inv.dtype, device=dev).masked_scatter_(used, rank)
        self.bags = bags[first] * 9 + torch.arange(9, device=dev)                   # (U, 9) tap-table rows
        self.inv = remap[inv]                                                       # (Bhw,) in [0, U)
        self._csr: dict = {}

    def transposed(self, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """(inv^T (U, B h w), bags^T (R, U)) as sparse CSR matrices of ones, cached per dtype: the CPU
        backward (pixel -> bag sums, bag -> tap-row sums; one parallel region each)."""
        if dtype not in self._csr:
            U, n = self.bags.shape[0], self.inv.numel()
            flat = self.bags.reshape(-1)                                            # (9U,) row of (bag, tap)
            self._csr[dtype] = (_csr_of_ones(self.inv, None, U, n, dtype),
                                _csr_of_ones(flat, torch.arange(flat.numel(), device=flat.device) // 9, self.rows, U,
                                             dtype))
        return self._csr[dtype]


def _row_ranks(rows: torch.Tensor,                 # (M, T) int64 entries in [0, base)
               base: int,
               ) -> tuple[torch.Tensor, int]:
    """(rank (M,), count): equal rows get equal ranks in [0, count). 1-D `torch.unique` on int64 keys that
    pack the previous rank and as many columns as fit in 62 bits (torch.unique(dim=0) compares rows one
    pair at a time on the CPU)."""
    M, T = rows.shape
    rank, count, col = torch.zeros(M, dtype=torch.long, device=rows.device), 1, 0
    while col < T:
        key = rank
        while col < T and count * base < 2 ** 62:
            key, count, col = key * base + rows[:, col], count * base, col + 1
        uniq, rank = torch.unique(key, return_inverse=True)
        count = uniq.numel()
    return rank, count


def _csr_of_ones(row: torch.Tensor,                # (nnz,) row of each entry
                 col: torch.Tensor | None,         # (nnz,) column of each entry; None = arange(nnz)
                 rows: int, cols: int,             # matrix shape
                 dtype: torch.dtype,
                 ) -> torch.Tensor:
    """Sparse CSR (rows, cols) matrix with a 1 at each (row[i], col[i])."""
    order = torch.argsort(row, stable=True)                                          # (nnz,)
    crow = F.pad(torch.bincount(row, minlength=rows).cumsum(0), (1, 0))             # (rows + 1,)
    col = order if col is None else col[order]
    with warnings.catch_warnings():                                                  # "CSR support is in beta"
        warnings.simplefilter("ignore", UserWarning)
        return torch.sparse_csr_tensor(crow, col, torch.ones(row.numel(), dtype=dtype, device=row.device),
                                       size=(rows, cols), check_invariants=False)


CPU_BACKWARD = "csr"                       # "csr" | "index_add": how the gathers' backward sums on the CPU


class _BagSum(torch.autograd.Function):
    """(U, O) = sum of each bag's 9 rows of the tap table P (R, O)."""

    @staticmethod
    def forward(ctx, P: torch.Tensor, plan: BagPlan) -> torch.Tensor:
        ctx.plan = plan
        return F.embedding_bag(plan.bags, P, mode="sum")                # (U, O)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: torch.Tensor):
        plan, grad = ctx.plan, grad.contiguous()                        # (U, O)
        if grad.device.type == "cpu" and CPU_BACKWARD == "csr":         # embedding_bag's own backward sorts
            return plan.transposed(grad.dtype)[1] @ grad, None          # every call: slow on a busy CPU
        g = grad.new_zeros(plan.rows, grad.shape[1])
        return g.index_add_(0, plan.bags.reshape(-1), grad.repeat_interleave(9, 0)), None


class _Gather(torch.autograd.Function):
    """(B h w, O) = rows[inv]: each pixel's bag row."""

    @staticmethod
    def forward(ctx, rows: torch.Tensor, plan: BagPlan) -> torch.Tensor:
        ctx.plan, ctx.U = plan, rows.shape[0]
        return rows.index_select(0, plan.inv)                           # (B h w, O)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: torch.Tensor):
        plan, grad = ctx.plan, grad.contiguous()                        # (B h w, O)
        if grad.device.type == "cpu" and CPU_BACKWARD == "csr":
            return plan.transposed(grad.dtype)[0] @ grad, None
        return grad.new_zeros(ctx.U, grad.shape[1]).index_add_(0, plan.inv, grad), None


def bag_sum(P: torch.Tensor, plan: BagPlan) -> torch.Tensor:
    """P (R, O) tap table -> (U, O) per-bag conv outputs."""
    return _BagSum.apply(P, plan)


def gather_bags(rows: torch.Tensor, plan: BagPlan, B: int, h: int, w: int) -> torch.Tensor:
    """rows (U, O) per-bag values -> (B, O, h, w) per pixel, channels_last strides."""
    return _Gather.apply(rows, plan).view(B, h, w, rows.shape[1]).permute(0, 3, 1, 2)


def tap_table(weight: torch.Tensor,                # (O, Cin, 3, 3) conv weight
              bias: torch.Tensor | None,           # (O,) conv bias
              table: torch.Tensor | None,          # None (one-hot ids, Cin = K), (K, Cin) shared or (B, K, Cin)
              K: int,                              # number of ids
              ) -> torch.Tensor:
    """The (R, O) tap table of a 3x3 conv of a map whose pixel p holds table[id[p]]: row 9 id + k = table[id] W_k^T.

    Rows: for each id (and sample, with a (B, K, Cin) table) its 9 taps, then 9 zero rows (outside the
    image); the bias sits in the centre tap's rows, which every pixel reads exactly once. One matrix
    product (K, Cin) x (Cin, 9 O), no transposed copies.
    """
    O, Cin = weight.shape[:2]
    if weight.shape[2:] != (3, 3):
        raise ValueError(f"piecewise conv needs a 3x3 kernel, got {tuple(weight.shape)}; use the dense conv")
    width = K if table is None else table.shape[-1]
    if Cin != width:
        raise ValueError(f"conv expects {Cin} input channels but the conditioning map has {width} "
                         "(N with a CSE table, C one-hot); build SPADE with cond_channels matching the map")
    taps = weight.permute(1, 2, 3, 0).reshape(Cin, 9 * O)              # (Cin, 9 O): [c, 9 k... ] = W[:, c, ky, kx]
    P = taps if table is None else table.to(weight.dtype) @ taps      # (K, 9 O) or (B, K, 9 O)
    P = F.pad(P, (0, 0, 0, 1))                                          # (..., K + 1, 9 O), id K = zeros
    if bias is not None:                                                # the centre tap is always inside
        centre = torch.zeros(K + 1, 9, 1, dtype=P.dtype, device=P.device)
        centre[:K, 4] = 1
        P = (P.unflatten(-1, (9, O)) + centre * bias).flatten(-2)      # (..., K + 1, 9 O)
    return P.reshape(-1, O)                                             # (R, O), row (b (K + 1) + id) 9 + k


class PiecewiseMap:
    """A conditioning map that is constant on each label region, kept as (label, table) instead of pixels.

    Dense equivalent (`dense()`): the one-hot mask `one_hot(label, C)` (B, C, h, w) when `table` is None,
    else the CSE map `cse_map(table, label)` (B, N, h, w) of Eq. 12. SPADE's shared conv accepts either;
    on this form it runs as gathers (`piecewise_conv3x3`) instead of a convolution over C or N channels.
    Torch functions applied to a PiecewiseMap see its dense map.
    """

    __slots__ = ("label", "table", "num_classes", "_cache", "_dense")

    def __init__(self,
                 label: torch.Tensor,                 # (B, h, w) int64 class ids in [0, C)
                 table: torch.Tensor | None,          # (B, C, N) per-sample class vectors; None = one-hot
                 num_classes: int,                    # C
                 _cache: dict | None = None,          # label-only structures shared with maps of this label
                 ):
        if label.dim() != 3:
            raise ValueError(f"PiecewiseMap label must be (B, h, w) ids, got shape {tuple(label.shape)}; "
                             "add a batch dimension with label[None]")
        if table is not None and (table.dim() != 3 or table.shape[0] != label.shape[0]
                                  or table.shape[1] != num_classes):
            raise ValueError(f"PiecewiseMap table must be (B, C, N) = ({label.shape[0]}, {num_classes}, N), got "
                             f"{tuple(table.shape)}; pass the per-sample class table W + Z_l of Eq. 12")
        self.label, self.table, self.num_classes = label.long(), table, num_classes
        self._cache = {} if _cache is None else _cache                # depends on the label only, never the table
        self._dense: dict = {}                                          # dtype -> dense map of this object

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        """Torch functions see the dense map (e.g. torch.allclose(m, ref) in a forward hook)."""
        dense = lambda a: a.dense() if isinstance(a, PiecewiseMap) else a
        return func(*tree_map(dense, args), **tree_map(dense, kwargs or {}))

    def with_table(self, table: torch.Tensor | None) -> "PiecewiseMap":
        """The same label with another class table (B, C, N), sharing the cached label structures."""
        return PiecewiseMap(self.label, table, self.num_classes, self._cache)

    @property
    def channels(self) -> int:
        """Channels of the dense map: N with a table, C for the one-hot mask."""
        return self.num_classes if self.table is None else self.table.shape[2]

    @property
    def size(self) -> tuple[int, int]:
        return tuple(self.label.shape[-2:])

    def resized(self, size: tuple[int, int]) -> "PiecewiseMap":
        """The same map at (h, w) by legacy nearest on the label: equals F.interpolate(dense(), size, 'nearest')."""
        size = tuple(size)
        if size == self.size:
            return self
        key = ("resized", size)
        if key not in self._cache:
            self._cache[key] = PiecewiseMap(resize_labels(self.label, size), None, self.num_classes)
        return self._cache[key].with_table(self.table)

    def dense(self, dtype: torch.dtype | None = None) -> torch.Tensor:
        """(B, N or C, h, w): the map as pixels (the unoptimised path's input), built once per object and dtype.
        dtype None: float32 one-hot, the table's dtype for CSE maps."""
        if dtype not in self._dense:
            if self.table is None:
                self._dense[dtype] = one_hot(self.label, self.num_classes, dtype or torch.float32)
            else:
                out = cse_map(self.table, self.label)
                self._dense[dtype] = out if dtype is None else out.to(dtype)
        return self._dense[dtype]

    def plan(self) -> BagPlan:
        """The label's `BagPlan` (per sample with a table: each sample has its own class vectors), cached."""
        key = ("plan", self.table is not None)
        if key not in self._cache:
            self._cache[key] = BagPlan(self.label, self.num_classes, per_sample=self.table is not None)
        return self._cache[key]

    def plan2(self) -> BagPlan:
        """The `BagPlan` of `plan().inv` as an id map: how a second 3x3 conv reads a function of the first
        conv's bags (SPADE's mlp_gamma / mlp_beta on the ReLU of mlp_shared), cached."""
        key = ("plan2", self.table is not None)
        if key not in self._cache:
            first = self.plan()
            self._cache[key] = BagPlan(first.inv.view(self.label.shape), first.bags.shape[0], per_sample=False)
        return self._cache[key]


def piecewise_conv3x3(weight: torch.Tensor,        # (O, Cin, 3, 3) conv weight (Cin = N with a table, C one-hot)
                      bias: torch.Tensor | None,   # (O,) conv bias
                      cond: PiecewiseMap,          # the piecewise-constant input map at the output's size
                      ) -> torch.Tensor:
    """Conv2d(kernel 3, padding 1) of a piecewise-constant map by gathers -> (B, O, h, w), channels_last strides.

    conv(m)[b, :, y, x] = bias + sum_k P_k[b, L[b, y + dy_k, x + dx_k]] with P_k = T_b W_k^T (C, O), T_b
    the class table (identity for one-hot) and out-of-image taps reading a zero row. The 9-row sums
    are formed once per distinct 3x3 neighbourhood (`BagPlan`: one per (sample, class) inside regions,
    a few hundred along boundaries), then gathered to pixels: O(B h w O) instead of the conv's
    O(B h w 9 O Cin). The backward gives the conv's weight, bias and table gradients up to float
    summation order.
    """
    B, h, w = cond.label.shape
    rows = bag_sum(tap_table(weight, bias, cond.table, cond.num_classes), cond.plan())   # (U, O)
    return gather_bags(rows, cond.plan(), B, h, w)                      # (B, O, h, w)


def inference(*tensors: torch.Tensor) -> bool:
    """True when no gradient is recorded through `tensors`: an op may then overwrite a fresh intermediate."""
    return not (torch.is_grad_enabled() and any(t.requires_grad for t in tensors))


def modulate(normalized: torch.Tensor,          # (B, ch, h, w) parameter-free normalised features
             gamma: torch.Tensor,               # (B, ch, h, w) scale map; 1 + gamma with plus_one=False
             beta: torch.Tensor,                # (B, ch, h, w) shift map
             plus_one: bool = True,             # False: `gamma` already holds 1 + gamma (SPADE's gathers add 1 per
                                                # bag row instead of per pixel: the same floats, one pass fewer)
             ) -> torch.Tensor:
    """SPADE's normalized * (1 + gamma) + beta (Park et al. 2019, Eq. 1) -> (B, ch, h, w).

    At inference it is computed in one buffer instead of three, in the layout the out-of-place expression gives
    (its first operand's, `normalized`, dense and with unambiguous strides: no size-1 dimension) and with the same
    floats (x * (1 + g) is (1 + g) * x exactly): the generators are memory-bound here on a CPU, and gamma / beta
    may be channels_last views of gathers while x is NCHW. Otherwise out of place, as autograd needs.
    """
    if (inference(normalized, gamma, beta) and 1 not in normalized.shape
            and gamma.shape == normalized.shape == beta.shape
            and (normalized.is_contiguous() or normalized.is_contiguous(memory_format=torch.channels_last))):
        fresh = gamma._base is None and gamma.stride() == normalized.stride()
        if plus_one:
            out = gamma.add_(1) if fresh else torch.add(gamma, 1, out=torch.empty_like(normalized))
        else:
            out = gamma if fresh else torch.empty_like(normalized).copy_(gamma)
        return out.mul_(normalized).add_(beta)
    return normalized * ((1 + gamma) if plus_one else gamma) + beta


def leaky_relu_(x: torch.Tensor, slope: float = 0.2) -> torch.Tensor:
    """leaky_relu of a fresh intermediate `x`, in place at inference (the same floats), out of place otherwise."""
    return F.leaky_relu(x, slope, inplace=inference(x) and x._base is None)


def spectral_norm(module: nn.Module) -> nn.Module:
    """PyTorch's standard spectral norm (state keys weight_orig, weight_u, weight_v)."""
    return nn.utils.spectral_norm(module)


@contextmanager
def frozen_spectral_norm(module: nn.Module) -> Iterator[nn.Module]:
    """Within the block, `module`'s spectral-normed layers skip the power iteration (the eval-mode path of
    torch's hook): they divide by sigma = u^T W v with the u, v that the last training-mode forward left, so a
    second forward in the same step sees exactly the normalised weights of the first. The training step uses it
    to run D on the real images without gradients after D on the fakes (one power iteration per step, as one
    call on the concatenated batch has). Only the layers' flags change (no other layer's mode); restored after."""
    layers = [m for m in module.modules() if hasattr(m, "weight_u") and m.training]
    for m in layers:
        m.training = False
    try:
        yield module
    finally:
        for m in layers:
            m.training = True


def init_weights(module: nn.Module, gain: float = 0.02) -> nn.Module:
    """SPADE's initialisation: Xavier-normal (gain 0.02) conv / linear weights, zero biases.

    Spectral-normed layers are initialised through `weight_orig`. Embeddings keep N(0, 1).
    """
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            weight = m.weight_orig if hasattr(m, "weight_orig") else m.weight
            nn.init.xavier_normal_(weight.data, gain=gain)
            if m.bias is not None:
                nn.init.zeros_(m.bias.data)
    return module
