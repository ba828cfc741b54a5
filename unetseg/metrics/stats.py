"""Statistics for comparing variants that share seeds, images and data order.

Per-image scores form a (seeds x images) grid per variant. Confidence intervals come from a
two-level bootstrap (resample seeds, then images, with replacement) so both sources of
variation widen them; comparisons with a reference variant use the Wilcoxon signed-rank test
on the paired (seed, image) differences, which needs no normality assumption.
"""

from __future__ import annotations

import warnings

import numpy as np
from scipy.stats import wilcoxon


def bootstrap_ci(scores: np.ndarray, n_boot: int = 2000, level: float = 0.95, seed: int = 0) -> tuple[float, float]:
    """Percentile CI of the grand mean of a (seeds x images) grid (NaN cells ignored)."""
    scores = np.atleast_2d(np.asarray(scores, dtype=float))
    rng = np.random.default_rng(seed)
    n_seeds, n_images = scores.shape
    seed_idx = rng.integers(0, n_seeds, size=(n_boot, n_seeds))
    image_idx = rng.integers(0, n_images, size=(n_boot, n_images))
    with warnings.catch_warnings():  # a resample of only undefined cells (NaN) is simply left out
        warnings.simplefilter("ignore", RuntimeWarning)
        means = np.array([np.nanmean(scores[s][:, i]) for s, i in zip(seed_idx, image_idx)])
    alpha = (1 - level) / 2
    if not np.isfinite(means).any():
        return float("nan"), float("nan")
    lo, hi = np.nanquantile(means, [alpha, 1 - alpha])
    return float(lo), float(hi)


def paired_test(scores: np.ndarray, reference: np.ndarray) -> tuple[float, float, int]:
    """(mean difference, two-sided Wilcoxon p-value, number of pairs) over matching cells.

    Cells where either side is NaN are dropped. All-zero differences give p = 1.
    """
    a, b = np.asarray(scores, float).ravel(), np.asarray(reference, float).ravel()
    keep = np.isfinite(a) & np.isfinite(b)
    diff = a[keep] - b[keep]
    if diff.size == 0:
        return float("nan"), float("nan"), 0
    if np.all(diff == 0):
        return 0.0, 1.0, int(diff.size)
    return float(diff.mean()), float(wilcoxon(a[keep], b[keep]).pvalue), int(diff.size)


def difference_ci(
    scores: np.ndarray, other: np.ndarray, n_boot: int = 2000, level: float = 0.95, seed: int = 0
) -> tuple[float, float, float]:
    """(difference of grand means, CI low, CI high) of two methods scored on the same images
    with seeds of their own, each a (seeds x images) grid.

    The images are resampled together (both methods saw the same test images, so an image that
    is hard for one is hard for the other), the seeds of each method on their own: seed k of one
    method shares nothing with seed k of another, unlike the variants of an ablation.
    """
    a, b = np.atleast_2d(np.asarray(scores, float)), np.atleast_2d(np.asarray(other, float))
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"both grids need the same images: {a.shape[1]} against {b.shape[1]} columns")
    rng = np.random.default_rng(seed)
    diffs = np.empty(n_boot)
    for k in range(n_boot):
        images = rng.integers(0, a.shape[1], size=a.shape[1])
        seeds_a = rng.integers(0, a.shape[0], size=a.shape[0])
        seeds_b = rng.integers(0, b.shape[0], size=b.shape[0])
        diffs[k] = np.nanmean(a[seeds_a][:, images]) - np.nanmean(b[seeds_b][:, images])
    alpha = (1 - level) / 2
    lo, hi = np.nanquantile(diffs, [alpha, 1 - alpha])
    return float(np.nanmean(a) - np.nanmean(b)), float(lo), float(hi)
