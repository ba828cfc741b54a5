"""What the ablation keeps of one trained run: the measures of its final weights on the
validation images, or on the spec's held-out set (``evaluate:``, inside its regions of
interest), with :func:`unetseg.inference.evaluation.measure` as ``analyze-skips`` uses it; its
robustness under test-time corruptions, and its training history."""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from unetseg.ablation.spec import EvaluateSpec, ReportSpec
from unetseg.config import Config
from unetseg.data.corruptions import corrupt
from unetseg.data.dataset import SegmentationDataset
from unetseg.data.roi import RegionOfInterest
from unetseg.inference.evaluation import held_out_set, measure, score_images, validation_set
from unetseg.inference.predictor import Predictor
from unetseg.metrics.boundary import boundary_f1
from unetseg.metrics.region import segmentation_metrics
from unetseg.models import count_parameters
from unetseg.models.checkpoint import load_model
from unetseg.runtime import select_device

SWEPT = ("dice", "bf1_2px")


def scored_set(cfg: Config, evaluate: EvaluateSpec | None) -> tuple[SegmentationDataset, RegionOfInterest | None]:
    """The images a run of ``cfg`` is measured on, and their regions of interest: its validation
    block, or the held-out set (the report's pictures show the same images)."""
    if evaluate is None:
        return validation_set(cfg), None
    dataset = held_out_set(evaluate.images, evaluate.masks, cfg)
    roi = RegionOfInterest.pair(evaluate.images, evaluate.roi, cfg.data.slice_axis) if evaluate.roi else None
    return dataset, roi


def corruption_sweep(
    predictor: Predictor, dataset: SegmentationDataset, report: ReportSpec, roi: RegionOfInterest | None = None
) -> dict[str, dict[str, list[float]]]:
    """Dice and boundary F1 (2 px) under each corruption and strength, mean over images."""
    sweep: dict[str, dict[str, list[float]]] = {}

    def boundary(pred: np.ndarray, target: np.ndarray) -> dict[str, float]:
        return {"bf1_2px": boundary_f1(pred, target, 2)}

    overlap = partial(segmentation_metrics, num_classes=predictor.num_classes)
    for kind, strengths in report.corruptions.items():
        curves: dict[str, list[float]] = {"strength": list(strengths), **{k: [] for k in SWEPT}}
        for strength in strengths:

            def perturb(index: int, image: np.ndarray, kind: str = kind, strength: float = strength) -> np.ndarray:
                return corrupt(image, kind, strength, seed=index)

            mean, _ = score_images(predictor, dataset, [overlap, boundary], perturb=perturb, roi=roi)
            for key in SWEPT:
                curves[key].append(mean[key])
        sweep[kind] = curves
    return sweep


def analyse_run(
    checkpoint: Path,
    report: ReportSpec,
    device: str = "cpu",
    pred_dir: Path | None = None,
    evaluate: EvaluateSpec | None = None,
) -> dict[str, Any]:
    """Metrics of the run's final weights (not the best epoch: every variant gets the same
    budget, and picking epochs on the validation images would favour noisy variants) on
    :func:`scored_set`, each image predicted at the run's working resolution, with the
    predicted masks written to ``pred_dir``."""
    dev = select_device(device)
    model, cfg, state = load_model(checkpoint, dev)
    predictor = Predictor.of(model, cfg, dev)
    dataset, roi = scored_set(cfg, evaluate)
    result = measure(predictor, dataset, cfg.eval.regions, report.tolerances, report.distance_bins, pred_dir, roi)
    return {
        "corruption": corruption_sweep(predictor, dataset, report, roi),
        "variant": cfg.name,
        "seed": cfg.seed,
        "parameters": count_parameters(model),
        "skips": getattr(cfg.model, "skip_modes", []),
        "encoder": getattr(cfg.model, "encoder", cfg.model.arch),
        "mean": result.mean,
        "images": result.rows,
        "distance": {
            "bins": report.distance_bins,
            "error": result.distance_error.tolist(),
            "counts": result.distance_counts.tolist(),
        },
        "history": state["history"],
    }
