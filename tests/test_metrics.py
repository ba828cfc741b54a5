"""Metrics against values computed by hand on small arrays."""

from __future__ import annotations

import math

import numpy as np
import pytest
from skimage.metrics import adapted_rand_error, variation_of_information

from unetseg.metrics.region import is_better, mean_metrics, region_metrics, regions_of, segmentation_metrics


def test_binary_dice_iou_pixel_error_by_hand():
    pred = np.array([[1, 1, 0], [0, 1, 0]])
    target = np.array([[1, 0, 0], [0, 1, 1]])
    # |P| = 3, |T| = 3, |P & T| = 2, |P | T| = 4, two pixels differ out of six
    m = segmentation_metrics(pred, target, 2)
    assert set(m) == {"dice", "iou", "pixel_error"}
    assert m["dice"] == pytest.approx(4 / 6)
    assert m["iou"] == pytest.approx(2 / 4)
    assert m["pixel_error"] == pytest.approx(2 / 6)


def test_multiclass_dice_is_mean_over_foreground_classes():
    target = np.array([[0, 1, 1, 2, 2, 2]])
    pred = np.array([[1, 1, 1, 2, 0, 0]])
    # class 1: |P|=3 |T|=2 inter 2 -> dice 4/5, iou 2/3; class 2: |P|=1 |T|=3 inter 1 -> 2/4, 1/3
    m = segmentation_metrics(pred, target, 3)
    assert m["dice"] == pytest.approx((4 / 5 + 2 / 4) / 2)
    assert m["iou"] == pytest.approx((2 / 3 + 1 / 3) / 2)
    assert m["pixel_error"] == pytest.approx(3 / 6)


def test_perfect_and_disjoint():
    t = np.array([[0, 1], [1, 0]])
    assert segmentation_metrics(t, t, 2) == {"dice": 1.0, "iou": 1.0, "pixel_error": 0.0}
    m = segmentation_metrics(1 - t, t, 2)
    assert m["dice"] == 0.0 and m["iou"] == 0.0 and m["pixel_error"] == 1.0


def test_empty_vs_empty_is_perfect():
    z = np.zeros((4, 5), dtype=np.int64)
    m = segmentation_metrics(z, z, 2)
    assert m["dice"] == 1.0 and m["iou"] == 1.0 and m["pixel_error"] == 0.0


def test_prediction_on_empty_target_scores_zero():
    z = np.zeros((4, 5), dtype=np.int64)
    p = z.copy()
    p[0, 0] = 1
    m = segmentation_metrics(p, z, 2)
    assert m["dice"] == 0.0 and m["pixel_error"] == pytest.approx(1 / 20)


def test_class_absent_from_both_counts_as_perfect():
    target = np.array([[0, 1, 1]])
    pred = np.array([[0, 1, 0]])
    # class 1: dice 2/3; class 2 absent from both: 1.0
    assert segmentation_metrics(pred, target, 3)["dice"] == pytest.approx((2 / 3 + 1) / 2)


def test_shape_mismatch_rejected():
    with pytest.raises(ValueError, match="differ in shape"):
        segmentation_metrics(np.zeros((2, 3), int), np.zeros((3, 2), int), 2)


# --------------------------------------------------------------------------- regions

# class maps: 1 = membrane (separates regions), 0 = cell interior (regions for "background")
SPLIT_WALL = np.array([[0, 0, 1, 0, 0]] * 3)
NO_WALL = np.zeros((3, 5), dtype=np.int64)


def test_regions_of_is_four_connected():
    classes = np.array([[1, 0], [0, 1]])
    fg = regions_of(classes, "foreground")
    assert fg.max() == 2 and fg[0, 1] == 0 and fg[1, 0] == 0  # diagonal pixels: two regions
    bg = regions_of(classes, "background")
    assert bg.max() == 2 and bg[0, 0] == 0
    assert regions_of(SPLIT_WALL, "background").max() == 2


def test_identical_segmentations_have_zero_region_errors():
    m = region_metrics(SPLIT_WALL, SPLIT_WALL, "background")
    assert set(m) == {"rand_error", "vi", "vi_split", "vi_merge"}
    for key, value in m.items():
        assert value == pytest.approx(0.0, abs=1e-12), key


def test_identical_isbi_label_has_zero_region_errors(isbi):
    from unetseg.data import read_mask

    target = read_mask(isbi / "train" / "label" / "3.png", {0: 1, 255: 0})
    m = segmentation_metrics(target, target, 2, "background")
    assert m["rand_error"] == pytest.approx(0.0, abs=1e-12) and m["dice"] == 1.0
    assert m["vi"] == pytest.approx(0.0, abs=1e-12)


def test_merging_two_true_regions_is_a_merge_error():
    # truth: two 6-pixel cells left and right of a membrane; prediction misses the membrane
    m = region_metrics(NO_WALL, SPLIT_WALL, "background")
    assert m["vi_merge"] > 0
    assert m["vi_split"] == pytest.approx(0.0, abs=1e-12)
    assert m["vi_merge"] == pytest.approx(1.0)  # H(true | pred) = 1 bit: two equal halves
    assert m["vi"] == pytest.approx(m["vi_merge"] + m["vi_split"])
    # Adapted Rand by hand over pixel pairs (true-membrane pixels ignored):
    # same-in-both S = 2*C(6,2) = 30, same-in-truth A = 30, same-in-prediction B = C(12,2) = 66,
    # F = 2S / (A + B) = 60 / 96, error = 1 - F
    assert m["rand_error"] == pytest.approx(1 - 60 / 96)


def test_splitting_one_true_region_is_a_split_error():
    # truth: one 15-pixel cell; prediction draws a membrane through it (3 predicted-membrane
    # pixels, which count as one more predicted label: only true labels are ignored)
    m = region_metrics(SPLIT_WALL, NO_WALL, "background")
    assert m["vi_split"] > 0
    assert m["vi_merge"] == pytest.approx(0.0, abs=1e-12)
    p = np.array([6, 6, 3]) / 15
    assert m["vi_split"] == pytest.approx(float(-(p * np.log2(p)).sum()))
    # S = 15 + 15 + 3 = 33, A = C(15, 2) = 105, B = 33
    assert m["rand_error"] == pytest.approx(1 - 66 / 138)


def test_region_metrics_match_skimage_on_labelled_regions():
    rng = np.random.default_rng(0)
    target = (rng.random((20, 24)) > 0.75).astype(np.int64)
    pred = (rng.random((20, 24)) > 0.7).astype(np.int64)
    m = region_metrics(pred, target, "background")
    true_regions, pred_regions = regions_of(target, "background"), regions_of(pred, "background")
    are, _, _ = adapted_rand_error(true_regions, pred_regions, ignore_labels=(0,))
    h_pred_given_true, h_true_given_pred = variation_of_information(true_regions, pred_regions, ignore_labels=(0,))
    assert m["rand_error"] == pytest.approx(are)
    assert m["vi_split"] == pytest.approx(h_pred_given_true)
    assert m["vi_merge"] == pytest.approx(h_true_given_pred)
    assert 0 < m["rand_error"] < 1


def test_foreground_regions():
    target = np.array([[1, 1, 0, 2, 2]])
    merged = np.array([[1, 1, 1, 1, 1]])
    m = segmentation_metrics(merged, target, 3, "foreground")
    assert m["vi_merge"] > 0 and m["vi_split"] == pytest.approx(0.0, abs=1e-12)


def test_region_metrics_undefined_without_true_regions():
    all_membrane = np.ones((3, 3), dtype=np.int64)
    m = segmentation_metrics(all_membrane, all_membrane, 2, "background")
    assert all(math.isnan(m[k]) for k in ("rand_error", "vi", "vi_split", "vi_merge"))
    assert m["dice"] == 1.0


def test_regions_none_skips_region_metrics():
    assert "rand_error" not in segmentation_metrics(SPLIT_WALL, SPLIT_WALL, 2, "none")


# --------------------------------------------------------------------------- aggregation


def test_mean_metrics_skips_nan_and_names():
    rows = [
        {"name": "a", "dice": 1.0, "rand_error": float("nan"), "vi": float("nan")},
        {"name": "b", "dice": 0.5, "rand_error": 0.2, "vi": float("nan")},
        {"name": "c", "dice": 0.0, "rand_error": 0.4, "vi": float("nan")},
    ]
    mean = mean_metrics(rows)
    assert set(mean) == {"dice", "rand_error", "vi"}
    assert mean["dice"] == pytest.approx(0.5)
    assert mean["rand_error"] == pytest.approx(0.3)
    assert math.isnan(mean["vi"])
    assert mean_metrics([]) == {}


@pytest.mark.parametrize(
    "metric, value, best, expected",
    [
        ("dice", 0.8, 0.7, True),
        ("dice", 0.6, 0.7, False),
        ("iou", 0.7, 0.7, False),
        ("rand_error", 0.1, 0.2, True),
        ("rand_error", 0.3, 0.2, False),
        ("vi", 0.5, 1.0, True),
        ("pixel_error", 0.2, 0.1, False),
        ("loss", 0.2, 0.3, True),
        ("dice", 0.1, None, True),
        ("rand_error", 0.9, None, True),
        ("dice", float("nan"), None, False),
        ("rand_error", 0.5, float("nan"), True),
        ("rand_error", float("nan"), 0.5, False),
    ],
)
def test_is_better(metric, value, best, expected):
    assert is_better(metric, value, best) is expected


def test_object_f1_hand_computed():
    from unetseg.metrics.region import object_f1

    true = np.zeros((10, 10), dtype=np.int64)
    true[0:4, 0:4] = 1  # 16 px
    true[6:10, 6:10] = 2  # 16 px
    pred = np.zeros_like(true)
    pred[0:4, 0:3] = 1  # IoU 12/16 = 0.75: a match
    pred[6:8, 6:8] = 2  # IoU 4/16 = 0.25: no match
    pred[0:2, 8:10] = 3  # nothing there: a false positive
    # TP = 1, FP = 2, FN = 1 -> F1 = 2 / (2 + 2 + 1)
    assert object_f1(pred, true) == pytest.approx(2 / 5)
    assert object_f1(true, true) == 1.0
    assert object_f1(np.zeros_like(true), np.zeros_like(true)) == 1.0
    assert object_f1(np.zeros_like(true), true) == 0.0


def test_object_errors_count_merges_and_splits_by_hand():
    from unetseg.metrics.region import object_errors

    truth = np.zeros((10, 20), dtype=np.int64)
    truth[1:4, 1:4] = 1  # two touching-in-prediction objects ...
    truth[1:4, 5:8] = 2
    truth[6:9, 1:13] = 3  # ... and one long object predicted in two halves
    truth[6:9, 15:18] = 4  # and one predicted exactly
    pred = np.zeros_like(truth)
    pred[1:4, 1:8] = 1  # merges objects 1 and 2
    pred[6:9, 1:7] = 2
    pred[6:9, 8:13] = 3  # 2 and 3 split object 3
    pred[6:9, 15:18] = 4
    assert object_errors(pred, truth) == {"merges": 1.0, "splits": 1.0}
    assert object_errors(truth, truth) == {"merges": 0.0, "splits": 0.0}
    assert object_errors(np.zeros_like(truth), truth) == {"merges": 0.0, "splits": 0.0}
