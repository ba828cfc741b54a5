"""The depth section of an ablation report: does a deeper encoder train worse under the same
budget? Final training loss by encoder type and blocks per level, and the loss curves, read
from the runs' histories. He et al. 2015's degradation shows as a plain encoder whose loss
rises with depth under the same budget."""

from __future__ import annotations

from typing import Any

import numpy as np
from matplotlib.figure import Figure

from unetseg.report.document import Table
from unetseg.report.plots import epoch_panel, finish_row


def pm(mean: float, std: float) -> str:
    """``mean ± std`` with 3 decimals (2 from 10 up), or a dash when there is no value."""
    if not np.isfinite(mean):
        return "–"
    digits = 2 if abs(mean) >= 10 else 3
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def _depth_of(run: dict[str, Any]) -> tuple[str, int]:
    model = run.get("config", {}).get("model", {})
    return str(model.get("encoder", run.get("encoder"))), int(model.get("blocks_per_level", 1))


def degradation(grouped: dict[str, list[dict[str, Any]]]) -> tuple[Table, Figure, Figure] | None:
    """When variants differ in blocks per level: final training loss against depth per encoder
    (He et al. 2015's degradation: a deeper plain stack ends higher), and the loss curves."""
    runs = [r for rs in grouped.values() for r in rs]
    depths = sorted({_depth_of(r)[1] for r in runs})
    if len(depths) < 2:
        return None
    encoders = sorted({_depth_of(r)[0] for r in runs})
    final: dict[tuple[str, int], list[float]] = {}
    for r in runs:
        last = [row["train_loss"] for row in r["history"][-2:]]  # the last two epochs: less noise than one
        final.setdefault(_depth_of(r), []).append(float(np.mean(last)))
    table = Table(
        ["encoder"] + [f"{d} block(s)/level" for d in depths],
        [
            [e]
            + [
                pm(float(np.mean(final[(e, d)])), float(np.std(final[(e, d)]))) if (e, d) in final else "–"
                for d in depths
            ]
            for e in encoders
        ],
        "Training loss at the end of the budget (mean of the last two epochs), mean ± std over seeds. Degradation: the "
        "loss rises with depth under the same budget.",
    )
    fig = Figure(figsize=(6.0, 3.6))
    ax = fig.add_subplot()
    for e in encoders:
        present = [d for d in depths if (e, d) in final]
        ax.plot(present, [np.mean(final[(e, d)]) for d in present], marker="o", label=e)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("blocks per level")
    ax.set_ylabel("final training loss")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    curves = Figure(figsize=(3.0 * len(encoders), 3.0))
    axes = curves.subplots(1, len(encoders), squeeze=False, sharey=True)[0]
    for ax, e in zip(axes, encoders):
        for d in depths:
            losses = [[row["train_loss"] for row in r["history"]] for r in runs if _depth_of(r) == (e, d)]
            if losses:
                ax.plot(np.arange(1, len(losses[0]) + 1), np.mean(losses, axis=0), label=f"{d}/level")
        epoch_panel(ax, e)
    return table, fig, finish_row(curves, axes, "training loss")
