"""smis.tables on evaluation results made from seeded numbers (no model): the score columns' names, Tables 1-4 with
their spreads and 95 % intervals, per-class and style tables, paired comparisons, and write_table."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from smis import tables
from smis.data import synthetic
from smis.evaluate import Columns, PriorEval, ReconEval
from smis.stats import Z95, paired_ci

INDICES = [3, 7, 11, 19]                                   # dataset indices of the evaluated masks


def prior_eval(seed: int = 0, variant: str = "clvae") -> PriorEval:
    """What evaluate_prior returns for 4 masks, K = 4, scored with lpips_tiny / fd_tiny: seeded numbers."""
    rng = np.random.default_rng(seed)
    cols = Columns("lpips_tiny", "fd_tiny")
    per_image = pd.DataFrame({cols.diversity: rng.uniform(0.1, 0.5, 4), cols.top1: rng.uniform(0.2, 0.6, 4)},
                             index=INDICES)
    names = list(synthetic.info().class_names)
    per_class = pd.DataFrame(rng.uniform(0, 0.5, (4, len(names))), index=INDICES, columns=names)
    per_class[per_class < 0.15] = np.nan                   # classes a mask does not hold
    factors = pd.DataFrame({"index": np.repeat(INDICES, 6), "sample": np.tile(np.arange(6) % 4, 4),
                            "class": rng.integers(0, len(names), 24), "colour_in": rng.random(24) > 0.3,
                            "texture_in": rng.random(24) > 0.4})
    return PriorEval(variant, "lpips_tiny", 4, per_image, per_class, factors, fd=3.5, fd_name="fd_tiny")


def test_diversity_per_class_and_paired_tables_name_the_metric():
    res = prior_eval()
    table = tables.diversity_table({"clvae": res, "again": res})
    assert list(table.columns) == ["diversity (lpips_tiny)", "diversity (lpips_tiny) std",
                                   "diversity (lpips_tiny) ±95%", "top-1 GT-similarity (lpips_tiny)",
                                   "top-1 GT-similarity (lpips_tiny) std",
                                   "top-1 GT-similarity (lpips_tiny) ±95%", "FD (fd_tiny)", "masks", "samples per mask"]
    d = res.per_image.iloc[:, 0]
    half_width = 1.96 * d.std(ddof=1) / len(d) ** 0.5
    assert table.loc["clvae", "diversity (lpips_tiny) ±95%"] == pytest.approx(half_width, rel=1e-3)
    assert table.loc["clvae", "diversity (lpips_tiny) std"] == pytest.approx(d.std(ddof=0))
    assert table.loc["clvae", "samples per mask"] == 4 and table.loc["clvae", "masks"] == len(INDICES)
    assert table.loc["clvae", "diversity (lpips_tiny)"] == pytest.approx(res.per_image.iloc[:, 0].mean())
    assert table.loc["again", "FD (fd_tiny)"] == 3.5 and tables.MIOU not in table.columns   # no segmenter
    per_class = tables.per_class_table({"clvae": res})
    assert list(per_class.columns) == ["clvae: diversity (lpips_tiny)", "masks"]
    assert list(per_class.index) == list(synthetic.info().class_names)
    assert per_class["masks"].sum() == res.per_class.notna().to_numpy().sum()
    np.testing.assert_allclose(per_class.iloc[:, 0], res.per_class.mean(axis=0, skipna=True))
    paired = tables.paired_comparison(res, res)
    assert (paired["difference"] == 0).all()
    assert list(paired.index) == list(res.per_image.columns) + ["colour in class modes (%)", "texture in class set (%)"]
    other = prior_eval(seed=1, variant="gaugan_vae")
    paired = tables.paired_comparison(res, other)
    diff = res.per_image.iloc[:, 0] - other.per_image.iloc[:, 0]
    half = Z95 * diff.std(ddof=1) / len(diff) ** 0.5                       # the normal 95 % quantile
    row = paired.loc["diversity (lpips_tiny)"]
    assert row["difference"] == pytest.approx(diff.mean()) and row["masks"] == len(INDICES)
    assert (row["CI low"], row["CI high"]) == pytest.approx((diff.mean() - half, diff.mean() + half))
    assert row["clvae"] == pytest.approx(res.per_image.iloc[:, 0].mean())
    with pytest.raises(ValueError, match="different masks"):
        tables.paired_comparison(res, PriorEval("x", "lpips_tiny", 4, res.per_image.iloc[:3]))
    with pytest.raises(ValueError, match="per_class=False"):
        tables.per_class_table({"clvae": PriorEval("clvae", "lpips_tiny", 4, res.per_image)})


def test_reconstruction_table():
    col = Columns("lpips_tiny").gt_similarity
    per_image = pd.DataFrame({col: [0.2, 0.4, 0.3, 0.5]}, index=INDICES)
    res = ReconEval("clvae", "lpips_tiny", per_image, fd=2.0, fd_name="fd_tiny")
    table = tables.reconstruction_table({"clvae": res})
    assert list(table.columns) == ["GT-similarity (lpips_tiny)", "GT-similarity (lpips_tiny) std",
                                   "GT-similarity (lpips_tiny) ±95%", "FD (fd_tiny)", "images"]
    assert table.loc["clvae", col] == pytest.approx(0.35) and table.loc["clvae", "images"] == 4
    assert table.loc["clvae", Columns.ci(col)] == pytest.approx(Z95 * per_image[col].std(ddof=1) / 2)
    other = ReconEval("x", "lpips_other", res.per_image)
    with pytest.raises(ValueError, match="different metrics"):
        tables.reconstruction_table({"clvae": res, "x": other})


def test_style_and_factor_tables_count_the_matching_regions():
    guided = pd.DataFrame({"colour_match": [True, True, False, True], "texture_match": [True, False, False, True]})
    prior = pd.DataFrame({"colour_match": [False, True], "texture_match": [False, False]})
    table = tables.style_table({"guided": guided, "prior": prior})
    assert list(table.columns) == ["colour mode = reference (%)", "texture = reference (%)", "both (%)", "regions"]
    assert table.loc["guided"].tolist() == [75.0, 50.0, 50.0, 4] and table.loc["prior", "both (%)"] == 0
    factors = prior_eval().factors
    rates = tables.factor_table({"clvae": factors})
    assert rates.loc["clvae", tables.COLOUR_IN] == pytest.approx(100 * factors["colour_in"].mean())
    assert rates.loc["clvae", "regions"] == len(factors)
    per_mask = tables.per_mask_factor_rates(factors)
    assert list(per_mask.index) == INDICES
    assert per_mask[tables.TEXTURE_IN].mean() == pytest.approx(100 * factors["texture_in"].mean())   # 6 rows each


def test_write_table(tmp_path):
    table = pd.DataFrame({"diversity (lpips_tiny)": [0.5, 0.25]}, index=pd.Index(["a", "b"], name="variant"))
    md = tables.write_table(table, tmp_path, "t", "A caption.")
    assert md.read_text().startswith("A caption.\n\n| variant | diversity (lpips_tiny) |")
    assert pd.read_csv(tmp_path / "t.csv", index_col=0).loc["b"].iloc[0] == 0.25
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.csv", "t.md"]          # no temporary left

COLS = Columns("lpips_test")


def prior(variant, diversity, seed=0, n=30):
    noise = np.random.default_rng(seed).normal(0, 0.05, n)
    per = pd.DataFrame({COLS.diversity: diversity + noise, COLS.top1: 4 + noise}, index=range(n))
    return PriorEval(variant, "lpips_test", 4, per)


def test_held_classes_drop_unheld_and_dontcare_and_say_so():
    per_class = pd.DataFrame({"a: d": [0.1, 0.2, 0.3, 0.4], "masks": [5, 0, 3, 0]}).rename_axis("class")
    kept, note = tables.held_classes(per_class, None, ["w", "x", "y", "z"])
    assert list(kept.index) == [0, 2] and note == " Left out: the 2 classes no mask holds."
    kept, note = tables.held_classes(per_class, 1, ["w", "x", "y", "z"])      # the don't-care class is not "unheld"
    assert list(kept.index) == [0, 2] and note == " Left out: the 1 classes no mask holds and the don't-care class 'x'."
    kept, note = tables.held_classes(per_class.assign(masks=1), None, ["w", "x", "y", "z"])
    assert len(kept) == 4 and note == ""


def test_ablations_vs_full_flattens_each_paired_comparison():
    prior_ = {"clvae": prior("clvae", 3.0), "no_classwise": prior("no_classwise", 2.0, seed=1),
              "clvae_L3": prior("clvae_L3", 2.5, seed=2)}
    versus = tables.ablations_vs_full(prior_)
    assert list(versus.index) == ["no_classwise", "clvae_L3"] and versus.index.name == "ablation - clvae"
    p = tables.paired_comparison(prior_["clvae_L3"], prior_["clvae"])
    for col in ("difference", "CI low", "CI high"):
        assert versus.loc["clvae_L3", f"{COLS.top1}: {col}"] == p.loc[COLS.top1, col]
    assert versus.loc["no_classwise", f"{COLS.diversity}: difference"] == pytest.approx(
        prior_["no_classwise"].per_image[COLS.diversity].mean() - prior_["clvae"].per_image[COLS.diversity].mean())
    assert tables.ablations_vs_full({"clvae_L3": prior_["clvae_L3"]}) is None


def test_diversity_ordering_gives_each_neighbouring_step_its_verdict():
    prior_ = {"a": prior("a", 3.0), "b": prior("b", 2.0, seed=1), "c": prior("c", 2.5, seed=2),
              "d": prior("d", 2.5, seed=2)}
    ordering, observed = tables.diversity_ordering(prior_, ["a", "b", "missing", "c", "d"])
    assert list(ordering.index) == ["a > b", "b > c", "c > d"] and ordering.index.name == "paper's claim"
    assert list(ordering["verdict"]) == ["holds", "reversed", "not resolved"]     # c and d are the same scores
    d, lo, hi = paired_ci(prior_["a"].per_image[COLS.diversity], prior_["b"].per_image[COLS.diversity])
    assert list(ordering.loc["a > b", ["difference", "CI low", "CI high"]]) == [d, lo, hi]
    assert observed == ["a", "c", "d", "b"]
    empty, observed = tables.diversity_ordering(prior_, ["a"])
    assert len(empty) == 0 and observed == ["a"]
