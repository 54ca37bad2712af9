"""Every system against clvae, and the paper's statements about the comparison systems, measured (issue 21).

    table = systems_vs_reference(results)                 # every system minus clvae, per score, paired 95 % CIs
    score = class_independence(results)                   # per mask: how often other classes co-change colour mode
    class_independence_table(results)                     # per system: its mean, interval, difference to clvae
    bins, trend = class_count_trend(results["groupdnet"], results["clvae"], classes_per_mask(test, indices))
    found = statements(results, n_classes)                # holds / does not hold, each with its interval

Everything is paired: every system saw the same masks with the same per-mask seeds (`smis.evaluate.mask_seed`),
so each comparison is a per-mask difference with a 95 % interval over masks (`smis.stats`); the pooled scores
are resampled over masks: mask mIoU by the paired bootstrap of `smis.tables.paired_comparison`, FD by a paired
leave-one-mask-out jackknife (`fd_paired_interval`, from the evaluations' FD features of one sample per mask).
Without the real images' statistics (`fd_real`) the FD difference has no interval, and its part is never "holds".

The statements (paper Sec. 4.3 and its Tables 2 and 4):
- *cIMLE varies colour globally* (`CIMLE_GLOBAL`): cIMLE's class co-change rate (`class_independence`) is above
  clvae's, the paired interval of the difference above 0.
- *GroupDNet suffers from a large number of classes* (`GROUPDNET_CLASSES`): the slope of
  log(diversity groupdnet / diversity clvae) per mask against the mask's number of classes is below 0, its
  bootstrap interval over masks below 0 (`class_count_trend`). The log ratio makes the test relative to clvae:
  a uniform factor between the two systems, or a trend both share, gives slope 0.
- *Weakening the KL (GauGAN-VAE*, gaugan_vae_lowkl) raises diversity but degrades quality*
  (`LOWKL_TRADE`): against gaugan_vae, diversity higher, top-1 GT-similarity higher (further), mask mIoU lower,
  FD higher, each with its interval excluding 0. It holds when every part with an interval holds.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from smis.evaluate import Columns, PriorEval, load_pairs
from smis.networks.ops import label_presence
from smis.stats import Z95, bootstrap_weights, mean_ci, paired_ci, percentile_interval
from smis.tables import MIOU, paired_comparison

REFERENCE = "clvae"                          # the system every other one is compared with
CO_CHANGE = "class co-change rate"           # class_independence's per-mask score
CIMLE_GLOBAL = "cIMLE varies colour globally"
GROUPDNET_CLASSES = "GroupDNet suffers from a large number of classes"
LOWKL_TRADE = "GauGAN-VAE* is more diverse but worse on top-1, FD and mask mIoU"
HOLDS, FAILS = "holds", "does not hold"


# ---------------------------------------------------------------------------------------------
# FD with a paired interval over masks


def _fd_replicates(F: np.ndarray,           # (n, D) features of one sample per mask
                   w: np.ndarray,           # (R, n) bootstrap counts, each row summing to n
                   mu_r: np.ndarray,        # (D,) real images' feature mean
                   S_r: np.ndarray,         # (D, D) real images' feature covariance (N - 1 denominator)
                   ) -> np.ndarray:
    """FD (`smis.metrics.frechet_distance`) of the samples reweighted by each row of w to the real statistics,
    (R,), through n x n matrices only: with A = diag(sqrt w)(F - 1 mu_w^T), S_w = A^T A / (n - 1) and
    tr (S_w S_r)^(1/2) = sum sqrt(eig(A S_r A^T) / (n - 1)); A S_r A^T, |mu_w - mu_r|^2 and tr S_w all follow
    from the Gram matrices F S_r F^T and F F^T (n x n), so a replicate costs one n x n eigendecomposition."""
    n = F.shape[0]
    P, Q, u = F @ S_r @ F.T, F @ F.T, F @ mu_r                                      # (n, n), (n, n), (n,)
    Pw, Qw = w @ P / n, w @ Q / n                                                   # (R, n): F S_r mu_w, F mu_w
    wPw, wQw = (Pw * w).sum(1) / n, (Qw * w).sum(1) / n                             # (R,): mu_w S_r mu_w, |mu_w|^2
    mean_term = wQw - 2 * (w @ u) / n + mu_r @ mu_r                                 # |mu_w - mu_r|^2
    trace_w = (w @ np.diag(Q) - n * wQw) / (n - 1)                                  # tr S_w
    M = P[None] - Pw[:, :, None] - Pw[:, None, :] + wPw[:, None, None]              # (R, n, n)
    root = np.sqrt(w)
    M = root[:, :, None] * M * root[:, None, :]
    eig = np.linalg.eigvalsh((M + M.transpose(0, 2, 1)) / 2) / (n - 1)              # (R, n)
    return mean_term + trace_w + np.trace(S_r) - 2 * np.sqrt(np.clip(eig, 0, None)).sum(1)


def fd_paired_interval(a: np.ndarray,           # (n, D) FD features of system a, one sample per mask
                       b: np.ndarray,           # (n, D) system b's, the same masks in the same order
                       real,                    # the real images' FrechetDistance, or its (mu, sigma)
                       z: float = Z95,          # normal quantile of the interval
                       ) -> dict:
    """FD(a) - FD(b) with a paired leave-one-mask-out jackknife interval: the difference with mask i left out of
    both systems, for every i, gives the standard error sqrt((n - 1) / n sum (d_i - mean d)^2) and the interval
    difference +- z SE. (A jackknife, not a bootstrap: FD is biased under resampling with duplicates, which moves
    a percentile interval off the estimate; and n replicates cost n small eigendecompositions.)
    {"a", "b", "difference" (all masks), "CI low", "CI high", "masks"}."""
    mu_r, S_r = real.statistics() if hasattr(real, "statistics") else real
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    n = a.shape[0] if a.ndim == 2 else 0
    if a.shape != b.shape or n < 3:
        raise ValueError(f"paired FD needs (masks, D) features of both systems on the same >= 3 masks, got {a.shape} "
                         f"and {b.shape}; evaluate both with smis.evaluate.evaluate_prior and fd_real")
    ones = np.ones((1, n))
    fa, fb = _fd_replicates(a, ones, mu_r, S_r)[0], _fd_replicates(b, ones, mu_r, S_r)[0]
    w = (1 - np.eye(n)) * n / (n - 1)                                    # (n, n) row i: mask i left out, sum n
    d = _fd_replicates(a, w, mu_r, S_r) - _fd_replicates(b, w, mu_r, S_r)                      # (n,)
    se = float(np.sqrt((n - 1) / n * ((d - d.mean()) ** 2).sum()))
    return {"a": float(fa), "b": float(fb), "difference": float(fa - fb), "CI low": float(fa - fb - z * se),
            "CI high": float(fa - fb + z * se), "masks": n}


# ---------------------------------------------------------------------------------------------
# Every system against the reference


def _fd_interval(a: PriorEval, b: PriorEval, fd_real) -> tuple[float, float]:
    """Paired jackknife interval of FD(a) - FD(b) (`fd_paired_interval`); NaNs without features or `fd_real`."""
    if fd_real is None or a.fd_features is None or b.fd_features is None or len(a.fd_features) < 3:
        return np.nan, np.nan
    r = fd_paired_interval(a.fd_features, b.fd_features, fd_real)
    return r["CI low"], r["CI high"]


def systems_vs_reference(results: Mapping[str, PriorEval],    # name -> evaluation, same masks and seeds
                         reference: str = REFERENCE,           # the row every other system is compared with
                         seed: int = 0,                        # bootstrap seed of the pooled mIoU
                         fd_real=None,                         # real FrechetDistance / (mu, sigma): FD intervals
                         ) -> pd.DataFrame:
    """Each system minus `reference`, per score: diversity, top-1 GT-similarity, the factor rates (colour in
    class modes, texture in class set), mask mIoU (paired bootstrap) and FD (paired jackknife over masks with
    `fd_real` and the evaluations' FD features, `fd_paired_interval`; else a point difference, no interval).
    Index (system, score); columns: reference, system, difference, CI low, CI high, masks.
    `tables.paired_comparison` per pair, so its numbers are those of the clvae-vs-baseline table."""
    if reference not in results:
        raise ValueError(f"no {reference!r} among the systems {sorted(results)}; add it to MODELS or pass reference=")
    ref, parts = results[reference], {}
    for name, r in results.items():
        if name == reference:
            continue
        p = paired_comparison(r, ref, seed=seed).rename(columns={r.variant: "system", ref.variant: reference})
        if r.fd is not None and ref.fd is not None:
            lo, hi = _fd_interval(r, ref, fd_real)
            p.loc[Columns(r.metric, r.fd_name).fd] = {reference: ref.fd, "system": r.fd, "difference": r.fd - ref.fd,
                                                      "CI low": lo, "CI high": hi, "masks": len(r.per_image)}
        parts[name] = p[[reference, "system", "difference", "CI low", "CI high", "masks"]]
    if not parts:
        return pd.DataFrame(columns=[reference, "system", "difference", "CI low", "CI high", "masks"])
    return pd.concat(parts, names=["system", "score"])


# ---------------------------------------------------------------------------------------------
# (a) Class independence of colour


def co_change_rates(factors: pd.DataFrame,       # factor rows of K samples per mask: index, sample, class, colour_mode
                    ) -> pd.DataFrame:
    """Per mask, over the unordered pairs of its K samples and the classes found in both samples of a pair:
    a *trigger* is a class whose estimated colour mode differs between the two samples; for each trigger,
    each OTHER class of the pair counts once, as a co-change when its mode differs too. The rate is
    co-changes / (trigger, other class) pairs: 1 when classes only ever change together (one global colour
    draw), 0 when one class's change never comes with another's (independent per-class codes, and a single
    class changing at a time). A pair with n changed classes out of v contributes n (n - 1) co-changes out
    of n (v - 1). The mode fit allows any tint (`smis.factors.fit_colour_modes`), so a global tint alone is
    no change. Columns: "trigger pairs" (denominator), "co-changes", CO_CHANGE (NaN without any trigger,
    e.g. one sample per mask). Index: dataset index."""
    if factors is None or len(factors) == 0:
        return pd.DataFrame(columns=["trigger pairs", "co-changes", CO_CHANGE]).rename_axis("index")
    modes = factors.pivot_table(index=["index", "sample"], columns="class", values="colour_mode", aggfunc="first")
    masks = modes.index.get_level_values("index").unique()
    K = int(modes.index.get_level_values("sample").max()) + 1
    full = pd.MultiIndex.from_product([masks, range(K)], names=["index", "sample"])
    m = modes.reindex(full).to_numpy(np.float64).reshape(len(masks), K, -1)             # (M, K, C), NaN: no region
    seen = np.isfinite(m)
    both = seen[:, :, None] & seen[:, None]                                               # (M, K, K, C)
    changed = both & (m[:, :, None] != m[:, None])                                       # (M, K, K, C)
    n, v = changed.sum(-1).astype(np.float64), both.sum(-1).astype(np.float64)           # (M, K, K)
    upper = np.triu(np.ones((K, K), bool), 1)                                              # j < j'
    num = (n * (n - 1) * upper).sum((1, 2))                                               # (M,)
    den = (n * np.maximum(v - 1, 0) * upper).sum((1, 2))                                  # (M,)
    rate = np.divide(num, den, out=np.full_like(num, np.nan), where=den > 0)
    return pd.DataFrame({"trigger pairs": den, "co-changes": num, CO_CHANGE: rate},
                        index=pd.Index(masks, name="index"))


def class_independence(results: Mapping[str, PriorEval],    # name -> evaluation scored with factors=True
                       ) -> pd.DataFrame:
    """Per mask (rows, dataset index) and system (columns): the class co-change rate (`co_change_rates`).
    Systems without factor rows or with one sample per mask (gaugan) are left out."""
    out = {}
    for name, r in results.items():
        if r.factors is None or r.k < 2:
            continue
        out[name] = co_change_rates(r.factors)[CO_CHANGE]
    return pd.DataFrame(out).rename_axis("index")


def class_independence_table(results: Mapping[str, PriorEval],    # name -> evaluation scored with factors
                             reference: str = REFERENCE,           # the system the differences are taken to
                             ) -> pd.DataFrame:
    """Per system: mean class co-change rate over masks with its 95 % interval half-width, and the paired
    difference to `reference` with its interval (masks where both have a rate). Index: system."""
    rates = class_independence(results)
    rows = {}
    for name in rates.columns:
        m, lo, hi = mean_ci(rates[name])
        row = {CO_CHANGE: m, Columns.ci(CO_CHANGE): (hi - lo) / 2, "masks": int(rates[name].notna().sum())}
        if reference in rates.columns and name != reference:
            d, dlo, dhi = paired_ci(rates[name], rates[reference])
            row.update({f"difference to {reference}": d, "CI low": dlo, "CI high": dhi})
        rows[name] = row
    return pd.DataFrame.from_dict(rows, orient="index").rename_axis("system")


# ---------------------------------------------------------------------------------------------
# (b) Diversity against the number of classes in the mask


def classes_per_mask(dataset,                              # a smis dataset (items with "label")
                     indices: Sequence[int],               # the evaluated masks
                     ) -> pd.Series:
    """Number of classes present in each mask (the dontcare class not counted). Index: dataset index."""
    _, label = load_pairs(dataset, indices)                                                    # (N, H, W)
    C = dataset.info.num_classes
    present = label_presence(label, C)                                                         # (N, C)
    if dataset.info.dontcare is not None:
        present[:, dataset.info.dontcare] = False
    return pd.Series(present.sum(1).numpy(), index=pd.Index([int(i) for i in indices], name="index"),
                     name="classes")


def _half(v: np.ndarray) -> float:
    """Half-width of the 95 % interval of the mean of v (normal approximation); NaN under 2 values."""
    return float(Z95 * v.std(ddof=1) / np.sqrt(v.size)) if v.size > 1 else float("nan")


def _weighted_slopes(x: np.ndarray,        # (n,) predictor
                     y: np.ndarray,        # (n,) response
                     w: np.ndarray,        # (R, n) weights (bootstrap counts)
                     ) -> np.ndarray:
    """Least-squares slope of y on x under each row of weights w: (R,), NaN where x does not vary."""
    sw = w.sum(1)
    mx, my = (w @ x) / sw, (w @ y) / sw
    sxx = w @ (x * x) - sw * mx * mx
    sxy = w @ (x * y) - sw * mx * my
    return np.divide(sxy, sxx, out=np.full_like(sxx, np.nan), where=sxx > 1e-12)


def class_count_trend(a: PriorEval,                 # the system under test (e.g. groupdnet)
                      b: PriorEval,                 # the reference (clvae), same masks and seeds
                      n_classes: pd.Series,         # classes per mask (classes_per_mask), index dataset index
                      replicates: int = 2000,       # bootstrap replicates over masks
                      seed: int = 0,                # bootstrap seed
                      ) -> tuple[pd.DataFrame, dict]:
    """Diversity of a and b per number of classes in the mask, and the trend of a relative to b.

    Bins: one per class count found; per bin, both systems' mean diversity with its 95 % interval, the
    paired difference a - b with its interval, and the masks. Trend: the least-squares slope of
    log(diversity_a / diversity_b) per mask on the mask's class count, with a percentile bootstrap interval
    over masks (`replicates`, `seed`); the ratio makes it relative to b. Masks where either diversity is 0 or
    missing are left out of the slope. Returns (bins, {"slope", "CI low", "CI high", "masks", "classes"})."""
    if not a.per_image.index.equals(b.per_image.index):
        raise ValueError("a and b were evaluated on different masks; evaluate both on the same indices")
    col = Columns(a.metric).diversity
    da, db = a.per_image[col], b.per_image[col]
    n = n_classes.reindex(da.index)
    if n.isna().any():
        raise ValueError(f"n_classes lacks masks {list(da.index[n.isna()])[:5]}; pass classes_per_mask(test, indices)")
    rows = {}
    for c, idx in da.groupby(n.to_numpy()).groups.items():           # one row per class count (a handful)
        x, y = da.loc[idx].to_numpy(), db.loc[idx].to_numpy()
        d, lo, hi = paired_ci(x, y)
        rows[int(c)] = {a.variant: x.mean(), f"{a.variant} ±95%": _half(x), b.variant: y.mean(),
                        f"{b.variant} ±95%": _half(y), "difference": d, "CI low": lo, "CI high": hi,
                        "masks": len(idx)}
    bins = pd.DataFrame.from_dict(rows, orient="index").sort_index().rename_axis("classes in the mask")
    ok = (da > 0) & (db > 0) & da.notna() & db.notna()
    x = n[ok].to_numpy(np.float64)
    y = np.log(da[ok].to_numpy(np.float64) / db[ok].to_numpy(np.float64))
    slope, lo, hi = np.nan, np.nan, np.nan
    if x.size >= 3 and np.ptp(x) > 0:
        slope = float(_weighted_slopes(x, y, np.ones((1, x.size)))[0])
        lo, hi = percentile_interval(_weighted_slopes(x, y, bootstrap_weights(x.size, replicates, seed)))
    return bins, {"slope": slope, "CI low": lo, "CI high": hi, "masks": int(x.size),
                  "classes": sorted(int(c) for c in np.unique(x))}


# ---------------------------------------------------------------------------------------------
# The statements


def _above(lo: float, hi: float) -> str:
    """Verdict for "the difference is above 0" from its interval."""
    if lo > 0:
        return HOLDS
    if hi < 0:
        return f"{FAILS} (the opposite is resolved)"
    return f"{FAILS} (interval includes 0)" if np.isfinite(lo) and np.isfinite(hi) else f"{FAILS} (no interval)"


def statements(results: Mapping[str, PriorEval],     # name -> evaluation (same masks and seeds), named by variant
               n_classes: pd.Series | None = None,    # classes per mask (classes_per_mask), for GROUPDNET_CLASSES
               seed: int = 0,                         # bootstrap seed
               fd_real=None,                          # real FrechetDistance / (mu, sigma): the FD part's interval
               ) -> pd.DataFrame:
    """The paper's statements about the comparison systems (module docstring), each part one row: statement,
    part, measure, value, CI low, CI high, verdict, and the sentence (built from the numbers). A statement
    whose systems were not evaluated is left out. Systems are found by name (cimle, groupdnet,
    gaugan_vae_lowkl, gaugan_vae, clvae)."""
    rows = []

    def add(statement, part, measure, value, lo, hi, verdict, text):
        rows.append({"statement": statement, "part": part, "measure": measure, "value": float(value),
                     "CI low": float(lo), "CI high": float(hi), "verdict": verdict, "text": text})

    if "cimle" in results and REFERENCE in results:
        rates = class_independence({k: results[k] for k in ("cimle", REFERENCE)})
        if set(rates.columns) == {"cimle", REFERENCE}:
            d, lo, hi = paired_ci(rates["cimle"], rates[REFERENCE])
            v = _above(lo, hi)
            ok = (rates["cimle"] - rates[REFERENCE]).notna().sum()
            add(CIMLE_GLOBAL, "co-change above clvae's", f"{CO_CHANGE}: cimle - clvae", d, lo, hi, v,
                f"*{CIMLE_GLOBAL}*: **{v}**: when one class changes colour mode between two samples of a mask, "
                f"another class changes too in {100 * rates['cimle'].mean():.0f} % of cases for cimle and "
                f"{100 * rates[REFERENCE].mean():.0f} % for clvae (paired difference {d:+.3f}, 95 % CI "
                f"[{lo:.3f}, {hi:.3f}], {ok} masks).")
    if "groupdnet" in results and REFERENCE in results and n_classes is not None:
        _, t = class_count_trend(results["groupdnet"], results[REFERENCE], n_classes, seed=seed)
        v = _above(-t["CI high"], -t["CI low"])                          # holds when the slope is below 0
        add(GROUPDNET_CLASSES, "diversity ratio falls with the class count",
            "slope of log(diversity groupdnet / clvae) per class", t["slope"], t["CI low"], t["CI high"], v,
            f"*{GROUPDNET_CLASSES}*: **{v}**: log(diversity groupdnet / clvae) changes by {t['slope']:+.3f} per "
            f"class in the mask (95 % bootstrap CI [{t['CI low']:.3f}, {t['CI high']:.3f}], {t['masks']} masks "
            f"with {t['classes'][0]}-{t['classes'][-1]} classes)." if t["classes"] else
            f"*{GROUPDNET_CLASSES}*: **{v}**: no masks with diversity above 0.")
    if "gaugan_vae_lowkl" in results and "gaugan_vae" in results:
        a, b = results["gaugan_vae_lowkl"], results["gaugan_vae"]
        p = paired_comparison(a, b, seed=seed)
        cols = Columns(a.metric, a.fd_name)
        parts = [(cols.diversity, "more diverse", 1), (cols.top1, "worse top-1 GT-similarity (higher)", 1),
                 (MIOU, "worse mask mIoU (lower)", -1)]
        verdicts, said = [], []
        for score, part, sign in parts:
            if score not in p.index:
                continue
            r = p.loc[score]
            v = _above(*sorted((sign * r["CI low"], sign * r["CI high"])))
            verdicts.append(v == HOLDS)
            add(LOWKL_TRADE, part, f"{score}: lowkl - gaugan_vae", r["difference"], r["CI low"], r["CI high"], v, "")
            said.append(f"{part}: {v} ({r['difference']:+.3f} [{r['CI low']:.3f}, {r['CI high']:.3f}])")
        if a.fd is not None and b.fd is not None:
            d = a.fd - b.fd
            lo, hi = _fd_interval(a, b, fd_real)
            v = _above(lo, hi)
            if np.isfinite(lo):
                verdicts.append(v == HOLDS)
            add(LOWKL_TRADE, "worse FD (higher)", f"{cols.fd}: lowkl - gaugan_vae", d, lo, hi, v, "")
            said.append(f"worse FD: {v} ({a.fd:.1f} vs {b.fd:.1f}, {d:+.1f} "
                        + (f"[{lo:.1f}, {hi:.1f}], paired jackknife over masks)" if np.isfinite(lo) else
                           "pooled, no interval)"))
        whole = HOLDS if verdicts and all(verdicts) else FAILS
        title = LOWKL_TRADE.replace("*", "\\*")                    # Markdown: GauGAN-VAE's star is no emphasis
        add(LOWKL_TRADE, "all parts with an interval", "", np.nan, np.nan, np.nan, whole,
            f"*{title}* (gaugan_vae_lowkl minus gaugan_vae, paired): **{whole}**: " + "; ".join(said) + ".")
    return pd.DataFrame(rows, columns=["statement", "part", "measure", "value", "CI low", "CI high", "verdict",
                                       "text"])


def findings(table: pd.DataFrame) -> list[str]:
    """The sentences of `statements` (one per statement), for a notebook's "What we learnt" and the README."""
    return [t for t in table["text"] if t]
