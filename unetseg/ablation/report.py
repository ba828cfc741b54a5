"""The ablation report, built from the stored results alone: the verdict for the dataset
(:mod:`unetseg.ablation.verdict`), the variant table (mean and 95% CI), paired tests against
the reference, what the numbers say about published claims, and the
figures (:mod:`unetseg.ablation.figures`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from unetseg.ablation import figures
from unetseg.ablation.claims import claims_table, compare, score_grid
from unetseg.ablation.depth import degradation
from unetseg.ablation.spec import AblationSpec, fold_ids, shown, variant_config
from unetseg.ablation.verdict import SMOKE_TEST, dataset_verdict
from unetseg.metrics.boundary import THIN_RECALL
from unetseg.metrics.region import mean_metrics
from unetseg.metrics.stats import bootstrap_ci
from unetseg.models import build_model
from unetseg.models.info import count_flops
from unetseg.report.document import FigureBlock, Report, Table, write_report

METRICS = [
    ("dice", "Dice"),
    ("bf1_1px", "BF1 1px"),
    ("bf1_2px", "BF1 2px"),
    ("cldice", "clDice"),
    ("thin_recall", "thin recall"),
    ("hd95", "HD95 px"),
    ("rand_error", "Rand err"),
    ("vi", "VI"),
    ("pixel_error", "pixel err"),
    ("error_near_boundary", "err ≤2px"),
    ("object_f1", "object F1"),
    ("merges", "merges"),
    ("splits", "splits"),
]


def _by_variant(spec: AblationSpec, results: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Finished runs per variant, in the spec's order; variants with none are left out."""
    grouped: dict[str, list[dict[str, Any]]] = {v.name: [] for v in spec.expand()}
    for result in results:
        grouped[result["variant"]].append(result)
    return {name: runs for name, runs in grouped.items() if runs}


SKIP_LETTERS = {"concat": "c", "add": "a", "none": "n", "gated": "g", "attention": "t"}


def variant_flops(spec: AblationSpec) -> dict[str, int]:
    """FLOPs of one forward pass at the training crop size, per variant (on the meta device)."""
    flops = {}
    for variant in spec.expand():
        cfg = variant_config(spec, variant, spec.seeds[0], fold_ids(spec)[0])
        size = cfg.augment.crop_size or 256
        model = build_model(cfg.model, cfg.data.channels, cfg.data.out_channels)
        flops[variant.name] = count_flops(model, cfg.data.channels, (size, size))
    return flops


def summarise(spec: AblationSpec, results: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per variant: mean, std over seeds and bootstrap 95% CI (seeds, then images) of every
    metric; each seed's value is its mean over the images measured."""
    summary = {}
    flops = variant_flops(spec)
    for name, runs in _by_variant(spec, results).items():
        keys = list(runs[0]["mean"])
        values = {
            k: np.array([r["mean"][k] if r["mean"][k] is not None else np.nan for r in runs], float) for k in keys
        }
        summary[name] = {
            "seeds": [r["seed"] for r in runs],
            "distance": pooled_distance([r["distance"] for r in runs if r.get("distance")]),
            "parameters": runs[0]["parameters"],
            "flops": flops[name],
            "skips": runs[0]["skips"],
            "encoder": runs[0]["encoder"],
            "mean": {k: float(np.nanmean(v)) if np.isfinite(v).any() else float("nan") for k, v in values.items()},
            "std": {k: float(np.nanstd(v)) if np.isfinite(v).any() else float("nan") for k, v in values.items()},
            "ci": {
                k: list(bootstrap_ci(score_grid(runs, k))) if np.isfinite(v).any() else [float("nan")] * 2
                for k, v in values.items()
            },
        }
    return summary


def _with_ci(mean: float, ci: list[float]) -> str:
    if not np.isfinite(mean):
        return "–"
    digits = 2 if abs(mean) >= 10 else 3
    return f"{mean:.{digits}f} [{ci[0]:.{digits}f}, {ci[1]:.{digits}f}]"


def _tables(summary: dict[str, dict[str, Any]], scored_on: str) -> list[Table]:
    """The variant table in two, each narrow enough for a laptop's screen."""
    present = [(k, label) for k, label in METRICS if k in next(iter(summary.values()))["mean"]]
    first, second = present[:5], present[5:]
    rows = [
        [
            name,
            "/".join(SKIP_LETTERS.get(m, m) for m in s["skips"]) or "-",
            s["encoder"],
            f"{s['parameters'] / 1e6:.2f} M",
            f"{s['flops'] / 1e9:.2f}",
            len(s["seeds"]),
        ]
        + [_with_ci(s["mean"][k], s["ci"][k]) for k, _ in first]
        for name, s in summary.items()
    ]
    tables = [
        Table(
            ["variant", "skips (level 0 first)", "encoder", "params", "GFLOPs", "seeds"]
            + [label for _, label in first],
            rows,
            f"Mean over seeds of the per-image means on {scored_on} [bootstrap 95% CI, resampling seeds and then "
            "images]. Skips: c = concat, a = add, n = none, g = gated, t = attention. GFLOPs: one forward pass at the "
            "training crop size."
            + (" Lower is better for HD95." if "hd95" in dict(first) else "")
            + (f" Thin recall: {THIN_RECALL}." if "thin_recall" in dict(first) else ""),
        )
    ]
    if second:
        hd95, lead = ("HD95, ", "HD95, region") if "hd95" in dict(second) else ("", "Region")
        tables.append(
            Table(
                ["variant"] + [label for _, label in second],
                [[name] + [_with_ci(s["mean"][k], s["ci"][k]) for k, _ in second] for name, s in summary.items()],
                f"{lead} and error measures of the same runs, as above. Lower is better for {hd95}Rand error, "
                "VI, pixel error, merges and splits (counts per image).",
            )
        )
    return tables


COMPARED = ["dice", "bf1_1px", "bf1_2px", "cldice", "thin_recall", "rand_error", "vi"]


def paired_comparison(spec: AblationSpec, grouped: dict[str, list[dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    """Per variant and metric: the paired difference to the reference (claims.compare), if any pair."""
    reference = grouped.get(spec.reference_name)
    out: dict[str, dict[str, Any]] = {}
    for name, runs in grouped.items():
        if name == spec.reference_name or reference is None:
            continue
        diffs = {metric: compare(runs, reference, metric) for metric in COMPARED}
        out[name] = {metric: d for metric, d in diffs.items() if d is not None and d["pairs"]}
    return {name: d for name, d in out.items() if d}


def _comparison_table(spec: AblationSpec, comparison: dict[str, dict[str, Any]]) -> Table:
    metrics = [m for m in COMPARED if any(m in c for c in comparison.values())]
    rows = []
    for name, per_metric in comparison.items():
        row: list[Any] = [name]
        for m in metrics:
            c = per_metric.get(m)
            row.append(
                "–"
                if c is None or not np.isfinite(c["diff"])
                else f"{c['diff']:+.3f} [{c['ci'][0]:+.3f}, {c['ci'][1]:+.3f}] p={c['p']:.2g}"
            )
        rows.append(row)
    pairs = next((c["pairs"] for pm in comparison.values() for c in pm.values()), 0)
    return Table(
        ["variant"] + metrics,
        rows,
        f"Difference to the reference {spec.reference_name!r}: mean of the paired (seed, image) differences "
        f"[bootstrap 95% CI over seeds and images] and the two-sided Wilcoxon signed-rank p-value over the {pairs} pairs.",
    )


def _gate_table(grouped: dict[str, list[dict[str, Any]]]) -> tuple[Table, list[str]] | None:
    """Gate per level after the last epoch (channel mean, and the smallest channel), for
    variants with gated skips, and a sentence per variant on where gates closed."""
    rows, notes = [], []
    for name, runs in grouped.items():
        traces = figures.gate_traces(runs)
        if not traces:
            continue
        final = {level: (mean[-1], low[-1]) for level, (_, mean, low) in traces.items()}
        rows.append([name] + [f"{m:.3f} (min {lo:.3f})" for m, lo in final.values()])
        closed = [level for level, (m, _) in final.items() if m < 0.5]
        half = [level for level, (_, lo) in final.items() if lo < 0.5]
        notes.append(
            f"{name}: "
            + (
                f"the gates closed (mean below 0.5) at level(s) {closed}."
                if closed
                else "no level's gates closed (every level's mean stays above 0.5)"
            )
            + (
                ""
                if closed
                else (f"; some channels fell below 0.5 at level(s) {half}." if half else "; no channel fell below 0.5.")
            )
        )
    if not rows:
        return None
    width = max(len(r) for r in rows) - 1
    table = Table(
        ["variant"] + [f"level {lv}" for lv in range(width)],
        [r + ["–"] * (width + 1 - len(r)) for r in rows],
        "Gate value of each gated skip after training, mean over seeds: channel mean (and smallest channel). "
        "Gates start at 1 (plain concat) and range from 0 (closed) to 2.",
    )
    return table, notes


def hardware(results: list[dict[str, Any]]) -> str:
    """Where the runs were measured, as each result recorded it."""
    return "; ".join(sorted({r.get("hardware", "not recorded") for r in results}))


def pooled_distance(curves: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Error-by-distance curves of several runs as one, each bin weighted by its pixel count
    (so a seed or fold with more boundary pixels counts for more); None without curves."""
    if not curves:
        return None
    counts = np.array([c["counts"] for c in curves], dtype=float)
    errors = np.nan_to_num(np.array([c["error"] for c in curves], dtype=float)) * counts
    total = counts.sum(0)
    return {
        **curves[0],
        "counts": total.tolist(),
        "error": np.where(total > 0, errors.sum(0) / np.maximum(total, 1), np.nan).tolist(),
    }


def pool_folds(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One result per (variant, seed) from its cross-validation folds: the folds' validation
    images together (every labelled image once), distance curves weighted by pixel counts."""
    pooled: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for r in results:
        pooled.setdefault((r["variant"], r["seed"]), []).append(r)
    out = []
    for runs in pooled.values():
        images = [row for r in runs for row in r["images"]]
        merged = {
            **runs[0],
            "fold": None,
            "images": images,
            "mean": mean_metrics([{k: v for k, v in row.items() if k != "name"} for row in images]),
            "distance": pooled_distance([r["distance"] for r in runs]),
            "per_fold": {r["fold"]: r["mean"] for r in runs},
        }
        if runs[0].get("corruption"):
            merged["corruption"] = {
                kind: {
                    key: (
                        curve if key == "strength" else np.mean([r["corruption"][kind][key] for r in runs], 0).tolist()
                    )
                    for key, curve in runs[0]["corruption"][kind].items()
                }
                for kind in runs[0]["corruption"]
            }
        out.append(merged)
    return out


def _fold_table(spec: AblationSpec, grouped: dict[str, list[dict[str, Any]]]) -> Table:
    folds = fold_ids(spec)
    rows = []
    for name, runs in grouped.items():
        for metric in ("dice", "bf1_2px"):
            rows.append([name, metric] + [float(np.mean([r["per_fold"][f][metric] for r in runs])) for f in folds])
    return Table(
        ["variant", "metric"] + [f"fold {f}" for f in folds],
        rows,
        f"Per contiguous-block fold (mean over seeds); the tables above pool the {len(folds)} folds' validation images.",
    )


def build_report(
    spec: AblationSpec, results: list[dict[str, Any]], out_dir: Path, missing: list[str] | None = None
) -> dict[str, Path]:
    """The report from the finished runs alone; ``missing`` lists runs the grid still lacks
    (the report then says it is partial and which runs it lacks)."""
    if spec.folds:
        results = pool_folds(results)
    grouped = _by_variant(spec, results)
    summary = summarise(spec, results)
    report = Report(f"Skip ablation: {spec.name}", intro=_intro(spec, len(grouped), hardware(results), missing))
    comparison = paired_comparison(spec, grouped)
    conclusion = dataset_verdict(spec.reference_name, comparison, summary)
    opening = report.section("Verdict for this dataset")
    opening.blocks += (
        ([SMOKE_TEST] if spec.smoke_test else [])
        + conclusion["sentences"]
        + ([_comparison_table(spec, comparison)] if comparison else [])
    )
    report.section("Results").blocks += _tables(summary, spec.scored_on)
    if spec.folds:
        report.section("Cross-validation folds").blocks.append(_fold_table(spec, grouped))
    claims = claims_table(grouped, spec.reference_name)
    if claims is not None:
        report.section("What this says about published claims").blocks.append(claims[0])
    _detail_sections(report, spec, grouped)
    gates = _training_sections(report, grouped)
    data = {
        "name": spec.name,
        "seeds": spec.seeds,
        "budget": spec.budget.model_dump(),
        "hardware": hardware(results),
        "missing": missing or [],
        "reference": spec.reference_name,
        "summary": summary,
        "comparison": comparison,
        "verdict": conclusion,
        "claims": claims[1] if claims is not None else [],
        "gates": gates[1] if gates is not None else [],
        "runs": [{k: v for k, v in r.items() if k != "config"} for r in results],
    }
    return write_report(report, out_dir, data)


def _intro(spec: AblationSpec, variants: int, machine: str, missing: list[str] | None) -> str:
    crops = spec.budget.epochs * spec.budget.samples_per_epoch
    return (
        f"{variants} variants x {len(spec.seeds)} seeds, each trained for {spec.budget.epochs} epochs of "
        f"{spec.budget.samples_per_epoch} random crops ({crops:,} crops; identical budget, split, seeds and data "
        f"order; the learning-rate schedule laid out over those steps), measured with its final weights on "
        f"{spec.scored_on}. Base config: {shown(spec.base)}. Hardware: {machine}."
        + (
            f" PARTIAL: {len(missing)} of the grid's runs are not finished yet ({'; '.join(missing)})."
            if missing
            else ""
        )
    )


def _detail_sections(report: Report, spec: AblationSpec, grouped: dict[str, list[dict[str, Any]]]) -> None:
    """Where the variants differ in fine detail: crops side by side, error by distance to the
    boundary, and robustness to test-time corruption."""
    crops = figures.crops_figures(spec, grouped) if spec.report.images else []
    report.section("Fine detail, side by side").blocks += [FigureBlock(*crop) for crop in crops] or [
        "Left out: the data's licence does not allow showing its images (report.images: false)."
    ]
    report.section("Error by distance to the true boundary").blocks += [
        f"Pixel error rate as a function of the distance to the nearest true boundary, pooled over {spec.scored_on}; "
        "line = mean over seeds, band = min to max. Skips that carry fine detail lower the left end.",
        FigureBlock(
            "distance_curves", figures.distance_figure(spec, grouped), "Error rate by distance bin (log scale)."
        ),
    ]
    robustness = figures.corruption_figure(grouped)
    if robustness is not None:
        report.section("Robustness to test-time corruption").blocks += [
            "Contrast: blend towards the image mean by the given fraction; noise: additive Gaussian noise of the given "
            "standard deviation (intensities in [0, 1]); blur: Gaussian blur of the given sigma in pixels. Mean over "
            "seeds and validation images.",
            FigureBlock("corruption", robustness, "Dice and boundary F1 (2 px) against corruption strength."),
        ]


def _training_sections(report: Report, grouped: dict[str, list[dict[str, Any]]]) -> tuple[Table, list[str]] | None:
    """How the variants trained: gradients and gates, depth, loss and validation curves;
    returns the gate table (and its rows) where there are gates."""
    gradients, gates, gate_fig = figures.gradient_figure(grouped), _gate_table(grouped), figures.gate_figure(grouped)
    if gradients is not None or gates is not None:
        section = report.section("Gradients and gates during training")
        if gradients is not None:
            section.blocks.append(
                FigureBlock(
                    "gradients",
                    gradients,
                    "Gradient norm reaching each encoder stage early in "
                    "training (vanishing gradients show as a fall towards level 0).",
                )
            )
        if gates is not None:
            section.blocks += [gates[0], " ".join(gates[1])]
        if gate_fig is not None:
            section.blocks.append(
                FigureBlock(
                    "gates",
                    gate_fig,
                    "Gate per level over training, mean over seeds (solid: "
                    "channel mean; dashed: the smallest channel).",
                )
            )
    depth = degradation(grouped)
    if depth is not None:
        table, final_fig, curves_fig = depth
        report.section("Depth: training loss under the same budget").blocks += [
            table,
            FigureBlock("degradation", final_fig, "Final training loss against blocks per level, mean over seeds."),
            FigureBlock(
                "degradation_curves", curves_fig, "Training loss per epoch for each depth, one panel per encoder."
            ),
        ]
    curves = report.section("Training curves")
    curves.blocks.append(
        FigureBlock("training_curves", figures.training_figure(grouped), "Training loss per epoch, mean over seeds.")
    )
    validation = figures.validation_figure(grouped)
    if validation is not None:
        curves.blocks.append(
            FigureBlock("validation_curves", validation, "Validation Dice at each validation epoch, mean over seeds.")
        )
    return gates
