"""The ablation report's figures, each drawn from the stored results alone (no checkpoints):
error by distance to the boundary, robustness, training and validation curves, gradients and
gate traces per level, and side-by-side crops of the predictions of the images measured
(validation or held-out)."""

from __future__ import annotations

from typing import Any

import numpy as np
from matplotlib.figure import Figure
from skimage.morphology import skeletonize

from unetseg.ablation.measure import scored_set
from unetseg.ablation.spec import AblationSpec, fold_ids, result_dir, variant_config
from unetseg.data import read_mask
from unetseg.data.dataset import SegmentationDataset
from unetseg.data.roi import RegionOfInterest
from unetseg.report.plots import epoch_panel, finish_row

Grouped = dict[str, list[dict[str, Any]]]


def distance_figure(spec: AblationSpec, grouped: Grouped) -> Figure:
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


def corruption_figure(grouped: Grouped) -> Figure | None:
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


def training_figure(grouped: Grouped) -> Figure:
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


def level_mean(runs: list[dict[str, Any]], prefix: str, epochs: slice) -> dict[int, float]:
    """Per level: the ``<prefix><level>`` column averaged over the given epochs and the seeds."""
    keys = {k for r in runs for row in r["history"] for k in row if k.startswith(prefix) and k[len(prefix) :].isdigit()}
    return {
        int(k[len(prefix) :]): float(np.nanmean([row.get(k, np.nan) for r in runs for row in r["history"][epochs]]))
        for k in keys
    }


def gradient_figure(grouped: Grouped) -> Figure | None:
    """Encoder gradient norm per level in the first epochs (logged with train.level_stats)."""
    curves = {name: level_mean(runs, "grad_enc", slice(0, EARLY_EPOCHS)) for name, runs in grouped.items()}
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


def validation_figure(grouped: Grouped, metric: str = "val_dice") -> Figure | None:
    """The validation score at each validation epoch, mean over seeds (EMA weights where the
    recipe keeps an average): where each variant's learning flattens out."""
    fig = Figure(figsize=(7.5, 3.8))
    ax = fig.add_subplot()
    drawn = False
    for name, runs in grouped.items():
        rows = [[(row["epoch"], row[metric]) for row in r["history"] if row.get(metric) is not None] for r in runs]
        if not rows or not rows[0]:
            continue
        epochs = [e for e, _ in rows[0]]
        values = np.array([[v for _, v in r] for r in rows if len(r) == len(epochs)], dtype=float)
        ax.plot(epochs, values.mean(0), marker="o", ms=2, label=name)
        drawn = True
    if not drawn:
        return None
    ax.set_xlabel("epoch")
    ax.set_ylabel(metric.removeprefix("val_").replace("_", " ") + " on the validation images")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return fig


def gate_traces(runs: list[dict[str, Any]]) -> dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Per gated level: (epochs, mean gate, smallest channel gate) over training, mean over seeds."""
    traces = {}
    for level in sorted(level_mean(runs, "gate", slice(None))):
        rows = [[row for row in r["history"] if f"gate{level}" in row] for r in runs]
        n = min(len(r) for r in rows)
        epochs = np.array([row["epoch"] for row in rows[0][:n]])
        mean = np.mean([[row[f"gate{level}"] for row in r[:n]] for r in rows], axis=0)
        low = np.mean([[row.get(f"gate_min{level}", np.nan) for row in r[:n]] for r in rows], axis=0)
        traces[level] = (epochs, mean, low)
    return traces


def gate_figure(grouped: Grouped) -> Figure | None:
    """Gate value per level over training (solid: channel mean; dashed: the smallest channel)."""
    gated = {name: gate_traces(runs) for name, runs in grouped.items()}
    gated = {name: traces for name, traces in gated.items() if traces}
    if not gated:
        return None
    fig = Figure(figsize=(4.2 * len(gated), 3.4))
    axes = fig.subplots(1, len(gated), squeeze=False)[0]
    for ax, (name, traces) in zip(axes, gated.items()):
        for level, (epochs, mean, low) in traces.items():
            line = ax.plot(epochs, mean, label=f"level {level}")[0]
            ax.plot(epochs, low, ls="--", lw=0.8, color=line.get_color())
        ax.axhline(1.0, color="grey", lw=0.6)
        ax.set_ylim(0, 2)
        epoch_panel(ax, name)
    return finish_row(fig, axes, "gate (1 = plain concat)")


def _window_sums(values: np.ndarray, size: int) -> np.ndarray:
    """Sum of ``values`` over every ``size`` x ``size`` window (integral image)."""
    integral = np.pad(values.astype(np.int64).cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    return integral[size:, size:] - integral[:-size, size:] - integral[size:, :-size] + integral[:-size, :-size]


def thin_structure_window(target: np.ndarray, size: int) -> tuple[int, int]:
    """Top-left corner of the ``size`` window holding the most foreground skeleton (the longest
    run of thin structure)."""
    size = min(size, *target.shape)
    sums = _window_sums(skeletonize(target > 0), size)
    y, x = np.unravel_index(np.argmax(sums), sums.shape)
    return int(y), int(x)


def disagreement(preds: list[np.ndarray]) -> np.ndarray:
    """Per pixel, the number of variant pairs whose predictions differ there (k (n - k) for k
    of n variants calling it foreground): largest where the variants split evenly."""
    k = np.sum([p > 0 for p in preds], axis=0)
    return k * (len(preds) - k)


def _prediction(spec: AblationSpec, grouped: Grouped, name: str, image: str, fold: int | None) -> np.ndarray:
    """The stored prediction of ``image`` by a variant's first finished seed."""
    seed = min(r["seed"] for r in grouped[name])
    return read_mask(result_dir(spec, name, seed, fold) / "pred" / f"{image}.png", {v: v for v in range(256)})


def _loaded(dataset: SegmentationDataset, roi: RegionOfInterest | None, index: int) -> tuple[np.ndarray, np.ndarray]:
    """An image and its truth, the truth only inside the image's region of interest, as scored
    (the stored predictions are restricted alike)."""
    image, target = dataset.load(index)
    assert target is not None
    if roi is not None:
        target = np.where(roi.inside(dataset.samples[index].name, target.shape), target, 0)
    return image, target


def _error_map(pred: np.ndarray, truth: np.ndarray) -> np.ndarray:
    error = np.zeros(pred.shape + (3,))
    error[(pred > 0) & (truth > 0)] = (0.15, 0.15, 0.15)  # true positive: dark
    error[(pred == 0) & (truth == 0)] = (1.0, 1.0, 1.0)
    error[(pred > 0) & (truth == 0)] = (0.85, 0.1, 0.1)  # false positive: red
    error[(pred == 0) & (truth > 0)] = (0.1, 0.35, 0.9)  # false negative: blue
    return error


def crops_figures(spec: AblationSpec, grouped: Grouped) -> list[tuple[str, Figure, str]]:
    """Two windows predicted side by side by every variant: where the variants disagree most
    (over all the images measured), and the image's stretch of thinnest structure; each as
    (name, figure, caption)."""
    fold = fold_ids(spec)[0]
    dataset, roi = scored_set(variant_config(spec, spec.expand()[0], spec.seeds[0], fold), spec.evaluate)
    kind = "validation" if spec.evaluate is None else "held-out"
    names = [s.name for s in dataset.samples]
    size = spec.report.crop_size
    best: tuple[int, int, int, int] | None = None  # (score, image index, y, x)
    for index, image in enumerate(names):
        preds = [_prediction(spec, grouped, name, image, fold) for name in grouped]
        side = min(size, *preds[0].shape)
        sums = _window_sums(disagreement(preds), side)
        y, x = np.unravel_index(np.argmax(sums), sums.shape)
        if best is None or sums[y, x] > best[0]:
            best = (int(sums[y, x]), index, int(y), int(x))
    assert best is not None
    chosen = names.index(spec.report.crop_image) if spec.report.crop_image in names else 0
    _, target = _loaded(dataset, roi, chosen)
    windows = [
        ("crops", best[1], (best[2], best[3]), f"where the variants disagree most (over all {kind} images)"),
        ("crops_thin", chosen, thin_structure_window(target, size), "with the most thin structure"),
    ]
    figures = []
    for stem, index, (y, x), why in windows:
        image, target = _loaded(dataset, roi, index)
        side = min(size, *target.shape)
        window = (slice(y, y + side), slice(x, x + side))
        panels = [("image", image[..., 0][window], "gray"), ("truth", target[window], "gray_r")]
        panels += [
            (name, _error_map(_prediction(spec, grouped, name, names[index], fold)[window], target[window]), None)
            for name in grouped
        ]
        cols = min(3 if len(panels) == 9 else 4, len(panels))
        rows = int(np.ceil(len(panels) / cols))
        fig = Figure(figsize=(3.0 * cols, 3.1 * rows))
        for i, (title, data, cmap) in enumerate(panels):
            ax = fig.add_subplot(rows, cols, i + 1)
            ax.imshow(data, cmap=cmap, interpolation="nearest")
            ax.set_title(title, fontsize=9)
            ax.axis("off")
        caption = (
            f"{kind.capitalize()} image {names[index]}, {side} px window at (y, x) = ({y}, {x}) {why}; each variant's "
            "first seed. Errors: red = false positive, blue = false negative, dark = correct foreground."
        )
        figures.append((stem, fig, caption))
    return figures
