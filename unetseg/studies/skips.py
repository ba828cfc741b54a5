"""Ask a trained U-Net which of its long skips it relies on, without retraining.

- Knock-out: each level's skip is replaced at test time by zeros, or by its per-channel
  spatial mean (same level of activation, no spatial detail), and every metric is measured
  again on the validation images. A level the model does not use changes nothing.
- Semantic gap (UNet++'s argument, measured): linear CKA (Kornblith et al. 2019) between the
  encoder feature a skip carries and the upsampled decoder feature it meets at that level.
- Gates: the per-channel gate values of ``gated`` skips.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib.figure import Figure

from unetseg.config import Config
from unetseg.inference.evaluation import measure, validation_set
from unetseg.inference.predictor import Predictor
from unetseg.meter import QUIET, Meter
from unetseg.models import UNet
from unetseg.models.checkpoint import load_model
from unetseg.report.document import FigureBlock, Report, Table, write_report
from unetseg.runtime import select_device

SHOWN = ["dice", "bf1_1px", "bf1_2px", "cldice", "rand_error", "vi", "error_near_boundary"]


def linear_cka(x: torch.Tensor, y: torch.Tensor) -> float:
    """Linear CKA of two feature matrices (samples x features), invariant to rotation and scale."""
    x = x - x.mean(0, keepdim=True)
    y = y - y.mean(0, keepdim=True)
    cross = (y.T @ x).norm() ** 2
    return float(cross / ((x.T @ x).norm() * (y.T @ y).norm()).clamp_min(1e-12))


def skip_cka(
    model: UNet, images: list[torch.Tensor], pixels_per_image: int = 2048, seed: int = 0
) -> list[float | None]:
    """Per level: CKA between the skip feature and the upsampled decoder feature it is merged with,
    on randomly sampled pixel positions of the given images (None for levels without a skip)."""
    captured: dict[int, list[tuple[torch.Tensor, torch.Tensor]]] = {}
    hooks = []
    for level, merge in enumerate(model.decoder.skips):

        def hook(module, inputs, output, level=level):
            up, skip = inputs
            if skip is not None:
                captured.setdefault(level, []).append((up.detach(), skip.detach()))

        hooks.append(merge.register_forward_hook(hook))
    gen = torch.Generator().manual_seed(seed)
    try:
        with torch.inference_mode():
            for image in images:
                model(image[None])
    finally:
        for h in hooks:
            h.remove()
    result: list[float | None] = []
    for level in range(len(model.decoder.skips)):
        if level not in captured:
            result.append(None)
            continue
        ups, skips = [], []
        for up, skip in captured[level]:
            flat_up, flat_skip = up[0].flatten(1).T, skip[0].flatten(1).T  # pixels x channels
            idx = torch.randperm(flat_up.shape[0], generator=gen)[:pixels_per_image]
            ups.append(flat_up[idx])
            skips.append(flat_skip[idx])
        result.append(linear_cka(torch.cat(skips).double(), torch.cat(ups).double()))
    return result


def knockout_study(predictor: Predictor, cfg: Config, meter: Meter = QUIET) -> list[dict[str, Any]]:
    """Metrics with every skip intact, then with each used level knocked out in turn."""
    model = predictor.model
    dataset = validation_set(cfg)
    meter.expect(1 + 2 * sum(merge.uses_skip for merge in model.decoder.skips))
    intact = measure(predictor, dataset, cfg.eval.regions).mean
    meter.advance()
    rows = [{"level": "-", "knockout": "none (intact)", **intact}]
    for level, merge in enumerate(model.decoder.skips):
        if not merge.uses_skip:
            continue
        for kind in ("zero", "mean"):
            merge.knockout = kind
            try:
                scores = measure(predictor, dataset, cfg.eval.regions).mean
            finally:
                merge.knockout = None
            meter.advance()
            rows.append(
                {"level": level, "knockout": kind, **scores, **{f"delta_{k}": scores[k] - intact[k] for k in scores}}
            )
    return rows


def _bar_chart(rows: list[dict[str, Any]], metric: str) -> Figure:
    knocked = [r for r in rows if r["level"] != "-"]
    levels = sorted({r["level"] for r in knocked})
    fig = Figure(figsize=(5.5, 3.2))
    ax = fig.add_subplot()
    width = 0.38
    for i, kind in enumerate(("zero", "mean")):
        values = [
            next((r[f"delta_{metric}"] for r in knocked if r["level"] == lv and r["knockout"] == kind), np.nan)
            for lv in levels
        ]
        ax.bar(np.arange(len(levels)) + (i - 0.5) * width, values, width, label=f"knocked out: {kind}")
    ax.axhline(0, color="k", lw=0.8)
    ax.set_xticks(np.arange(len(levels)), [f"level {lv}" for lv in levels])
    ax.set_ylabel(f"change of {metric}")
    ax.set_title(metric, fontsize=10)
    ax.legend(fontsize=8)
    return fig


def _history_figure(history: list[dict[str, Any]], prefix: str, ylabel: str) -> Figure | None:
    """One line per level of the ``<prefix><level>`` columns logged each epoch, if any."""
    keys = sorted({k for row in history for k in row if k.startswith(prefix)}, key=lambda k: (k[len(prefix) : -1], k))
    if not keys:
        return None
    fig = Figure(figsize=(6.5, 3.4))
    ax = fig.add_subplot()
    epochs = [row["epoch"] for row in history]
    for key in keys:
        ax.plot(
            epochs,
            [row.get(key, np.nan) for row in history],
            label=key[len(prefix) :] if prefix != "gate" else f"level {key[4:]}",
        )
    ax.set_xlabel("epoch")
    ax.set_ylabel(ylabel)
    if prefix != "gate":
        ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    return fig


def analyze_skips(
    checkpoint: Path, out_dir: Path, cfg: Config | None = None, device: str = "cpu", meter: Meter = QUIET
) -> dict[str, Path]:
    dev = select_device(device)
    model, ckpt_cfg, state = load_model(checkpoint, dev)
    cfg = cfg or ckpt_cfg
    if not isinstance(model, UNet):
        raise ValueError(
            f"analyze-skips needs a unetseg U-Net (model.arch: unet), {checkpoint} holds {ckpt_cfg.model.arch}"
        )
    predictor = Predictor.of(model, cfg, dev)
    rows = knockout_study(predictor, cfg, meter)
    dataset = validation_set(cfg)
    cka = skip_cka(model, [dataset[i]["image"].to(dev) for i in range(len(dataset.samples))])
    gates = [None if m.gate_values() is None else float(m.gate_values().mean()) for m in model.decoder.skips]

    shown = [k for k in SHOWN if k in rows[0]]
    report = Report(
        f"Skip analysis: {checkpoint}",
        intro=f"{len(dataset.samples)} validation images of {cfg.data.images}; skips (level 0 = full resolution first): "
        f"{', '.join(model.skip_modes)}. Knock-out replaces a level's encoder feature at test time by zeros or by its "
        "per-channel spatial mean; the model is not retrained.",
    )
    report.section("Knock-out").blocks += [
        Table(
            ["level", "knock-out"] + shown,
            [[r["level"], r["knockout"]] + [r[k] for k in shown] for r in rows],
            "Mean over validation images; error_near_boundary = pixel error within 2 px of a true boundary.",
        ),
        *[
            FigureBlock(f"knockout_{k}", _bar_chart(rows, k), f"Change of {k} when one level's skip is knocked out.")
            for k in shown
        ],
    ]
    report.section("Similarity of skip and decoder features (linear CKA)").blocks += [
        "CKA near 1: the skip brings little the decoder does not already have; near 0: very different features "
        "(the 'semantic gap' UNet++ argues for).",
        Table(
            ["level", "skip mode", "CKA", "mean gate"],
            [
                [lv, mode, c if c is not None else float("nan"), g if g is not None else float("nan")]
                for lv, (mode, c, g) in enumerate(zip(model.skip_modes, cka, gates))
            ],
        ),
    ]
    _training_section(report, state.get("history", []))
    data = {"checkpoint": str(checkpoint), "skips": model.skip_modes, "knockout": rows, "cka": cka, "gates": gates}
    return write_report(report, out_dir, data, stem="skip_analysis")


def _training_section(report: Report, history: list[dict[str, Any]]) -> None:
    """Gates, gradient norms and update sizes per level over training, where the run logged them."""
    during = report.section("During training (from the run's log)")
    for prefix, label, caption in (
        ("gate", "mean gate value", "Mean gate of each gated skip per epoch: levels the network keeps stay near 1."),
        (
            "grad_",
            "gradient norm",
            "Gradient norm per level (enc = encoder stage, dec = decoder level), mean over the epoch's steps.",
        ),
        (
            "update_",
            "relative update |dw|/|w|",
            "Relative size of the optimiser's update per level, mean over the epoch's steps.",
        ),
    ):
        fig = _history_figure(history, prefix, label)
        if fig is not None:
            during.blocks.append(FigureBlock(f"history_{prefix.strip('_')}", fig, caption))
    if not during.blocks:
        during.blocks.append(
            "The run logged no per-level statistics; train with train.level_stats: true (gates are logged "
            "whenever the model has gated skips)."
        )
