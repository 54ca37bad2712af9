"""smis.stats: the intervals of the tables, against closed forms and coverage on known distributions."""
import numpy as np
import pytest

from smis.stats import bootstrap_weights, mean_ci, paired_ci, percentile_interval


def test_mean_ci_is_the_normal_interval_and_skips_nan():
    x = np.array([1.0, 2.0, 4.0, np.nan, 7.0])
    m, lo, hi = mean_ci(x)
    f = x[~np.isnan(x)]
    half = 1.959963984540054 * f.std(ddof=1) / 2.0
    assert m == pytest.approx(3.5) and lo == pytest.approx(3.5 - half) and hi == pytest.approx(3.5 + half)
    assert np.isnan(mean_ci([2.0])[1]) and np.isnan(mean_ci([])[0])


def test_mean_ci_covers_the_true_mean_about_95_percent_of_the_time():
    rng = np.random.default_rng(0)
    hits = [lo <= 1.0 <= hi for lo, hi in (mean_ci(rng.normal(1.0, 2.0, 200))[1:] for _ in range(2000))]
    assert 0.935 < np.mean(hits) < 0.965


def test_paired_ci_removes_the_shared_per_mask_variation():
    rng = np.random.default_rng(1)
    mask_effect = rng.normal(0, 5, 300)                          # masks differ a lot; the variants by 0.1
    a, b = mask_effect + 0.1 + rng.normal(0, 0.05, 300), mask_effect + rng.normal(0, 0.05, 300)
    d, lo, hi = paired_ci(a, b)
    assert lo > 0 and d == pytest.approx(0.1, abs=0.02)          # paired: the gap is resolved
    _, ulo, uhi = mean_ci(a)
    assert uhi - ulo > 50 * (hi - lo)                            # unpaired intervals would swamp it
    with pytest.raises(ValueError, match="same masks"):
        paired_ci(a, b[:10])


def test_bootstrap_weights_resample_with_replacement():
    w = bootstrap_weights(7, replicates=400, seed=2)
    assert w.shape == (400, 7) and (w.sum(1) == 7).all() and (w >= 0).all()
    assert np.array_equal(w, bootstrap_weights(7, replicates=400, seed=2))
    assert abs(w.mean() - 1.0) < 0.05 and (w == 0).any()          # some masks left out of some replicates
    lo, hi = percentile_interval(np.arange(1001.0))
    assert lo == pytest.approx(25.0) and hi == pytest.approx(975.0)
    with pytest.raises(ValueError, match="n >= 1"):
        bootstrap_weights(0)
