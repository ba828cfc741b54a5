"""Fine-detail metrics against values computed by hand on tiny arrays, plus one real ISBI label."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
from scipy.ndimage import binary_dilation, binary_erosion

from unetseg.metrics.boundary import (
    boundary_f1,
    boundary_mask,
    cldice,
    detail_metrics,
    error_by_distance,
    hausdorff95,
    pool_error_by_distance,
    skeleton_recall,
    thin_recall,
    thin_structure,
)
from unetseg.metrics.region import LOWER_IS_BETTER

BINS = [0, 1, 2, 3, 4, 6, 8, 12, 16, math.inf]


def square(size: int, top: int, left: int, side: int) -> np.ndarray:
    m = np.zeros((size, size), dtype=np.int64)
    m[top : top + side, left : left + side] = 1
    return m


def test_boundary_mask_ignores_image_border():
    m = np.zeros((6, 6), dtype=np.int64)
    m[:, :3] = 1  # touches the top, bottom and left image borders
    b = boundary_mask(m > 0)
    assert b[:, 2].all() and b.sum() == 6  # only the column next to the background


def test_boundary_f1_one_pixel_shift():
    # 4x4 squares, the prediction one column to the right. Each boundary ring has 12 pixels;
    # they share the 3 + 3 top/bottom pixels of the overlapping columns, so at tolerance 0
    # precision = recall = 6/12 and F1 = 0.5; every pixel is within 1 px of the other ring.
    target, pred = square(10, 2, 2, 4), square(10, 2, 3, 4)
    assert boundary_f1(pred, target, 0) == pytest.approx(0.5)
    assert boundary_f1(pred, target, 1) == pytest.approx(1.0)
    assert boundary_f1(target, target, 0) == 1.0


def test_boundary_f1_empty_cases():
    empty, sq = np.zeros((8, 8), dtype=np.int64), square(8, 2, 2, 3)
    assert boundary_f1(empty, empty, 1) == 1.0
    assert boundary_f1(empty, sq, 1) == 0.0
    assert boundary_f1(sq, empty, 1) == 0.0


def test_hausdorff95_square_shifted_by_three():
    # 10x10 squares 3 px apart: 14 of the 36 edge pixels of each ring are exactly 3 px from the
    # other ring and none farther, so the 95th percentile (and the maximum) is 3.
    target, pred = square(30, 5, 5, 10), square(30, 5, 8, 10)
    assert hausdorff95(pred, target) == pytest.approx(3.0)
    assert hausdorff95(target, target) == 0.0


def test_hausdorff95_nan_without_foreground():
    empty, sq = np.zeros((8, 8), dtype=np.int64), square(8, 2, 2, 3)
    assert math.isnan(hausdorff95(empty, sq))
    assert math.isnan(hausdorff95(sq, empty))
    assert math.isnan(hausdorff95(empty, empty))


def test_cldice_thin_lines():
    target = np.zeros((5, 24), dtype=np.int64)
    target[2, 2:22] = 1  # a 1-px line of 20 pixels: its own skeleton
    assert cldice(target, target) == 1.0
    assert skeleton_recall(target, target) == 1.0
    broken = target.copy()
    broken[2, 10:14] = 0  # a 4-px gap
    # Tprec = 16/16 = 1 (the predicted skeleton lies in the target), Tsens = 16/20 = 0.8,
    # clDice = 2 * 1 * 0.8 / 1.8 = 8/9.
    assert skeleton_recall(broken, target) == pytest.approx(0.8)
    assert cldice(broken, target) == pytest.approx(8 / 9)
    # Extra foreground off the line lowers Tprec but not Tsens.
    extra = target.copy()
    extra[0, 2:7] = 1  # a separate 5-px line: predicted skeleton 25 px, 20 in the target
    assert skeleton_recall(extra, target) == 1.0
    assert cldice(extra, target) == pytest.approx(2 * 0.8 / 1.8)


def test_thin_recall_counts_only_the_vessels_at_most_2_px_wide():
    target = np.zeros((20, 24), dtype=np.int64)
    target[2, 2:22] = 1  # a 1 px vessel: 20 px, local width 2 x 1 = 2
    target[6:8, 2:22] = 1  # a 2 px vessel: 40 px, local width 2 x 1 = 2
    target[11:17, 2:22] = 1  # a 6 px vessel: 120 px, local width 2 x 3 = 6 (not thin)
    thin = thin_structure(target)
    assert thin.sum() == 60 and not thin[11:17].any()
    pred = np.zeros_like(target)
    pred[2, 2:22] = 1  # the whole 1 px vessel
    pred[6:8, 2:12] = 1  # half of the 2 px one (20 of its 40 px)
    pred[10:18, :] = 1  # the wide one and a margin: no thin pixel there
    assert thin_recall(pred, target) == pytest.approx((20 + 20) / 60)
    assert thin_recall(np.zeros_like(target), target) == 0.0
    assert thin_recall(target, target) == 1.0
    wide = np.zeros_like(target)
    wide[11:17, 2:22] = 1
    assert math.isnan(thin_recall(wide, wide))  # no vessel that thin: the measure does not apply
    # 3 px: 2 x 2 = 4 on the axis, not thin (only the blunt tips, where the skeleton meets the rim)
    three = np.zeros_like(target)
    three[6:9, 2:22] = 1
    assert thin_structure(three).sum() < 0.15 * three.sum()


def test_cldice_empty_cases():
    empty, line = np.zeros((5, 10), dtype=np.int64), np.zeros((5, 10), dtype=np.int64)
    line[2, 1:9] = 1
    assert cldice(empty, empty) == 1.0 and skeleton_recall(empty, empty) == 1.0
    assert cldice(empty, line) == 0.0 and skeleton_recall(empty, line) == 0.0
    assert cldice(line, empty) == 0.0 and skeleton_recall(line, empty) == 0.0


def test_error_by_distance_one_pixel_dilation():
    target = square(10, 2, 2, 4)
    # 4-neighbour dilation adds the 16 pixels just outside the sides: all of them are outer
    # boundary pixels (distance 0). Bin [0, 1) holds those 16 plus the 12-pixel inner ring.
    pred = binary_dilation(target > 0).astype(np.int64)
    rate, counts = error_by_distance(pred, target, [0, 1, 2, math.inf])
    np.testing.assert_array_equal(counts, [28, 32, 40])
    np.testing.assert_allclose(rate, [16 / 28, 0.0, 0.0])
    # A 3x3 dilation also adds the 4 diagonal corners, 1 px from the outer boundary. Bin [1, 2)
    # holds the 2x2 core, 20 pixels 1 px outside and 8 pixels sqrt(2) px outside.
    pred8 = binary_dilation(target > 0, np.ones((3, 3))).astype(np.int64)
    rate8, counts8 = error_by_distance(pred8, target, [0, 1, 2, math.inf])
    np.testing.assert_array_equal(counts8, [28, 32, 40])
    np.testing.assert_allclose(rate8, [16 / 28, 4 / 32, 0.0])


def test_error_by_distance_edges():
    target = square(10, 2, 2, 4)
    rate, counts = error_by_distance(target, target, [0, 1, 1.9])  # distances > 1.9 are dropped
    np.testing.assert_array_equal(counts, [28, 32])
    np.testing.assert_array_equal(rate, [0.0, 0.0])
    # The last bin is closed: [0, 1] keeps the 24 pixels at exactly 1 px but not those at sqrt(2).
    _, counts = error_by_distance(target, target, [0, 1])
    np.testing.assert_array_equal(counts, [52])
    empty = np.zeros((4, 4), dtype=np.int64)  # no true boundary: everything at distance inf
    rate, counts = error_by_distance(np.ones_like(empty), empty, [0, 1, math.inf])
    np.testing.assert_array_equal(counts, [0, 16])
    assert math.isnan(rate[0]) and rate[1] == 1.0
    with pytest.raises(ValueError):
        error_by_distance(target, target, [2, 1])


def test_pool_error_by_distance_weights_by_counts():
    a = (np.array([0.5, np.nan, 0.0]), np.array([2, 0, 0]))
    b = (np.array([0.0, 1.0, np.nan]), np.array([6, 3, 0]))
    pooled = pool_error_by_distance([a, b])
    np.testing.assert_allclose(pooled[:2], [1 / 8, 1.0])
    assert math.isnan(pooled[2])


def test_detail_metrics_keys_and_multiclass():
    target = square(12, 2, 2, 6)
    target[4:6, 4:6] = 2  # a second foreground class inside: same foreground as all ones
    scores = detail_metrics(target, (target > 0).astype(np.int64), tolerances=(0, 1, 2))
    assert set(scores) == {"bf1_0px", "bf1_1px", "bf1_2px", "hd95", "cldice", "skeleton_recall", "thin_recall"}
    assert scores["hd95"] == 0.0 and math.isnan(scores["thin_recall"])  # a 6 px square: nothing 2 px wide
    assert all(scores[k] == 1.0 for k in scores if k not in ("hd95", "thin_recall"))
    keys = {"bf1_1px", "bf1_2px", "hd95", "cldice", "skeleton_recall", "thin_recall"}
    assert set(detail_metrics(target, target)) == keys
    assert "hd95" in LOWER_IS_BETTER
    assert not {"bf1_1px", "bf1_2px", "cldice", "skeleton_recall", "thin_recall"} & LOWER_IS_BETTER


def test_isbi_label_self_and_eroded(isbi):
    label = cv2.imread(str(isbi / "train" / "label" / "0.png"), cv2.IMREAD_UNCHANGED)
    target = (label == 0).astype(np.int64)  # 0 = membrane
    perfect = detail_metrics(target, target, tolerances=(0, 1, 2))
    assert perfect == {
        "bf1_0px": 1.0,
        "bf1_1px": 1.0,
        "bf1_2px": 1.0,
        "hd95": 0.0,
        "cldice": 1.0,
        "skeleton_recall": 1.0,
        "thin_recall": 1.0,
    }

    # Thin the membranes by one pixel on each side (not at the image border).
    eroded = binary_erosion(target > 0, border_value=1).astype(np.int64)
    scores = detail_metrics(eroded, target, tolerances=(0, 1, 2))
    assert scores["bf1_2px"] > 0.99
    assert scores["bf1_1px"] > 0.99
    # Every eroded boundary pixel is 1 px inside the true one, so none coincide exactly.
    assert scores["bf1_0px"] < 0.1
    assert scores["hd95"] == pytest.approx(1.0)
    assert scores["cldice"] > 0.95 and scores["skeleton_recall"] > 0.95

    # All pixel errors of an erosion are true inner-boundary pixels: the first distance bin.
    rate, counts = error_by_distance(eroded, target, BINS)
    assert counts.sum() == target.size
    assert rate[0] > 0
    np.testing.assert_array_equal(rate[1:], 0.0)
    assert rate[0] * counts[0] == pytest.approx((eroded != target).sum())
