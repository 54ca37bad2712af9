"""Confidence intervals over masks, for the tables of notebooks 03-05.

Every score of a variant is measured on the same test masks with the same seeds as the other
variants', so a comparison is *paired*: the interval of a difference is computed from the per-mask
differences (much narrower than two unpaired intervals side by side).

    mean_ci(x)                      mean and 95 % interval of a per-mask score (normal approximation)
    paired_ci(a, b)                 the same for the per-mask differences a - b
    bootstrap_weights(n, ...)       (R, n) resampling counts; a statistic of the pooled data under each
                                    row (e.g. mIoU of summed confusion matrices) gives its interval

    wilson_interval(k, n)           95 % interval of a share k / n (the edits' per-layer change rates)
    confusion_matrix(pred, label, C)   (C, C) pixel counts; confusion_matrices: one per mask
    miou(cm), pixel_accuracy(cm)    the field's dataset-level mIoU (mask fidelity) and pixel accuracy
    miou_ci(per_mask, other)        mIoU with its bootstrap interval over masks, paired with another variant

mIoU is not a mean over masks (it pools pixels of all masks into one confusion matrix), so its
interval comes from the bootstrap over masks (`miou_ci`), paired the same way.
"""
from __future__ import annotations

import numpy as np
import torch

Z95 = 1.959963984540054        # two-sided 95 % quantile of the standard normal
_INT_DTYPES = (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8)


def mean_ci(x,                           # per-mask scores (n,), NaN entries left out
            z: float = Z95,              # normal quantile of the interval (1.96: 95 %)
            ) -> tuple[float, float, float]:
    """(mean, low, high): mean +- z sd / sqrt(n) over the finite entries; (mean, NaN, NaN) for n < 2."""
    x = np.asarray(x, np.float64).reshape(-1)
    x = x[np.isfinite(x)]
    if x.size == 0:
        return float("nan"), float("nan"), float("nan")
    m = float(x.mean())
    if x.size < 2:
        return m, float("nan"), float("nan")
    half = z * float(x.std(ddof=1)) / np.sqrt(x.size)
    return m, m - half, m + half


def paired_ci(a, b,                      # per-mask scores of two variants on the same masks, (n,) each
              z: float = Z95,
              ) -> tuple[float, float, float]:
    """(mean difference, low, high) of a - b over the masks where both are finite."""
    a, b = np.asarray(a, np.float64).reshape(-1), np.asarray(b, np.float64).reshape(-1)
    if a.shape != b.shape:
        raise ValueError(f"paired scores need the same masks: got {a.size} and {b.size} values; evaluate both "
                         "variants on the same indices")
    return mean_ci(a - b, z)


def bootstrap_weights(n: int,            # masks
                      replicates: int = 1000,
                      seed: int = 0,
                      ) -> np.ndarray:
    """(R, n) float64 counts: row r = how often each mask is drawn in bootstrap replicate r (each row
    sums to n). The same seed gives the same rows, so two variants resampled with one call are paired."""
    if n < 1 or replicates < 1:
        raise ValueError(f"bootstrap needs n >= 1 masks and replicates >= 1, got n={n}, replicates={replicates}")
    draws = np.random.default_rng(seed).integers(0, n, size=(replicates, n))                 # (R, n)
    rows = np.repeat(np.arange(replicates), n)
    return np.bincount(rows * n + draws.reshape(-1), minlength=replicates * n).reshape(replicates, n).astype(np.float64)


def percentile_interval(values: np.ndarray,   # (R,) statistic over bootstrap replicates
                        level: float = 0.95,
                        ) -> tuple[float, float]:
    """(low, high) percentile interval of the finite replicate values."""
    v = np.asarray(values, np.float64)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return float("nan"), float("nan")
    lo, hi = np.quantile(v, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)


def wilson_interval(k,              # successes (array-like of counts)
                    n,              # trials (array-like of counts, same shape)
                    z: float = 1.96,  # normal quantile: 1.96 for a 95 % interval
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Wilson score interval (Wilson 1927) of a share k / n: (low, high) arrays; NaN where n = 0. Stays inside
    [0, 1] and is not degenerate at k = 0 or k = n (where the normal interval collapses to a point)."""
    k, n = np.asarray(k, dtype=float), np.asarray(n, dtype=float)
    safe = np.maximum(n, 1)
    p = k / safe
    centre = (p + z * z / (2 * safe)) / (1 + z * z / safe)
    half = z * np.sqrt(p * (1 - p) / safe + z * z / (4 * safe * safe)) / (1 + z * z / safe)
    nan = np.where(n > 0, 0.0, np.nan)
    return np.clip(centre - half, 0, 1) + nan, np.clip(centre + half, 0, 1) + nan

# ---------------------------------------------------------------------------------------------
# Confusion matrices and mIoU (mask fidelity: smis.segmenter)


def check_ids(ids: torch.Tensor,                # integer tensor of class ids, any shape
               num_classes: int,                 # C
               what: str,                        # the argument's name, for the message
               ignore_index: int | None = None,  # an id allowed besides [0, C) (pixels to skip)
               ) -> None:
    """Integer ids (bool / float refused, never truncated) in [0, C) or equal to `ignore_index`. One sync."""
    if not isinstance(ids, torch.Tensor):
        raise TypeError(f"{what} must be a torch tensor of class ids, got {type(ids).__name__}; "
                        "convert it with torch.as_tensor(x, dtype=torch.long)")
    if ids.dtype not in _INT_DTYPES:
        raise TypeError(f"{what} must hold integer class ids, got dtype {ids.dtype}; float or bool ids are refused "
                        "rather than truncated: take argmax(1) of logits, or cast deliberately with .long()")
    if not ids.numel():
        return
    kept = ids if ignore_index is None else ids[ids != ignore_index]
    if not kept.numel():
        return
    lo, hi = torch.stack([kept.min(), kept.max()]).tolist()            # one device sync
    if lo < 0 or hi >= num_classes:
        extra = "" if ignore_index is None else f" (or the ignore_index {ignore_index})"
        raise ValueError(f"{what} ids must lie in [0, {num_classes}){extra}, found [{lo}, {hi}]; map the dontcare "
                         "id to a class id or pass it as ignore_index, or raise num_classes")


def confusion_matrix(pred: torch.Tensor,                 # predicted ids, any shape
                     label: torch.Tensor,                # true ids, the same shape
                     num_classes: int,                   # C
                     ignore_index: int | None = None,    # label id whose pixels are not counted
                     ) -> torch.Tensor:
    """(C, C) int64 counts: entry [t, p] = pixels of true class t predicted as p (rows truth, columns
    prediction), by one `torch.bincount` over t C + p. Ids must be integers in [0, C); label pixels
    equal to `ignore_index` are skipped (their prediction may be anything in [0, C))."""
    if not isinstance(pred, torch.Tensor) or not isinstance(label, torch.Tensor) or pred.shape != label.shape:
        shapes = [tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__ for t in (pred, label)]
        raise ValueError(f"pred {shapes[0]} and label {shapes[1]} must be tensors of the same shape; take "
                         "logits.argmax(1) for pred and pass the (B, H, W) mask as label")
    num_classes = int(num_classes)
    if num_classes < 1:
        raise ValueError(f"num_classes={num_classes}: must be >= 1")
    check_ids(label, num_classes, "label", ignore_index)
    check_ids(pred, num_classes, "pred")
    label, pred = label.reshape(-1).long(), pred.reshape(-1).to(label.device).long()   # (P,)
    if ignore_index is not None:
        keep = label != ignore_index
        label, pred = label[keep], pred[keep]
    counts = torch.bincount(label * num_classes + pred, minlength=num_classes * num_classes)
    return counts.view(num_classes, num_classes)                        # (C, C)


def confusion_matrices(pred: torch.Tensor,               # (B, ...) predicted ids
                       label: torch.Tensor,              # (B, ...) true ids, the same shape
                       num_classes: int,                 # C
                       ignore_index: int | None = None,  # label id whose pixels are not counted
                       ) -> torch.Tensor:
    """(B, C, C) int64: one confusion matrix per leading index (per mask), by one `torch.bincount` over
    b C^2 + t C + p. Their sum over B is `confusion_matrix(pred, label)`."""
    if not isinstance(pred, torch.Tensor) or not isinstance(label, torch.Tensor) or pred.shape != label.shape \
            or pred.dim() < 1:
        shapes = [tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__ for t in (pred, label)]
        raise ValueError(f"pred {shapes[0]} and label {shapes[1]} must be tensors of the same shape (B, ...)")
    C, B = int(num_classes), pred.shape[0]
    check_ids(label, C, "label", ignore_index)
    check_ids(pred, C, "pred")
    label, pred = label.reshape(B, -1).long(), pred.reshape(B, -1).to(label.device).long()   # (B, P)
    idx = torch.arange(B, device=label.device)[:, None] * (C * C) + label * C + pred         # (B, P)
    if ignore_index is not None:
        idx = idx[label != ignore_index]
    return torch.bincount(idx.reshape(-1), minlength=B * C * C).view(B, C, C)


def miou(confusion: torch.Tensor) -> tuple[float, torch.Tensor]:
    """(mean IoU over the classes that occur in the labels or the predictions, per-class IoU (C,) float64
    with NaN for classes absent from both). IoU_c = TP / (TP + FP + FN) from the (C, C) confusion
    matrix of `confusion_matrix` (rows truth, columns prediction)."""
    if not isinstance(confusion, torch.Tensor) or confusion.dim() != 2 or confusion.shape[0] != confusion.shape[1]:
        shape = tuple(confusion.shape) if isinstance(confusion, torch.Tensor) else type(confusion).__name__
        raise ValueError(f"confusion must be a square (C, C) tensor from confusion_matrix, got {shape}")
    cm = confusion.double()
    tp = cm.diagonal()                                                  # (C,)
    union = cm.sum(0) + cm.sum(1) - tp                                  # TP + FP + FN, (C,)
    iou = torch.where(union > 0, tp / union.clamp(min=1), torch.full_like(tp, float("nan")))
    if not bool((union > 0).any()):
        raise ValueError("the confusion matrix counts no pixel, so mIoU is undefined; pass images and labels "
                         "(with pixels that are not all ignore_index)")
    return float(iou.nanmean()), iou.cpu()


def miou_ci(per_mask: torch.Tensor | np.ndarray,       # (N, C, C) confusion matrices of N masks
            other: torch.Tensor | np.ndarray | None = None,  # (N, C, C) of another variant on the same masks
            replicates: int = 1000,                      # bootstrap replicates
            seed: int = 0,                               # the replicates' seed (same seed: same resampled masks)
            level: float = 0.95,
            ) -> dict[str, float]:
    """mIoU of the pooled masks with a bootstrap interval over masks: {"miou", "low", "high"}; with `other`
    also the paired difference mIoU(per_mask) - mIoU(other) under the same resampled masks:
    {"difference", "difference_low", "difference_high"}. Vectorised: each replicate's pooled confusion is
    a row of (R, N) resampling counts times the (N, C^2) per-mask matrices."""
    def as_np(x, what):
        x = x.cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
        if x.ndim != 3 or x.shape[1] != x.shape[2] or x.shape[0] < 1:
            raise ValueError(f"{what} must be (N, C, C) per-mask confusion matrices (MaskFidelity(...).compute()"
                             f"['per_mask']), got shape {x.shape}")
        return x.astype(np.float64)

    def miou_rows(cm):                                                  # (R, C, C) -> (R,)
        tp = np.diagonal(cm, axis1=1, axis2=2)
        union = cm.sum(1) + cm.sum(2) - tp
        with np.errstate(invalid="ignore", divide="ignore"):
            iou = np.where(union > 0, tp / np.maximum(union, 1), np.nan)
        return np.nanmean(iou, axis=1)

    a = as_np(per_mask, "per_mask")
    N, C = a.shape[0], a.shape[1]
    w = bootstrap_weights(N, replicates, seed)                          # (R, N)
    pooled = np.concatenate([np.ones((1, N)), w])                       # row 0: the data itself
    ra = miou_rows((pooled @ a.reshape(N, -1)).reshape(-1, C, C))
    out = {"miou": float(ra[0])}
    out["low"], out["high"] = percentile_interval(ra[1:], level)
    if other is not None:
        b = as_np(other, "other")
        if b.shape != a.shape:
            raise ValueError(f"paired mIoU needs the same masks: per_mask {a.shape} vs other {b.shape}")
        d = ra - miou_rows((pooled @ b.reshape(N, -1)).reshape(-1, C, C))
        out["difference"] = float(d[0])
        out["difference_low"], out["difference_high"] = percentile_interval(d[1:], level)
    return out


def pixel_accuracy(confusion: torch.Tensor) -> float:
    """Correctly labelled pixels / counted pixels of a (C, C) confusion matrix."""
    total = confusion.sum()
    if not int(total):
        raise ValueError("the confusion matrix counts no pixel, so pixel accuracy is undefined")
    return float(confusion.diagonal().sum().double() / total.double())
