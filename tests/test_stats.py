"""Bootstrap intervals and paired tests against scipy and hand-made examples."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import bootstrap, wilcoxon

from unetseg.metrics.stats import bootstrap_ci, difference_ci, paired_test


def test_paired_test_matches_scipy_wilcoxon():
    a = np.array([[0.81, 0.79, 0.84, 0.77, 0.80], [0.82, 0.78, 0.85, 0.76, 0.83]])
    b = np.array([[0.78, 0.78, 0.80, 0.75, 0.79], [0.79, 0.79, 0.81, 0.74, 0.80]])
    diff, p, n = paired_test(a, b)
    assert n == 10
    assert diff == pytest.approx((a - b).mean())
    assert p == pytest.approx(wilcoxon(a.ravel(), b.ravel()).pvalue)
    # Hand check: 9 of the 10 differences are positive, one (-0.01) negative: a small p.
    assert p < 0.05


def test_paired_test_edge_cases():
    assert paired_test(np.ones(4), np.ones(4)) == (0.0, 1.0, 4)
    diff, _, n = paired_test(np.array([1.0, np.nan, 3.0]), np.array([0.0, 1.0, np.nan]))
    assert (diff, n) == (1.0, 1)
    assert np.isnan(paired_test(np.array([np.nan]), np.array([1.0]))[0])


def test_bootstrap_single_seed_agrees_with_scipy_percentile():
    rng = np.random.default_rng(1)
    x = rng.normal(0.8, 0.05, size=40)
    lo, hi = bootstrap_ci(x[None], n_boot=4000)
    ref = bootstrap((x,), np.mean, n_resamples=4000, method="percentile", random_state=0).confidence_interval
    assert lo == pytest.approx(ref.low, abs=0.004) and hi == pytest.approx(ref.high, abs=0.004)
    assert lo < x.mean() < hi


def test_bootstrap_widens_with_seed_variation():
    rng = np.random.default_rng(2)
    images = rng.normal(0.8, 0.02, size=(1, 10))
    same = np.repeat(images, 3, axis=0)
    shifted = same + np.array([[-0.05], [0.0], [0.05]])  # seeds disagree
    w_same = np.subtract(*bootstrap_ci(same)[::-1])
    w_shift = np.subtract(*bootstrap_ci(shifted)[::-1])
    assert w_shift > 2 * w_same


def test_difference_ci_pairs_images_and_not_seeds():
    rng = np.random.default_rng(3)
    hardness = rng.uniform(0.3, 1.0, size=(1, 40))  # images of very different difficulty, shared
    b = np.repeat(hardness, 3, axis=0)
    diff, lo, hi = difference_ci(b + 0.02, b)
    # Every image 0.02 higher on every seed: the difference and both ends are exactly 0.02,
    # however different the images are (an unpaired bootstrap would spread over +-0.1).
    assert diff == pytest.approx(0.02) and lo == pytest.approx(0.02) and hi == pytest.approx(0.02)
    # One method's seeds disagree by +-0.05 around the same mean: the interval opens across zero.
    noisy = b + np.array([[-0.05], [0.0], [0.05]])
    diff, lo, hi = difference_ci(noisy, b)
    assert diff == pytest.approx(0.0, abs=1e-12) and lo < -0.02 and hi > 0.02


def test_difference_ci_needs_the_same_images():
    with pytest.raises(ValueError, match="same images"):
        difference_ci(np.zeros((3, 40)), np.zeros((3, 39)))
