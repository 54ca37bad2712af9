"""smis.stats: the intervals of the tables, against closed forms and coverage on known distributions; confusion
matrices and mIoU against hand counts."""
import math

import numpy as np
import pytest
import torch

from smis.stats import (bootstrap_weights, confusion_matrices, confusion_matrix, mean_ci, miou, miou_ci, paired_ci,
                        percentile_interval, pixel_accuracy, wilson_interval)


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


# ---- confusion matrix and mIoU --------------------------------------------------------------------------------------

def test_confusion_and_miou_by_hand():
    label = torch.tensor([[0, 0, 1], [1, 2, 2]])
    pred = torch.tensor([[0, 1, 1], [1, 2, 0]])
    cm = confusion_matrix(pred, label, 4)
    # (truth, prediction) pairs: (0,0) (0,1) (1,1) (1,1) (2,2) (2,0); class 3 occurs in neither
    want = torch.zeros(4, 4, dtype=torch.long)
    want[0, 0], want[0, 1], want[1, 1], want[2, 2], want[2, 0] = 1, 1, 2, 1, 1
    assert cm.dtype == torch.int64 and torch.equal(cm, want)
    mean, per_class = miou(cm)
    # IoU = TP / (TP + FP + FN): class 0: 1 / (1 + 1 + 1), class 1: 2 / (2 + 1 + 0), class 2: 1 / (1 + 0 + 1)
    assert per_class[:3].tolist() == pytest.approx([1 / 3, 2 / 3, 1 / 2])
    assert math.isnan(per_class[3])                                      # absent from both: NaN, not 0
    assert mean == pytest.approx((1 / 3 + 2 / 3 + 1 / 2) / 3)            # and left out of the mean
    assert pixel_accuracy(cm) == pytest.approx(4 / 6)


def test_class_only_predicted_counts_as_zero_and_ignore_index_skips():
    label = torch.tensor([0, 0, 1, 1, 255, 255])
    pred = torch.tensor([0, 2, 1, 1, 2, 0])                              # class 2 is a false positive only
    cm = confusion_matrix(pred, label, 3, ignore_index=255)
    assert int(cm.sum()) == 4                                           # the two ignored pixels are not counted
    mean, per_class = miou(cm)
    assert per_class.tolist() == pytest.approx([1 / 2, 1.0, 0.0])
    assert mean == pytest.approx(0.5)


def test_perfect_prediction_is_one():
    label = torch.randint(0, 10, (3, 16, 16), generator=torch.Generator().manual_seed(0))
    cm = confusion_matrix(label.clone(), label, 12)
    mean, per_class = miou(cm)
    assert mean == 1.0 and pixel_accuracy(cm) == 1.0
    assert per_class[10:].isnan().all() and (per_class[:10] == 1).all()


def test_per_mask_confusions_sum_to_the_pooled_one_and_match_each_mask():
    g = torch.Generator().manual_seed(0)
    label = torch.randint(0, 5, (6, 3, 8, 8), generator=g)      # 6 masks, 3 samples each
    pred = torch.randint(0, 5, (6, 3, 8, 8), generator=g)
    per = confusion_matrices(pred, label, 5)
    assert per.shape == (6, 5, 5) and per.dtype == torch.int64
    for b in range(6):                                             # each mask against the pooled reference
        assert torch.equal(per[b], confusion_matrix(pred[b], label[b], 5))
    assert torch.equal(per.sum(0), confusion_matrix(pred, label, 5))
    label[0, 0, 0] = 255
    skipped = confusion_matrices(pred, label, 5, ignore_index=255)
    assert int(skipped[0].sum()) == 3 * 64 - 8 and int(skipped[1].sum()) == 3 * 64


def test_miou_ci_brackets_the_pooled_miou_and_pairs_variants():
    g = torch.Generator().manual_seed(1)
    label = torch.randint(0, 4, (40, 16, 16), generator=g)
    noisy = lambda p: torch.where(torch.rand(label.shape, generator=g) < p,                  # draws in this order
                                  torch.randint(0, 4, label.shape, generator=g), label)
    good, bad = confusion_matrices(noisy(0.2), label, 4), confusion_matrices(noisy(0.6), label, 4)
    r = miou_ci(good, bad, replicates=500, seed=0)
    assert r["miou"] == pytest.approx(miou(good.sum(0))[0])
    assert r["low"] < r["miou"] < r["high"] and r["high"] - r["low"] < 0.05
    assert r["difference"] == pytest.approx(miou(good.sum(0))[0] - miou(bad.sum(0))[0])
    assert 0 < r["difference_low"] < r["difference"] < r["difference_high"]       # a real gap: excludes 0
    same = miou_ci(good, good, replicates=200)
    assert same["difference"] == same["difference_low"] == same["difference_high"] == 0     # paired: no noise
    assert miou_ci(good, seed=3) == miou_ci(good, seed=3)                                   # seeded
    with pytest.raises(ValueError, match="same masks"):
        miou_ci(good, bad[:10])
    with pytest.raises(ValueError, match=r"\(N, C, C\)"):
        miou_ci(good.sum(0))


def test_confusion_bad_inputs_are_clear_errors():
    lab = torch.zeros(2, 8, 8, dtype=torch.long)
    with pytest.raises(TypeError, match="integer"):
        confusion_matrix(lab.float(), lab, 3)
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        confusion_matrix(lab, lab + 3, 3)
    with pytest.raises(ValueError, match="same shape"):
        confusion_matrix(lab[0], lab, 3)
    with pytest.raises(ValueError, match="no pixel"):
        miou(torch.zeros(3, 3, dtype=torch.long))


def test_wilson_interval():
    lo, hi = wilson_interval([0, 5, 10, 0], [10, 10, 10, 0])
    np.testing.assert_allclose(lo[:3], [0.0, 0.2366, 0.7225], atol=1e-4)    # Wilson (1927), z = 1.96
    np.testing.assert_allclose(hi[:3], [0.2775, 0.7634, 1.0], atol=1e-4)
    assert np.isnan(lo[3]) and np.isnan(hi[3])
    # its coverage: over binomial draws with p = 0.3, n = 40, close to 95 %
    k = np.random.default_rng(0).binomial(40, 0.3, 4000)
    lo, hi = wilson_interval(k, np.full_like(k, 40))
    assert 0.92 < np.mean((lo <= 0.3) & (0.3 <= hi)) < 0.98
