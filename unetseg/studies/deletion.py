"""Delete encoder blocks of a trained U-Net at test time: do residual encoders degrade
gracefully where plain ones break?

Veit et al. 2016 ("Residual Networks Behave Like Ensembles of Relatively Shallow Networks")
read a residual network as an ensemble of paths: deleting one block removes only some paths,
so the network degrades gracefully, while in a plain network every path runs through every
layer, so deleting one breaks it. Here a deleted block is replaced by the identity, which is
exactly what a residual block reduces to without its branch; only blocks that keep their
input's shape (every block of a level after the first) can be deleted.
"""

from __future__ import annotations

import copy
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib.figure import Figure
from torch import nn

from unetseg.config import Config
from unetseg.data.dataset import SegmentationDataset
from unetseg.inference.evaluation import score_images, validation_set
from unetseg.inference.predictor import Predictor
from unetseg.meter import QUIET, Meter
from unetseg.metrics.region import overlap_metrics
from unetseg.models import UNet
from unetseg.models.checkpoint import load_model
from unetseg.report.document import FigureBlock, Report, Table, write_report


def deletable_blocks(model: UNet) -> list[tuple[int, int]]:
    """(level, index) of every encoder block that keeps its input's shape."""
    return [(level, j) for level, stage in enumerate(model.encoder.stages) for j in range(1, len(stage.blocks))]


def without_blocks(model: UNet, blocks: list[tuple[int, int]]) -> UNet:
    """A copy of ``model`` with the given encoder blocks replaced by the identity."""
    pruned = copy.deepcopy(model)
    for level, j in blocks:
        pruned.encoder.stages[level].blocks[j] = nn.Identity()
    return pruned


def mean_dice(model: nn.Module, cfg: Config, dataset: SegmentationDataset, meter: Meter = QUIET) -> float:
    predictor = Predictor.of(model.eval(), cfg, torch.device("cpu"))
    mean, _ = score_images(predictor, dataset, [partial(overlap_metrics, num_classes=cfg.data.num_classes)])
    meter.advance()
    return mean["dice"]


def deletion_study(checkpoint: Path, draws: int = 3, seed: int = 0, meter: Meter = QUIET) -> dict[str, Any]:
    """Dice of the intact model, after deleting each deletable block alone, and after deleting
    k random deletable blocks (``draws`` random sets per k); ``meter`` counts the models scored."""
    model, cfg, _ = load_model(checkpoint, "cpu")
    if not isinstance(model, UNet):
        raise ValueError(f"{checkpoint}: block deletion needs a unetseg U-Net, not {cfg.model.arch}")
    candidates = deletable_blocks(model)
    if not candidates:
        raise ValueError(
            f"{checkpoint}: every level has one block; nothing can be deleted (set model.blocks_per_level > 1)"
        )
    dataset = validation_set(cfg)
    meter.expect(1 + len(candidates) + draws * (len(candidates) - 1) + 1)
    intact = mean_dice(model, cfg, dataset, meter)
    single = [
        {"level": lv, "block": j, "dice": mean_dice(without_blocks(model, [(lv, j)]), cfg, dataset, meter)}
        for lv, j in candidates
    ]
    rng = np.random.default_rng(seed)
    by_count = []
    for k in range(1, len(candidates) + 1):
        dice = []
        for _ in range(draws if k < len(candidates) else 1):
            chosen = [candidates[i] for i in rng.choice(len(candidates), size=k, replace=False)]
            dice.append(mean_dice(without_blocks(model, chosen), cfg, dataset, meter))
        by_count.append(
            {"deleted": k, "dice": float(np.mean(dice)), "min": float(np.min(dice)), "max": float(np.max(dice))}
        )
    return {
        "checkpoint": str(checkpoint),
        "encoder": cfg.model.encoder,
        "blocks_per_level": cfg.model.blocks_per_level,
        "seed": cfg.seed,
        "intact": intact,
        "single": single,
        "by_count": by_count,
    }


def _single_figure(studies: list[dict[str, Any]]) -> Figure:
    fig = Figure(figsize=(7.0, 3.4))
    ax = fig.add_subplot()
    for encoder in sorted({s["encoder"] for s in studies}):
        drops = np.array([[s["intact"] - r["dice"] for r in s["single"]] for s in studies if s["encoder"] == encoder])
        ax.plot(np.arange(drops.shape[1]), drops.mean(0), marker="o", ms=3, label=f"{encoder} ({len(drops)} models)")
    ax.set_xlabel("deleted encoder block (shallowest first; first block of each level not deletable)")
    ax.set_ylabel("Dice drop")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def _count_figure(studies: list[dict[str, Any]]) -> Figure:
    fig = Figure(figsize=(6.0, 3.4))
    ax = fig.add_subplot()
    for encoder in sorted({s["encoder"] for s in studies}):
        curves = np.array(
            [[s["intact"]] + [r["dice"] for r in s["by_count"]] for s in studies if s["encoder"] == encoder]
        )
        ax.plot(np.arange(curves.shape[1]), curves.mean(0), marker="o", ms=3, label=encoder)
        ax.fill_between(np.arange(curves.shape[1]), curves.min(0), curves.max(0), alpha=0.2)
    ax.set_xlabel("number of encoder blocks deleted")
    ax.set_ylabel("Dice on the validation images")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def analyze_blocks(checkpoints: list[Path], out_dir: Path, draws: int = 3, meter: Meter = QUIET) -> dict[str, Path]:
    """Run the deletion study on every checkpoint and write ``blocks.html/.md/.json``; the
    ``meter``'s total grows as each checkpoint shows how many blocks it can lose."""
    studies = [deletion_study(Path(c), draws, meter=meter) for c in checkpoints]
    report = Report(
        "Deleting encoder blocks at test time (the ensemble view)",
        intro=f"{len(studies)} trained models. A deleted block is replaced by the identity (what a residual block "
        "reduces to without its branch); the models are not retrained. Dice on each model's validation images.",
    )
    rows = []
    for s in studies:
        drops = [s["intact"] - r["dice"] for r in s["single"]]
        half = s["by_count"][len(s["by_count"]) // 2 - 1] if len(s["by_count"]) > 1 else s["by_count"][0]
        rows.append(
            [
                s["encoder"],
                s["blocks_per_level"],
                s["seed"],
                s["intact"],
                float(np.mean(drops)),
                float(np.max(drops)),
                f"{half['dice']:.3f} ({half['deleted']} deleted)",
            ]
        )
    report.section("Results").blocks += [
        Table(
            [
                "encoder",
                "blocks/level",
                "seed",
                "intact Dice",
                "mean drop, one block deleted",
                "worst drop, one block",
                "Dice with half the deletable blocks gone",
            ],
            rows,
        ),
        FigureBlock(
            "single_deletion",
            _single_figure(studies),
            "Dice drop when one block is deleted, mean over models of each encoder.",
        ),
        FigureBlock(
            "deletion_count",
            _count_figure(studies),
            f"Dice against the number of blocks deleted ({draws} random sets "
            "per count; line: mean over models and sets, band: range over models).",
        ),
    ]
    return write_report(report, out_dir, {"studies": studies}, stem="blocks")
