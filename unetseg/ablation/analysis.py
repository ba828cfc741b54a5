"""Measure one trained ablation run: every metric per validation image, the error curve by
distance to the true boundary, and the predicted masks kept for the side-by-side figure."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from unetseg.ablation.spec import ReportSpec
from unetseg.boundary_metrics import detail_metrics, error_by_distance, pool_error_by_distance
from unetseg.checkpoint import load_model
from unetseg.config import Config
from unetseg.data import SegmentationDataset, find_pairs, split_samples, write_array
from unetseg.inference import Predictor
from unetseg.metrics import mean_metrics, segmentation_metrics
from unetseg.models import count_parameters
from unetseg.runtime import select_device


def validation_set(cfg: Config) -> SegmentationDataset:
    _, val_pairs = split_samples(find_pairs(cfg.data.images, cfg.data.masks), cfg.data.split, cfg.data)
    return SegmentationDataset(val_pairs, cfg.data)


def analyse_run(checkpoint: Path, report: ReportSpec, device: str = "cpu") -> dict[str, Any]:
    """Metrics of the run's final weights (not the best epoch: every variant gets the same
    budget, and picking epochs on the validation images would favour noisy variants)."""
    model, cfg, state = load_model(checkpoint, select_device(device))
    predictor = Predictor(model, cfg.inference, cfg.data.num_classes, select_device(device))
    dataset = validation_set(cfg)
    rows, curves = [], []
    pred_dir = Path(checkpoint).parent.parent / "val_pred"
    pred_dir.mkdir(exist_ok=True)
    for index in range(len(dataset.samples)):
        item = dataset[index]
        pred = predictor.classes(predictor.probabilities(item["image"]))
        target = item["mask"].numpy()
        scores = segmentation_metrics(pred, target, cfg.data.num_classes, cfg.eval.regions)
        scores.update(detail_metrics(pred, target, report.tolerances))
        rows.append({"name": item["name"], **scores})
        curves.append(error_by_distance(pred, target, report.distance_bins))
        write_array(pred_dir / f"{item['name']}.png", pred.astype(np.uint8))
    return {
        "variant": cfg.name,
        "seed": cfg.seed,
        "parameters": count_parameters(model),
        "skips": getattr(cfg.model, "skip_modes", lambda: [])(),
        "encoder": getattr(cfg.model, "encoder", cfg.model.arch),
        "mean": mean_metrics(rows),
        "images": rows,
        "distance": {
            "bins": report.distance_bins,
            "error": pool_error_by_distance(curves).tolist(),
            "counts": np.sum([c for _, c in curves], axis=0).tolist(),
        },
        "history": state["history"],
    }
