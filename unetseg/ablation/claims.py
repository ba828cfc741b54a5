"""What the ablation says about published claims on long skips: each claim is tied to the
variants and the measure that test it, and marked agree / disagree / not resolved from the
paired differences, so the report's verdicts follow from the numbers and change with them.

A verdict needs the 95% CI of the paired (seed, image) difference to exclude zero: on the
claimed side it is "agree", on the other "disagree"; a CI across zero is "not resolved".
Claims whose variants the grid lacks are left out.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from unetseg.metrics.stats import bootstrap_ci, paired_test
from unetseg.report.document import Table

Grouped = dict[str, list[dict[str, Any]]]
LOWER_IS_BETTER = {"hd95", "rand_error", "vi", "pixel_error", "error_near_boundary", "merges", "splits"}


def score_grid(runs: list[dict[str, Any]], metric: str) -> np.ndarray:
    """(seeds x images) per-image scores of one variant, seeds and images in a fixed order."""
    ordered = sorted(runs, key=lambda r: r["seed"])
    names = sorted(row["name"] for row in ordered[0]["images"])
    by_name = [{row["name"]: row.get(metric) for row in r["images"]} for r in ordered]
    return np.array([[np.nan if m.get(n) is None else m[n] for n in names] for m in by_name], dtype=float)


def compare(runs: list[dict[str, Any]], baseline: list[dict[str, Any]], metric: str) -> dict[str, Any] | None:
    """``runs`` minus ``baseline`` on ``metric`` over the seeds both have: mean paired difference,
    its two-level bootstrap 95% CI, the Wilcoxon p-value and the number of pairs."""
    seeds = {r["seed"] for r in runs} & {r["seed"] for r in baseline}
    mine = [r for r in runs if r["seed"] in seeds]
    theirs = [r for r in baseline if r["seed"] in seeds]
    if not mine or metric not in mine[0]["mean"]:
        return None
    a, b = score_grid(mine, metric), score_grid(theirs, metric)
    diff, p, n = paired_test(a, b)
    lo, hi = bootstrap_ci(a - b) if n else (float("nan"), float("nan"))
    return {"diff": diff, "ci": [lo, hi], "p": p, "pairs": n}


def verdict(difference: dict[str, Any] | None, claimed_sign: int) -> str:
    """agree / disagree / not resolved for a claim that the difference has ``claimed_sign``."""
    if difference is None or not np.all(np.isfinite(difference["ci"])):
        return "not resolved"
    lo, hi = difference["ci"]
    if (lo > 0 and claimed_sign > 0) or (hi < 0 and claimed_sign < 0):
        return "agree"
    if (lo > 0 and claimed_sign < 0) or (hi < 0 and claimed_sign > 0):
        return "disagree"
    return "not resolved"


def _better_sign(metric: str) -> int:
    return -1 if metric in LOWER_IS_BETTER else 1


def _text(name: str, base: str, metric: str, d: dict[str, Any]) -> str:
    return f"{name} − {base}, {metric}: {d['diff']:+.4f} [{d['ci'][0]:+.4f}, {d['ci'][1]:+.4f}]"


@dataclass(frozen=True)
class Claim:
    source: str
    statement: str
    test: Callable[[Grouped, str], tuple[str, str] | None]  # (verdict, evidence), None if untestable here


def _skips_recover_detail(grouped: Grouped, reference: str) -> tuple[str, str] | None:
    if "none" not in grouped:
        return None
    results = [(m, compare(grouped[reference], grouped["none"], m)) for m in ("bf1_1px", "error_near_boundary")]
    results = [(m, d) for m, d in results if d is not None]
    if not results:
        return None
    metric, d = results[0]
    evidence = "; ".join(_text(reference, "none", m, x) for m, x in results)
    return verdict(d, _better_sign(metric)), evidence


def _semantic_gap(grouped: Grouped, reference: str) -> tuple[str, str] | None:
    if not {"shallow-only", "deep-only"} <= grouped.keys():
        return None
    d = compare(grouped["deep-only"], grouped["shallow-only"], "dice")
    return None if d is None else (verdict(d, 1), _text("deep-only", "shallow-only", "dice", d))


def _some_skips_hurt(grouped: Grouped, reference: str) -> tuple[str, str] | None:
    partial = [name for name in ("shallow-only", "deep-only", "none") if name in grouped]
    diffs = {name: compare(grouped[name], grouped[reference], "dice") for name in partial}
    diffs = {name: d for name, d in diffs.items() if d is not None}
    if not diffs:
        return None
    verdicts = {name: verdict(d, 1) for name, d in diffs.items()}
    evidence = "; ".join(_text(name, reference, "dice", d) for name, d in diffs.items())
    if "agree" in verdicts.values():
        return "agree", evidence
    return ("disagree" if all(v == "disagree" for v in verdicts.values()) else "not resolved"), evidence


def _robustness_cost(grouped: Grouped, reference: str) -> tuple[str, str] | None:
    """Dice lost from the clean image to the strongest of each corruption, per seed; the claim
    holds where the reference loses more than the skipless variant on every seed."""
    if "none" not in grouped or not grouped[reference][0].get("corruption"):
        return None

    def loss(run: dict[str, Any]) -> float:
        curves = run["corruption"].values()
        return float(np.mean([c["dice"][0] - c["dice"][-1] for c in curves]))

    seeds = sorted({r["seed"] for r in grouped[reference]} & {r["seed"] for r in grouped["none"]})
    ref = {r["seed"]: loss(r) for r in grouped[reference]}
    none = {r["seed"]: loss(r) for r in grouped["none"]}
    gaps = [ref[s] - none[s] for s in seeds]
    evidence = (
        f"Dice lost to the strongest corruptions (mean over kinds): {reference} "
        f"{np.mean([ref[s] for s in seeds]):.4f}, none {np.mean([none[s] for s in seeds]):.4f} over seeds {seeds}"
    )
    if len(gaps) >= 3 and all(g > 0 for g in gaps):
        return "agree", evidence
    if len(gaps) >= 3 and all(g < 0 for g in gaps):
        return "disagree", evidence
    return "not resolved", evidence


CLAIMS = [
    Claim(
        "Ronneberger et al. 2015; Drozdzal et al. 2016",
        "Long skips recover the fine detail that down-sampling loses: with them boundaries are sharper.",
        _skips_recover_detail,
    ),
    Claim(
        "Zhou et al. 2018 (UNet++)",
        "A semantic gap separates shallow encoder features from the decoder's, so plain shallow skips help less "
        "than deep ones (here: deep-only beats shallow-only on Dice).",
        _semantic_gap,
    ),
    Claim(
        "Wang et al. 2022 (UCTransNet)",
        "Not every skip helps; some hurt, so a network with fewer skips can beat one with all of them.",
        _some_skips_hurt,
    ),
    Claim(
        "Kamath et al. 2023",
        "Skips help most on hard tasks but may cost robustness: under corrupted input a U-Net with skips loses "
        "more than one without.",
        _robustness_cost,
    ),
]


def claims_table(grouped: Grouped, reference: str) -> tuple[Table, list[dict[str, str]]] | None:
    """The verdict on each published claim the grid can test, as a table and as data."""
    rows = []
    for claim in CLAIMS:
        outcome = claim.test(grouped, reference) if reference in grouped else None
        if outcome is not None:
            rows.append(
                {"source": claim.source, "claim": claim.statement, "verdict": outcome[0], "evidence": outcome[1]}
            )
    if not rows:
        return None
    table = Table(  # the verdict first: on a narrow screen it is what must be seen
        ["verdict", "claim", "source", "evidence"],
        [[r["verdict"], r["claim"], r["source"], r["evidence"]] for r in rows],
        "Verdicts from the paired (seed, image) differences: agree / disagree when the bootstrap 95% CI excludes 0 on "
        "the claimed / the other side, not resolved when it spans 0 (robustness: the sign on every seed).",
    )
    return table, rows
