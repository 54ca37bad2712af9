"""Confidence intervals over masks, for the tables of notebooks 03-05.

Every score of a variant is measured on the same test masks with the same seeds as the other
variants', so a comparison is *paired*: the interval of a difference is computed from the per-mask
differences (much narrower than two unpaired intervals side by side).

    mean_ci(x)                      mean and 95 % interval of a per-mask score (normal approximation)
    paired_ci(a, b)                 the same for the per-mask differences a - b
    bootstrap_weights(n, ...)       (R, n) resampling counts; a statistic of the pooled data under each
                                    row (e.g. mIoU of summed confusion matrices) gives its interval

mIoU is not a mean over masks (it pools pixels of all masks into one confusion matrix), so its
interval comes from the bootstrap over masks (`smis.segmenter.miou_ci`), paired the same way.
"""
from __future__ import annotations

import numpy as np

Z95 = 1.959963984540054        # two-sided 95 % quantile of the standard normal


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
