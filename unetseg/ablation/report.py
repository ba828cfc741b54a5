"""The ablation report: a table over variants (mean ± std over seeds), error by distance to
the true boundary, training curves and the same zoomed crop predicted by every variant."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from skimage.morphology import skeletonize

from unetseg.ablation.analysis import validation_set
from unetseg.ablation.depth import degradation, pm
from unetseg.ablation.spec import AblationSpec, fold_ids, result_dir, variant_config
from unetseg.metrics import mean_metrics
from unetseg.model_info import count_flops
from unetseg.models import build_model
from unetseg.data import read_mask
from unetseg.report import FigureBlock, Report, Table, write_report
from unetseg.stats import bootstrap_ci, paired_test

METRICS = [
    ("dice", "Dice"),
    ("bf1_1px", "BF1 1px"),
    ("bf1_2px", "BF1 2px"),
    ("cldice", "clDice"),
    ("hd95", "HD95 px"),
    ("rand_error", "Rand err"),
    ("vi", "VI"),
    ("pixel_error", "pixel err"),
    ("error_near_boundary", "err ≤2px"),
]


def _by_variant(spec: AblationSpec, results: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Finished runs per variant, in the spec's order; variants with none are left out."""
    grouped: dict[str, list[dict[str, Any]]] = {v.name: [] for v in spec.expand()}
    for result in results:
        grouped[result["variant"]].append(result)
    return {name: runs for name, runs in grouped.items() if runs}


SKIP_LETTERS = {"concat": "c", "add": "a", "none": "n", "gated": "g", "attention": "t"}


def variant_flops(spec: AblationSpec) -> dict[str, int]:
    """FLOPs of one forward pass at the training crop size, per variant (counted on the meta
    device, so no weights are allocated)."""
    flops = {}
    for variant in spec.expand():
        cfg = variant_config(spec, variant, spec.seeds[0], fold_ids(spec)[0])
        size = cfg.augment.crop_size or 256
        model = build_model(cfg.model, cfg.data.channels, cfg.data.out_channels)
        flops[variant.name] = count_flops(model, cfg.data.channels, (size, size))
    return flops


def summarise(spec: AblationSpec, results: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per variant: mean and std over seeds of every metric (each seed is a mean over images)."""
    summary = {}
    flops = variant_flops(spec)
    for name, runs in _by_variant(spec, results).items():
        keys = [k for k in runs[0]["mean"]]
        values = {k: np.array([r["mean"][k] if r["mean"][k] is not None else np.nan for r in runs], float) for k in keys}
        summary[name] = {
            "seeds": [r["seed"] for r in runs],
            "parameters": runs[0]["parameters"],
            "flops": flops[name],
            "skips": runs[0]["skips"],
            "encoder": runs[0]["encoder"],
            "mean": {k: float(np.nanmean(v)) if np.isfinite(v).any() else float("nan") for k, v in values.items()},
            "std": {k: float(np.nanstd(v)) if np.isfinite(v).any() else float("nan") for k, v in values.items()},
        }
    return summary


def _table(spec: AblationSpec, summary: dict[str, dict[str, Any]]) -> Table:
    present = [(k, label) for k, label in METRICS if k in next(iter(summary.values()))["mean"]]
    rows = []
    for name, s in summary.items():
        row: list[Any] = [name, "/".join(SKIP_LETTERS.get(m, m) for m in s["skips"]) or "-", s["encoder"], f"{s['parameters'] / 1e6:.2f} M",
                          f"{s['flops'] / 1e9:.2f}"]
        row += [pm(s["mean"][k], s["std"][k]) for k, _ in present]
        rows.append(row)
    return Table(
        ["variant", "skips (level 0 first)", "encoder", "params", "GFLOPs"] + [label for _, label in present],
        rows,
        f"Mean ± std over seeds {spec.seeds} of the per-image means on the validation images. "
        "Skips: c = concat, a = add, n = none, g = gated, t = attention. GFLOPs: one forward pass at the training crop "
        "size. Lower is better for HD95, Rand error, VI and pixel error.",
    )


COMPARED = ["dice", "bf1_1px", "bf1_2px", "cldice", "rand_error", "vi"]


def score_grid(runs: list[dict[str, Any]], metric: str) -> np.ndarray:
    """(seeds x images) per-image scores of one variant, seeds and images in a fixed order."""
    ordered = sorted(runs, key=lambda r: r["seed"])
    names = sorted(row["name"] for row in ordered[0]["images"])
    by_name = [{row["name"]: row.get(metric) for row in r["images"]} for r in ordered]
    return np.array([[np.nan if m.get(n) is None else m[n] for n in names] for m in by_name], dtype=float)


def paired_comparison(spec: AblationSpec, grouped: dict[str, list[dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    """Per variant and metric: mean paired difference to the reference, its bootstrap 95% CI,
    and the Wilcoxon signed-rank p-value over (seed, image) pairs."""
    ref_runs = grouped.get(spec.reference_name, [])
    out: dict[str, dict[str, Any]] = {}
    for name, all_runs in grouped.items():
        if name == spec.reference_name or not ref_runs:
            continue
        seeds = {r["seed"] for r in all_runs} & {r["seed"] for r in ref_runs}  # pairs need both sides
        runs = [r for r in all_runs if r["seed"] in seeds]
        ref = [r for r in ref_runs if r["seed"] in seeds]
        if not runs:
            continue
        out[name] = {}
        for metric in COMPARED:
            if metric not in runs[0]["mean"]:
                continue
            mine, theirs = score_grid(runs, metric), score_grid(ref, metric)
            diff, p, n = paired_test(mine, theirs)
            lo, hi = bootstrap_ci(mine - theirs) if n else (float("nan"), float("nan"))
            out[name][metric] = {"diff": diff, "ci": [lo, hi], "p": p, "pairs": n}
    return out


def _comparison_table(spec: AblationSpec, comparison: dict[str, dict[str, Any]]) -> Table:
    metrics = [m for m in COMPARED if any(m in c for c in comparison.values())]
    rows = []
    for name, per_metric in comparison.items():
        row: list[Any] = [name]
        for m in metrics:
            c = per_metric.get(m)
            row.append("–" if c is None or not np.isfinite(c["diff"]) else
                       f"{c['diff']:+.3f} [{c['ci'][0]:+.3f}, {c['ci'][1]:+.3f}] p={c['p']:.2g}")
        rows.append(row)
    pairs = next((c["pairs"] for pm in comparison.values() for c in pm.values()), 0)
    return Table(
        ["variant"] + metrics, rows,
        f"Difference to the reference {spec.reference_name!r}: mean of the paired (seed, image) differences "
        f"[bootstrap 95% CI over seeds and images] and the two-sided Wilcoxon signed-rank p-value over the {pairs} pairs.",
    )


def _distance_figure(spec: AblationSpec, grouped: dict[str, list[dict[str, Any]]]) -> Figure:
    fig = Figure(figsize=(7.5, 4.2))
    ax = fig.add_subplot()
    bins = spec.report.distance_bins
    labels = [f"{lo:g}–{hi:g}" if np.isfinite(hi) else f"≥{lo:g}" for lo, hi in zip(bins[:-1], bins[1:])]
    x = np.arange(len(labels))
    for name, runs in grouped.items():
        curves = np.array([r["distance"]["error"] for r in runs], dtype=float)
        mean = np.nanmean(curves, axis=0)
        ax.plot(x, mean, marker="o", ms=3, label=name)
        if len(runs) > 1:
            ax.fill_between(x, np.nanmin(curves, axis=0), np.nanmax(curves, axis=0), alpha=0.15)
    ax.set_xticks(x, labels, rotation=45)
    ax.set_yscale("log")
    ax.set_xlabel("distance to the nearest true boundary (px)")
    ax.set_ylabel("pixel error rate")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return fig


def _corruption_figure(grouped: dict[str, list[dict[str, Any]]]) -> Figure | None:
    first = next(iter(grouped.values()))[0].get("corruption") or {}
    if not first:
        return None
    kinds = list(first)
    metrics = [k for k in first[kinds[0]] if k != "strength"]
    fig = Figure(figsize=(3.6 * len(kinds), 2.9 * len(metrics)))
    for row, metric in enumerate(metrics):
        for col, kind in enumerate(kinds):
            ax = fig.add_subplot(len(metrics), len(kinds), row * len(kinds) + col + 1)
            for name, runs in grouped.items():
                curves = np.array([r["corruption"][kind][metric] for r in runs], dtype=float)
                ax.plot(first[kind]["strength"], curves.mean(0), marker="o", ms=3, label=name)
            ax.set_title(f"{kind}", fontsize=9)
            ax.set_xlabel("strength", fontsize=8)
            ax.set_ylabel(metric, fontsize=8)
            ax.grid(alpha=0.3)
    fig.axes[0].legend(fontsize=6)
    fig.tight_layout()
    return fig


def _training_figure(grouped: dict[str, list[dict[str, Any]]]) -> Figure:
    fig = Figure(figsize=(7.5, 3.8))
    ax = fig.add_subplot()
    for name, runs in grouped.items():
        losses = np.array([[row["train_loss"] for row in r["history"]] for r in runs], dtype=float)
        epochs = np.arange(1, losses.shape[1] + 1)
        ax.plot(epochs, losses.mean(0), label=name)
    ax.set_xlabel("epoch")
    ax.set_ylabel("training loss (mean over seeds)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return fig


EARLY_EPOCHS = 3


def _level_mean(runs: list[dict[str, Any]], prefix: str, epochs: slice) -> dict[int, float]:
    """Per level: the ``<prefix><level>`` column averaged over the given epochs and the seeds."""
    keys = {k for r in runs for row in r["history"] for k in row if k.startswith(prefix) and k[len(prefix):].isdigit()}
    return {
        int(k[len(prefix):]): float(np.nanmean([row.get(k, np.nan) for r in runs for row in r["history"][epochs]]))
        for k in keys
    }


def _gradient_figure(grouped: dict[str, list[dict[str, Any]]]) -> Figure | None:
    """Encoder gradient norm per level in the first epochs (logged with train.level_stats)."""
    curves = {name: _level_mean(runs, "grad_enc", slice(0, EARLY_EPOCHS)) for name, runs in grouped.items()}
    curves = {name: c for name, c in curves.items() if c}
    if not curves:
        return None
    fig = Figure(figsize=(6.5, 3.6))
    ax = fig.add_subplot()
    for name, by_level in curves.items():
        levels = sorted(by_level)
        ax.plot(levels, [by_level[lv] for lv in levels], marker="o", ms=3, label=name)
    ax.set_xlabel("encoder level (0 = full resolution, first stage)")
    ax.set_ylabel(f"gradient norm, epochs 1-{EARLY_EPOCHS}")
    ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return fig


def _gate_table(grouped: dict[str, list[dict[str, Any]]]) -> Table | None:
    """Mean gate per level after the last epoch, for variants with gated skips."""
    rows = []
    for name, runs in grouped.items():
        gates = _level_mean(runs, "gate", slice(-1, None))
        if gates:
            depth = max(gates) + 1
            rows.append([name] + [gates.get(lv, float("nan")) for lv in range(depth)])
    if not rows:
        return None
    width = max(len(r) for r in rows) - 1
    return Table(["variant"] + [f"level {lv}" for lv in range(width)], [r + [float("nan")] * (width + 1 - len(r)) for r in rows],
                 "Mean gate value of each gated skip after training (mean over seeds); gates start at 1 (range 0 to 2).")


def thin_structure_window(target: np.ndarray, size: int) -> tuple[int, int]:
    """Top-left corner of the ``size`` window holding the most foreground skeleton (the longest
    run of thin structure), found with an integral image."""
    skeleton = skeletonize(target > 0).astype(np.int64)
    h, w = skeleton.shape
    size = min(size, h, w)
    integral = np.pad(skeleton.cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    sums = integral[size:, size:] - integral[:-size, size:] - integral[size:, :-size] + integral[:-size, :-size]
    y, x = np.unravel_index(np.argmax(sums), sums.shape)
    return int(y), int(x)


def _crops_figure(spec: AblationSpec, grouped: dict[str, list[dict[str, Any]]]) -> tuple[Figure, str, tuple[int, int]]:
    first = spec.expand()[0]
    fold = fold_ids(spec)[0]
    cfg = variant_config(spec, first, spec.seeds[0], fold)
    dataset = validation_set(cfg)
    names = [s.name for s in dataset.samples]
    index = names.index(spec.report.crop_image) if spec.report.crop_image in names else 0
    image, target = dataset.load(index)
    assert target is not None
    size = min(spec.report.crop_size, *target.shape)
    y, x = thin_structure_window(target, size)
    window = (slice(y, y + size), slice(x, x + size))
    panels = [("image", image[..., 0][window], "gray"), ("truth", target[window], "gray_r")]
    for name in grouped:
        seed = min(r["seed"] for r in grouped[name])
        pred_path = result_dir(spec, name, seed, fold) / "pred" / f"{names[index]}.png"
        pred = read_mask(pred_path, {v: v for v in range(256)})[window]
        truth = target[window]
        error = np.zeros(pred.shape + (3,))
        error[(pred > 0) & (truth > 0)] = (0.15, 0.15, 0.15)  # true positive: dark
        error[(pred == 0) & (truth == 0)] = (1.0, 1.0, 1.0)
        error[(pred > 0) & (truth == 0)] = (0.85, 0.1, 0.1)  # false positive: red
        error[(pred == 0) & (truth > 0)] = (0.1, 0.35, 0.9)  # false negative: blue
        panels.append((name, error, None))
    cols = min(4, len(panels))
    rows = int(np.ceil(len(panels) / cols))
    fig = Figure(figsize=(3.0 * cols, 3.1 * rows))
    for i, (title, data, cmap) in enumerate(panels):
        ax = fig.add_subplot(rows, cols, i + 1)
        ax.imshow(data, cmap=cmap, interpolation="nearest")
        ax.set_title(title, fontsize=9)
        ax.axis("off")
    return fig, names[index], (y, x)


def hardware(results: list[dict[str, Any]]) -> str:
    """Where the runs were measured, as each result recorded it."""
    return "; ".join(sorted({r.get("hardware", "not recorded") for r in results}))


def pool_folds(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One result per (variant, seed) from its cross-validation folds: the folds' validation
    images together (every labelled image once), distance curves weighted by pixel counts."""
    pooled: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for r in results:
        pooled.setdefault((r["variant"], r["seed"]), []).append(r)
    out = []
    for (variant, seed), runs in pooled.items():
        images = [row for r in runs for row in r["images"]]
        counts = np.array([r["distance"]["counts"] for r in runs], dtype=float)
        errors = np.nan_to_num(np.array([r["distance"]["error"] for r in runs], dtype=float)) * counts
        total = counts.sum(0)
        merged = {**runs[0], "fold": None, "images": images,
                  "mean": mean_metrics([{k: v for k, v in row.items() if k != "name"} for row in images]),
                  "distance": {**runs[0]["distance"], "counts": total.tolist(),
                               "error": np.where(total > 0, errors.sum(0) / np.maximum(total, 1), np.nan).tolist()},
                  "per_fold": {r["fold"]: r["mean"] for r in runs}}
        if runs[0].get("corruption"):
            merged["corruption"] = {
                kind: {key: (curve if key == "strength" else np.mean([r["corruption"][kind][key] for r in runs], 0).tolist())
                       for key, curve in runs[0]["corruption"][kind].items()}
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
    return Table(["variant", "metric"] + [f"fold {f}" for f in folds], rows,
                 f"Per contiguous-block fold (mean over seeds); the tables above pool the {len(folds)} folds' validation images.")


def build_report(spec: AblationSpec, results: list[dict[str, Any]], out_dir: Path, missing: list[str] | None = None) -> dict[str, Path]:
    """The report from the finished runs alone; ``missing`` lists runs the grid still lacks
    (the report then says it is partial and which runs it lacks)."""
    if spec.folds:
        results = pool_folds(results)
    grouped = _by_variant(spec, results)
    summary = summarise(spec, results)
    report = Report(
        f"Skip ablation: {spec.name}",
        intro=(
            f"{len(grouped)} variants x {len(spec.seeds)} seeds, each trained for {spec.budget.epochs} epochs of "
            f"{spec.budget.samples_per_epoch} random crops (identical budget, split, seeds and data order), "
            f"measured with its final weights on the validation images. Base config: {spec.base}. "
            f"Hardware: {hardware(results)}."
            + (f" PARTIAL: {len(missing)} of the grid's runs are not finished yet ({'; '.join(missing)})." if missing else "")
        ),
    )
    comparison = paired_comparison(spec, grouped)
    report.section("Results").blocks += [_table(spec, summary)]
    if spec.folds:
        report.section("Cross-validation folds").blocks.append(_fold_table(spec, grouped))
    if comparison:
        report.section("Paired comparison with the reference").blocks.append(_comparison_table(spec, comparison))
    crops, crop_name, corner = _crops_figure(spec, grouped)
    report.section("Fine detail, side by side").blocks += [
        FigureBlock(
            "crops", crops,
            f"Validation image {crop_name}, {spec.report.crop_size} px window at (y, x) = {corner} with the most thin "
            f"structure; seed {spec.seeds[0]}. Prediction errors: red = false positive, blue = false negative, dark = "
            "correct foreground.",
        )
    ]
    report.section("Error by distance to the true boundary").blocks += [
        "Pixel error rate as a function of the distance to the nearest true boundary, pooled over the validation "
        "images; line = mean over seeds, band = min to max. Skips that carry fine detail lower the left end.",
        FigureBlock("distance_curves", _distance_figure(spec, grouped), "Error rate by distance bin (log scale)."),
    ]
    robustness = _corruption_figure(grouped)
    if robustness is not None:
        report.section("Robustness to test-time corruption").blocks += [
            "Contrast: blend towards the image mean by the given fraction; noise: additive Gaussian noise of the given "
            "standard deviation (intensities in [0, 1]); blur: Gaussian blur of the given sigma in pixels. Mean over "
            "seeds and validation images.",
            FigureBlock("corruption", robustness, "Dice and boundary F1 (2 px) against corruption strength."),
        ]
    gradients, gates = _gradient_figure(grouped), _gate_table(grouped)
    if gradients is not None or gates is not None:
        section = report.section("Gradients and gates during training")
        if gradients is not None:
            section.blocks.append(FigureBlock("gradients", gradients, "Gradient norm reaching each encoder stage early in "
                                              "training (vanishing gradients show as a fall towards level 0)."))
        if gates is not None:
            section.blocks.append(gates)
    depth = degradation(grouped)
    if depth is not None:
        table, final_fig, curves_fig = depth
        report.section("Depth: training loss under the same budget").blocks += [
            table,
            FigureBlock("degradation", final_fig, "Final training loss against blocks per level, mean over seeds."),
            FigureBlock("degradation_curves", curves_fig, "Training loss per epoch for each depth, one panel per encoder."),
        ]
    report.section("Training curves").blocks.append(
        FigureBlock("training_curves", _training_figure(grouped), "Training loss per epoch, mean over seeds.")
    )
    data = {"name": spec.name, "seeds": spec.seeds, "budget": spec.budget.model_dump(), "hardware": hardware(results),
            "missing": missing or [],
            "reference": spec.reference_name, "summary": summary, "comparison": comparison,
            "runs": [{k: v for k, v in r.items() if k != "config"} for r in results]}
    return write_report(report, out_dir, data)
