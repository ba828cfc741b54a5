"""The report's opening verdict: on this dataset, which variants of the reference cost nothing
measurable in Dice and which cannot be dropped, in words (what each changes) with the numbers
that decide it (what is lost in Dice and boundary F1, and where: near the boundary or far from
it); the paired-comparison table follows it.

Every sentence is derived from the stored paired comparison (:func:`unetseg.ablation.report.
paired_comparison`: the mean of the (seed, image) differences to the reference and its
bootstrap 95% CI) and the variants' skips and encoders, so the words change when the numbers
do: a CI that includes 0 is "no measurable cost", one entirely above 0 "better", one entirely
below 0 "cannot be dropped". A variant without a finite CI (too few pairs) is said to be
unmeasured rather than placed.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from unetseg.ablation.claims import verdict

OUTCOMES = {"agree": "better", "not resolved": "no measurable cost", "disagree": "costs"}
BOUNDARY = (("bf1_1px", "1 px"), ("bf1_2px", "2 px"))


def outcome(dice: dict[str, Any] | None) -> str:
    """better / no measurable cost / costs / not measured, from the paired Dice difference."""
    if dice is None or not np.all(np.isfinite(dice["ci"])):
        return "not measured"
    return OUTCOMES[verdict(dice, 1)]  # the claim "the variant is better" read off its CI


def _levels(levels: list[int]) -> str:
    return f"level{'s' if len(levels) > 1 else ''} {', '.join(map(str, levels))}"


def change(reference: dict[str, Any], variant: dict[str, Any]) -> str:
    """What a variant changes in the reference, in words, from their per-level skips (level 0
    first) and encoders: "no long skips", "without the skips at levels 2, 3", "add instead of
    concat at every level", "a plain encoder instead of residual"."""
    ours, theirs = variant["skips"], reference["skips"]
    words = []
    if len(ours) != len(theirs):
        words.append(f"skips {'/'.join(ours)} instead of {'/'.join(theirs)}")
    else:
        kept = [i for i, mode in enumerate(theirs) if mode != "none"]
        dropped = [i for i in kept if ours[i] == "none"]
        merged = {(theirs[i], ours[i]) for i in range(len(ours)) if ours[i] not in ("none", theirs[i])}
        others = [i for i in range(len(ours)) if ours[i] not in ("none", theirs[i])]
        if dropped and len(dropped) == len(kept):
            words.append("no long skips")
        elif dropped:
            words.append(
                f"without the skips at {_levels(dropped)}, keeping {_levels(sorted(set(kept) - set(dropped)))}"
            )
        if len(merged) == 1 and len(others) == len(ours):
            old, new = next(iter(merged))
            words.append(f"{new} instead of {old} skips at every level")
        elif others:
            words.append(f"{'/'.join(ours)} skips instead of {'/'.join(theirs)}")
    if variant["encoder"] != reference["encoder"]:
        words.append(f"a {variant['encoder']} encoder instead of {reference['encoder']}")
    return ", ".join(words) or "the same model"


def _difference(d: dict[str, Any]) -> str:
    return f"{d['diff']:+.4f} [{d['ci'][0]:+.4f}, {d['ci'][1]:+.4f}]"


def _evidence(name: str, what: str, diffs: dict[str, Any]) -> str:
    """``name (what it changes): its Dice and boundary F1 differences``, and the boundary F1 it
    loses measurably where Dice does not move; differences without a finite CI are left out."""
    measured = {key: d for key, d in diffs.items() if outcome(d) != "not measured"}
    numbers = [f"Dice {_difference(measured['dice'])}"] if "dice" in measured else []
    numbers += [f"boundary F1 at {tol} {_difference(measured[key])}" for key, tol in BOUNDARY if key in measured]
    lost = [tol for key, tol in BOUNDARY if key in measured and outcome(measured[key]) == "costs"]
    text = f"{name} ({what})" + (f": {', '.join(numbers)}" if numbers else "")
    if lost and outcome(diffs.get("dice")) != "costs":
        text += f", though it loses boundary F1 at {' and '.join(lost)} (its CI lies below 0)"
    return text


def _bin(bins: list[float | None], i: int) -> str:
    lo, hi = bins[i], bins[i + 1]
    return f"{lo:g} px and beyond" if hi is None or hi == float("inf") else f"{lo:g}-{hi:g} px"  # JSON: null


def distance_sentence(reference: str, summary: dict[str, dict[str, Any]]) -> str | None:
    """Where in the image each variant's errors change: the pixel error rate nearest the true
    boundary and farthest from it, and the bin where the variant's rate differs most from the
    reference's (as a ratio), from the pooled error-by-distance curves in ``summary``. A Dice
    difference does not say whether a skip's loss is at the edge (fine detail) or inside objects
    (context); this does. None without curves."""
    ref = summary.get(reference, {}).get("distance")
    if not ref:
        return None
    bins, base = ref["bins"], np.asarray(ref["error"], dtype=float)
    last = len(base) - 1
    parts = [
        f"the reference errs on {100 * base[0]:.1f} % of the pixels at {_bin(bins, 0)} and "
        f"{100 * base[last]:.2f} % at {_bin(bins, last)}"
    ]
    for name, entry in summary.items():
        curve = entry.get("distance")
        if name == reference or not curve or len(curve["error"]) != len(base):
            continue
        error = np.asarray(curve["error"], dtype=float)
        ratio = np.where((base > 0) & np.isfinite(error), error / np.where(base > 0, base, 1.0), np.nan)
        if not np.isfinite(ratio).any() or not np.all(ratio[np.isfinite(ratio)] > 0):
            continue
        worst = int(np.nanargmax(np.abs(np.log(ratio))))
        parts.append(
            f"{name} {100 * error[0]:.1f} % and {100 * error[last]:.2f} % (its largest change: "
            f"x{ratio[worst]:.2f} at {_bin(bins, worst)})"
        )
    return (
        "By distance to the true boundary (pixel error rate, pooled over seeds and images): " + "; ".join(parts) + "."
    )


LEADS = {
    "no measurable cost": "No measurable cost in Dice here (the CI includes 0): ",
    "better": "Better than the reference in Dice (the CI lies above 0): ",
    "costs": "Cannot be dropped: each costs Dice (the CI lies entirely below 0): ",
    "not measured": "Not measured (too few paired images for a CI): ",
}


# With one seed the pairs differ only in the image, so an interval says how the images spread and
# nothing of how another training run would land: the grid's own seeds are that measure.
ONE_SEED = (
    "One seed: these intervals cover the spread over images, not the spread between training runs, so a "
    "variant can land on either side of the reference with another seed; run the grid's seeds before dropping a skip."
)

# A --quick grid's few crops test the pipeline; its numbers are no evidence about the skips.
SMOKE_TEST = (
    "SMOKE TEST (--quick): every run trained on the spec's quick budget, a few crops, to check the pipeline end "
    "to end. "
    "The numbers below say nothing about the skips; run the grid without --quick for a verdict."
)


def dataset_verdict(
    reference: str, comparison: dict[str, dict[str, Any]], summary: dict[str, dict[str, Any]]
) -> dict[str, Any]:
    """The verdict on each variant against ``reference`` and the sentences that say it: one
    per outcome that some variant has, variants in the comparison's order."""
    if not comparison or reference not in summary:
        return {
            "reference": reference,
            "variants": [],
            "sentences": [f"No verdict: no variant has finished runs to compare with the reference {reference!r}."],
        }
    variants = [
        {"variant": name, "change": change(summary[reference], summary[name]), "outcome": outcome(diffs.get("dice"))}
        for name, diffs in comparison.items()
    ]
    pairs = next((d["pairs"] for diffs in comparison.values() for d in diffs.values()), 0)
    sentences = [
        f"Each variant against the reference {reference!r} on this dataset, from the mean of {pairs} paired "
        "(seed, image) differences and its bootstrap 95% CI (the table below has the other measures and the p-values)."
    ]
    for kind, lead in LEADS.items():
        items = [
            _evidence(v["variant"], v["change"], comparison[v["variant"]]) for v in variants if v["outcome"] == kind
        ]
        if items:
            sentences.append(lead + "; ".join(items) + ".")
    where = distance_sentence(reference, summary)
    if where:
        sentences.append(where)
    if len(set(summary[reference].get("seeds", ()))) == 1:  # one entry a run: folds repeat a seed
        sentences.append(ONE_SEED)
    return {"reference": reference, "variants": variants, "sentences": sentences}
