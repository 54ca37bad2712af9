"""smis.tables: the per-class selection and Table 5's paired pairs and ordering, on crafted results."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from smis import tables
from smis.evaluate import PriorEval
from smis.stats import paired_ci
from smis.tables import Columns

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
