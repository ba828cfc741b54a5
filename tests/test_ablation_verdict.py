"""The ablation report's opening verdict, from hand-made paired comparisons: each outcome
(no measurable cost, better, cannot be dropped, not measured), the boundary F1 lost where Dice
is not, and what each variant changes in words."""

from __future__ import annotations

import math

import pytest

from unetseg.ablation.verdict import change, dataset_verdict, outcome


def _diff(lo: float, hi: float) -> dict:
    return {"diff": (lo + hi) / 2, "ci": [lo, hi], "p": 0.5, "pairs": 6}


SUMMARY = {
    "concat": {"skips": ["concat"] * 4, "encoder": "residual"},
    "add": {"skips": ["add"] * 4, "encoder": "residual"},
    "none": {"skips": ["none"] * 4, "encoder": "residual"},
    "shallow-only": {"skips": ["concat", "concat", "none", "none"], "encoder": "residual"},
    "plain": {"skips": ["concat"] * 4, "encoder": "plain"},
}


@pytest.mark.parametrize(
    "lo, hi, expected, lead",
    [
        (-0.002, 0.004, "no measurable cost", "No measurable cost in Dice here (the CI includes 0): "),
        (0.001, 0.005, "better", "Better than the reference in Dice (the CI lies above 0): "),
        (-0.05, -0.01, "costs", "Cannot be dropped: each costs Dice (the CI lies entirely below 0): "),
        (float("nan"), float("nan"), "not measured", "Not measured (too few paired images for a CI): "),
    ],
)
def test_the_verdict_places_each_variant_by_its_dice_ci(lo, hi, expected, lead):
    comparison = {"shallow-only": {"dice": _diff(lo, hi), "bf1_1px": _diff(-0.01, 0.03)}}
    found = dataset_verdict("concat", comparison, SUMMARY)
    assert found["variants"] == [
        {
            "variant": "shallow-only",
            "change": "without the skips at levels 2, 3, keeping levels 0, 1",
            "outcome": expected,
        }
    ]
    assert found["sentences"][0] == (
        "Each variant against the reference 'concat' on this dataset, from the mean of 6 paired (seed, image) "
        "differences and its bootstrap 95% CI (the table below has the other measures and the p-values)."
    )
    dice = "" if expected == "not measured" else f"Dice {(lo + hi) / 2:+.4f} [{lo:+.4f}, {hi:+.4f}], "
    assert found["sentences"][1:] == [
        f"{lead}shallow-only (without the skips at levels 2, 3, keeping levels 0, 1): {dice}"
        "boundary F1 at 1 px +0.0100 [-0.0100, +0.0300]."
    ]


def test_the_verdict_groups_variants_and_says_what_boundary_f1_loses_where_dice_does_not():
    comparison = {
        "add": {"dice": _diff(-0.002, 0.004), "bf1_1px": _diff(-0.03, -0.01), "bf1_2px": _diff(-0.01, 0.01)},
        "none": {"dice": _diff(-0.3, -0.2), "bf1_1px": _diff(-0.5, -0.4)},
        "plain": {"dice": _diff(-0.001, 0.001)},
    }
    sentences = dataset_verdict("concat", comparison, SUMMARY)["sentences"]
    assert sentences[1] == (
        "No measurable cost in Dice here (the CI includes 0): add (add instead of concat skips at every level): "
        "Dice +0.0010 [-0.0020, +0.0040], boundary F1 at 1 px -0.0200 [-0.0300, -0.0100], boundary F1 at 2 px "
        "+0.0000 [-0.0100, +0.0100], though it loses boundary F1 at 1 px (its CI lies below 0); "
        "plain (a plain encoder instead of residual): Dice +0.0000 [-0.0010, +0.0010]."
    )
    assert sentences[2] == (
        "Cannot be dropped: each costs Dice (the CI lies entirely below 0): none (no long skips): "
        "Dice -0.2500 [-0.3000, -0.2000], boundary F1 at 1 px -0.4500 [-0.5000, -0.4000]."
    )
    assert len(sentences) == 3  # no sentence for an outcome no variant has


def test_a_one_seed_verdict_says_its_intervals_leave_out_the_spread_between_runs():
    comparison = {"none": {"dice": _diff(-0.3, -0.2)}}
    one = {**SUMMARY, "concat": {**SUMMARY["concat"], "seeds": [0]}}
    folds = {**SUMMARY, "concat": {**SUMMARY["concat"], "seeds": [0, 0, 0]}}  # one seed, three folds
    assert dataset_verdict("concat", comparison, folds)["sentences"][-1].startswith("One seed")
    three = {**SUMMARY, "concat": {**SUMMARY["concat"], "seeds": [0, 1, 2]}}
    assert dataset_verdict("concat", comparison, one)["sentences"][-1].startswith("One seed: these intervals cover")
    assert not any(s.startswith("One seed") for s in dataset_verdict("concat", comparison, three)["sentences"])


def test_without_a_comparison_the_verdict_says_so():
    assert dataset_verdict("concat", {}, SUMMARY)["sentences"] == [
        "No verdict: no variant has finished runs to compare with the reference 'concat'."
    ]
    assert outcome(None) == "not measured"


def test_change_names_mixed_skip_changes_and_the_same_model():
    reference = {"skips": ["concat", "none", "concat"], "encoder": "residual"}
    assert change(reference, {"skips": ["add", "add", "add"], "encoder": "residual"}) == (
        "add/add/add skips instead of concat/none/concat"
    )
    assert change(reference, {"skips": ["none", "none", "concat"], "encoder": "residual"}) == (
        "without the skips at level 0, keeping level 2"
    )
    assert change(reference, dict(reference)) == "the same model"


def test_the_verdict_says_where_the_errors_change_by_distance_to_the_boundary():
    bins = [0, 1, 4, None]
    summary = {
        "concat": {**SUMMARY["concat"], "distance": {"bins": bins, "error": [0.4, 0.05, 0.01], "counts": [9, 9, 9]}},
        "none": {**SUMMARY["none"], "distance": {"bins": bins, "error": [0.5, 0.2, 0.012], "counts": [9, 9, 9]}},
        "add": {**SUMMARY["add"], "distance": {"bins": bins, "error": [0.4, 0.04, 0.02], "counts": [9, 9, 9]}},
    }
    comparison = {"none": {"dice": _diff(-0.05, -0.01)}, "add": {"dice": _diff(-0.01, 0.01)}}
    found = dataset_verdict("concat", comparison, summary)
    # none: ratios 1.25, 4.0, 1.2 -> largest 4.0 at 1-4 px; add: 1.0, 0.8, 2.0 -> 2.0 beyond 4 px
    assert found["sentences"][-1] == (
        "By distance to the true boundary (pixel error rate, pooled over seeds and images): the reference errs "
        "on 40.0 % of the pixels at 0-1 px and 1.00 % at 4 px and beyond; none 50.0 % and 1.20 % (its largest "
        "change: x4.00 at 1-4 px); add 40.0 % and 2.00 % (its largest change: x2.00 at 4 px and beyond)."
    )
    assert not any("distance" in s for s in dataset_verdict("concat", comparison, SUMMARY)["sentences"])


def test_distance_curves_pool_by_pixel_count():
    from unetseg.ablation.report import pooled_distance

    pooled = pooled_distance(
        [
            {"bins": [0, 1, 2, None], "error": [0.2, 0.4, None], "counts": [1, 3, 0]},
            {"bins": [0, 1, 2, None], "error": [0.6, 0.0, None], "counts": [3, 1, 0]},
        ]
    )
    assert pooled["counts"] == [4, 4, 0] and pooled["bins"] == [0, 1, 2, None]
    assert pooled["error"][:2] == pytest.approx([(0.2 + 3 * 0.6) / 4, (3 * 0.4) / 4]) and math.isnan(pooled["error"][2])
    assert pooled_distance([]) is None
