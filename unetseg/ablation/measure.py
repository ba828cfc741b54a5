"""What the ablation keeps of one trained run: the measures of its final weights on the
validation images (:func:`unetseg.inference.evaluation.measure`, as ``analyze-skips`` uses),
its robustness under test-time corruptions, and its training history."""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from unetseg.ablation.spec import ReportSpec
from unetseg.data.corruptions import corrupt
from unetseg.data.dataset import SegmentationDataset
from unetseg.data.scaling import Resolution
from unetseg.inference.evaluation import measure, score_images, validation_set
from unetseg.inference.predictor import Predictor
from unetseg.metrics.boundary import boundary_f1
from unetseg.metrics.region import segmentation_metrics
from unetseg.models import count_parameters
from unetseg.models.checkpoint import load_model
from unetseg.runtime import select_device

SWEPT = ("dice", "bf1_2px")


def corruption_sweep(
    predictor: Predictor, dataset: SegmentationDataset, report: ReportSpec
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

            mean, _ = score_images(predictor, dataset, [overlap, boundary], perturb=perturb)
            for key in SWEPT:
                curves[key].append(mean[key])
        sweep[kind] = curves
    return sweep


def analyse_run(
    checkpoint: Path, report: ReportSpec, device: str = "cpu", pred_dir: Path | None = None
) -> dict[str, Any]:
    """Metrics of the run's final weights (not the best epoch: every variant gets the same
    budget, and picking epochs on the validation images would favour noisy variants), with the
    predicted masks written to ``pred_dir``."""
    dev = select_device(device)
    model, cfg, state = load_model(checkpoint, dev)
    predictor = Predictor(model, cfg.inference, cfg.data.num_classes, dev, resolution=Resolution.of(cfg.data))
    dataset = validation_set(cfg)
    result = measure(predictor, dataset, cfg.eval.regions, report.tolerances, report.distance_bins, pred_dir)
    return {
        "corruption": corruption_sweep(predictor, dataset, report),
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
