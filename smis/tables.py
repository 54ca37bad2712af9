"""The paper's tables from evaluation results (pandas), their 95 % intervals, paired comparisons and files.

    diversity_table({"clvae": res, "gaugan_vae": other})  # Tables 2-4: columns name metric and backbone
    reconstruction_table({"clvae": rec})                  # Table 1
    paired_comparison(res, other)                         # per-mask differences, 95 % intervals
    held_classes(per_class_table(res), dontcare, names)   # the classes some mask holds, and what was left out
    ablations_vs_full(prior)                              # Table 5: every ablation minus clvae, paired
    diversity_ordering(prior, ["clvae", "clvae_L5", ...])  # Table 5: the paper's ranking, step by step
    write_table(table, "outputs/demo/04_diversity_rq2", "table2_diversity_top1", "caption")

Intervals: every table gives 95 % intervals over masks (`smis.stats`): mean +- 1.96 sd / sqrt(n) for
per-mask scores (column + " ±95%": the half-width), a bootstrap over masks for the pooled mIoU (MIOU +
" 95% low" / " 95% high"); `paired_comparison` pairs two variants mask by mask (same masks, same seeds).
The score columns are named by `smis.evaluate.Columns` (the evaluation results use the same names).
"""
from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from smis.evaluate import Columns, PriorEval, ReconEval
from smis.stats import mean_ci, miou_ci, paired_ci
from smis.utils import atomic_path, atomic_write_text, markdown_table

MIOU = "mask mIoU"                             # the segmenter's pooled mIoU (higher: follows the mask)
MIOU_LOW, MIOU_HIGH = f"{MIOU} 95% low", f"{MIOU} 95% high"
COLOUR_IN = "colour in class modes (%)"        # factor_table: regions whose colour is one of its class's modes
TEXTURE_IN = "texture in class set (%)"        # factor_table: regions whose texture kind is one of its class's
COLOUR_MATCH = "colour mode = reference (%)"   # style_table
TEXTURE_MATCH = "texture = reference (%)"      # style_table
CEILING = "real test images (ceiling)"         # row of the real images' scores (smis.study.Study.add_ceiling)
ABLATION_LABELS = {"clvae": "full (L = 6)", "no_classwise": "w/o class-wise", "no_layerwise": "w/o layer-wise",
                   "clvae_L3": "L = 3", "clvae_L4": "L = 4", "clvae_L5": "L = 5",
                   "real": "real test images (mIoU ceiling)"}   # Table 5's rows and Fig. 11's (notebook 05)


def _metric_of(results: Mapping) -> str:
    names = {r.metric for r in results.values()}
    if len(names) != 1:
        raise ValueError(f"results were scored with different metrics {sorted(names)}; score them with one LPIPS")
    return names.pop()


def _score_columns(row: dict, col: str, values) -> None:
    """Mean, std (over masks) and the 95 % interval's half-width (`smis.stats.mean_ci`) of one score."""
    values = np.asarray(values, np.float64)
    m, lo, hi = mean_ci(values)
    row[col], row[Columns.std(col)], row[Columns.ci(col)] = m, float(np.nanstd(values)), (hi - lo) / 2


def miou_columns(confusion: np.ndarray | None,     # (masks, C, C) per-mask confusion matrices, or None
                 seed: int = 0,                     # bootstrap seed
                 ) -> dict:
    """{MIOU: pooled mIoU, MIOU_LOW / MIOU_HIGH: bootstrap interval over masks}; {} for None (evaluated
    without a segmenter)."""
    if confusion is None:
        return {}
    r = miou_ci(confusion, seed=seed)
    return {MIOU: r["miou"], MIOU_LOW: r["low"], MIOU_HIGH: r["high"]}


def reconstruction_table(results: Mapping[str, ReconEval]) -> pd.DataFrame:
    """Table 1 style: GT-similarity of reconstructions (mean, std, 95 % interval; lower is closer), FD and
    mask mIoU (with a segmenter), per variant."""
    col = Columns(_metric_of(results)).gt_similarity
    rows = {}
    for name, r in results.items():
        rows[name] = {}
        _score_columns(rows[name], col, r.per_image[col])
        if r.fd is not None:
            rows[name][Columns(r.metric, r.fd_name).fd] = r.fd
        rows[name].update(miou_columns(r.confusion))
        rows[name]["images"] = len(r.per_image)
    return pd.DataFrame.from_dict(rows, orient="index").rename_axis("variant")


def diversity_table(results: Mapping[str, PriorEval]) -> pd.DataFrame:
    """Tables 2-4 style: diversity (higher: more varied), Top-1 GT-similarity (lower: closer), each with
    std and 95 % interval over masks, FD and mask mIoU (with a segmenter), per variant."""
    cols = Columns(_metric_of(results))
    rows = {}
    for name, r in results.items():
        row = {}
        for col in (cols.diversity, cols.top1):
            _score_columns(row, col, r.per_image[col])
        if r.fd is not None:
            row[Columns(r.metric, r.fd_name).fd] = r.fd
        row.update(miou_columns(r.confusion))
        row["masks"], row["samples per mask"] = len(r.per_image), r.k
        rows[name] = row
    return pd.DataFrame.from_dict(rows, orient="index").rename_axis("variant")


def per_class_table(results: Mapping[str, PriorEval]) -> pd.DataFrame:
    """Per-class diversity (LPIPS restricted to each class region), mean over the masks that hold the
    class: which classes vary. Rows: classes; columns: f"{variant}: diversity (metric)"; plus mask counts."""
    m = _metric_of(results)
    cols = {}
    for name, r in results.items():
        if r.per_class is None:
            raise ValueError(f"{name} was evaluated with per_class=False; rerun evaluate_prior with per_class=True")
        cols[f"{name}: {Columns(m).diversity}"] = r.per_class.mean(axis=0, skipna=True)
    table = pd.DataFrame(cols)
    table["masks"] = next(iter(results.values())).per_class.notna().sum(axis=0)
    return table.rename_axis("class")


def held_classes(per_class: pd.DataFrame,            # per_class_table(results): rows are class ids 0..C-1
                 dontcare: int | None,                # the dataset's "don't care" class id (info.dontcare), or None
                 class_names: Sequence[str],          # the dataset's class names, by id
                 ) -> tuple[pd.DataFrame, str]:
    """The per-class table without the classes no mask holds and without the don't-care class (ADE20K's
    `unknown`, whose pixels carry no class), and the caption sentence saying what was left out ("" if nothing)."""
    absent = (per_class["masks"] == 0).to_numpy()
    is_dontcare = np.arange(len(per_class)) == (-1 if dontcare is None else dontcare)
    unheld = absent & ~is_dontcare
    dropped = ([f"the {int(unheld.sum())} classes no mask holds"] if unheld.any() else []) \
        + ([f"the don't-care class {class_names[dontcare]!r}"] if dontcare is not None else [])
    return per_class[~(absent | is_dontcare)], (f" Left out: {' and '.join(dropped)}." if dropped else "")


def factor_table(rows: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    """Share (%) of class regions whose estimated colour / texture lies in that class's own
    distribution (`smis.factors.factor_rows`), per source (a variant's samples, or real images)."""
    out = {name: {COLOUR_IN: 100 * r["colour_in"].mean(), TEXTURE_IN: 100 * r["texture_in"].mean(),
                  "both (%)": 100 * (r["colour_in"] & r["texture_in"]).mean(), "regions": len(r)}
           for name, r in rows.items()}
    return pd.DataFrame.from_dict(out, orient="index").rename_axis("source")


def style_table(rows: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    """Share (%) of shared class regions whose estimated colour mode / texture equals the reference's."""
    out = {name: {COLOUR_MATCH: 100 * r["colour_match"].mean(), TEXTURE_MATCH: 100 * r["texture_match"].mean(),
                  "both (%)": 100 * (r["colour_match"] & r["texture_match"]).mean(), "regions": len(r)}
           for name, r in rows.items()}
    return pd.DataFrame.from_dict(out, orient="index").rename_axis("method")


def per_mask_factor_rates(factors: pd.DataFrame) -> pd.DataFrame:
    """Share (%) of a mask's class regions (over its K samples) whose colour / texture lies in the class's
    own distribution: per-mask columns for paired intervals. Index: dataset index."""
    g = factors.groupby("index")
    return pd.DataFrame({COLOUR_IN: 100 * g["colour_in"].mean(), TEXTURE_IN: 100 * g["texture_in"].mean()})


def paired_comparison(a: PriorEval | ReconEval, b: PriorEval | ReconEval, seed: int = 0) -> pd.DataFrame:
    """Per-mask paired differences a - b (the same masks and seeds) of every per-image score, the factor
    rates (if both were scored with factors) and the mask mIoU (if both had a segmenter): both means, the
    difference and its 95 % interval (normal approximation over masks; paired bootstrap over masks for
    the pooled mIoU). A difference whose interval excludes 0 is one the masks support.
    Rows: score columns; columns: a.variant, b.variant, difference, CI low, CI high, masks."""
    if not a.per_image.index.equals(b.per_image.index):
        raise ValueError("a and b were evaluated on different masks; evaluate both on the same indices")
    rows = {}
    pa, pb = a.per_image, b.per_image
    fa, fb = getattr(a, "factors", None), getattr(b, "factors", None)
    if fa is not None and fb is not None and len(fa) and len(fb):
        pa = pa.join(per_mask_factor_rates(fa))
        pb = pb.join(per_mask_factor_rates(fb))
    for col in pa.columns:
        if col not in pb.columns:
            continue
        d, lo, hi = paired_ci(pa[col], pb[col])
        rows[col] = {a.variant: pa[col].mean(), b.variant: pb[col].mean(), "difference": d, "CI low": lo,
                     "CI high": hi, "masks": int((pa[col] - pb[col]).notna().sum())}
    if a.confusion is not None and b.confusion is not None:
        r = miou_ci(a.confusion, b.confusion, seed=seed)           # b's mIoU = a's minus the difference
        rows[MIOU] = {a.variant: r["miou"], b.variant: r["miou"] - r["difference"], "difference": r["difference"],
                      "CI low": r["difference_low"], "CI high": r["difference_high"], "masks": len(a.confusion)}
    return pd.DataFrame.from_dict(rows, orient="index").rename_axis("score")


def ablations_vs_full(prior: Mapping[str, PriorEval],   # variant -> prior evaluation, same masks and seeds
                      reference: str = "clvae",             # the full model every ablation is compared with
                      ) -> pd.DataFrame | None:
    """Table 5's pairs: per ablation (rows, in `prior`'s order), `paired_comparison(ablation, reference)` flattened
    to columns "<score>: difference", "<score>: CI low", "<score>: CI high". None without `reference`."""
    if reference not in prior:
        return None
    versus = {}
    for v, r in prior.items():
        if v == reference:
            continue
        p = paired_comparison(r, prior[reference])
        versus[v] = {f"{score}: {col}": p.loc[score, col] for score in p.index
                     for col in ("difference", "CI low", "CI high")}
    return pd.DataFrame.from_dict(versus, orient="index").rename_axis(f"ablation - {reference}")


def diversity_ordering(prior: Mapping[str, PriorEval],   # variant -> prior evaluation, same masks and seeds
                       order: Sequence[str],               # a ranking, most diverse first (the paper's Table 5)
                       ) -> tuple[pd.DataFrame, list[str]]:
    """Does a diversity ranking hold? For each neighbouring pair of `order` (the variants of it in `prior`) the
    paired diversity difference, its 95 % interval and the verdict: "holds" (interval above 0), "reversed"
    (below) or "not resolved". Also the observed order of those variants by mean diversity."""
    order = [v for v in order if v in prior]
    col = Columns(_metric_of(prior)).diversity
    rows = {}
    for hi_v, lo_v in zip(order, order[1:]):
        d, lo, hi = paired_ci(prior[hi_v].per_image[col], prior[lo_v].per_image[col])
        rows[f"{hi_v} > {lo_v}"] = {"difference": d, "CI low": lo, "CI high": hi,
                                    "verdict": "holds" if lo > 0 else "reversed" if hi < 0 else "not resolved"}
    observed = sorted(order, key=lambda v: -prior[v].per_image[col].mean())
    return pd.DataFrame.from_dict(rows, orient="index").rename_axis("paper's claim"), observed


def write_table(table: pd.DataFrame, out_dir: str | Path, stem: str, caption: str = "") -> Path:
    """`stem.csv` and `stem.md` (caption, then the Markdown table) under `out_dir`, atomically."""
    out_dir = Path(out_dir)
    with atomic_path(out_dir / f"{stem}.csv") as tmp:
        table.to_csv(tmp)
    text = (caption.strip() + "\n\n" if caption else "") + markdown_table(table)
    return atomic_write_text(text, out_dir / f"{stem}.md")
