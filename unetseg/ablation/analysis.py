"""Measure a trained model on its validation images: every metric per image, the error
curve by distance to the true boundary, and (optionally) the predicted masks.

Shared by the ablation (one call per trained run) and ``analyze-skips`` (one call per
knocked-out skip), so both report exactly the same measures.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from unetseg.ablation.spec import ReportSpec
from unetseg.boundary_metrics import boundary_f1, detail_metrics, error_by_distance, pool_error_by_distance
from unetseg.corruptions import corrupt
from unetseg.checkpoint import load_model
from unetseg.config import Config
from unetseg.data import SegmentationDataset, write_array
from unetseg.data.layouts import split_data
from unetseg.inference import Predictor
from unetseg.metrics import mean_metrics, object_errors, regions_of, segmentation_metrics
from unetseg.models import count_parameters
from unetseg.runtime import select_device

NEAR_BOUNDARY_PX = 2.0


def validation_set(cfg: Config) -> SegmentationDataset:
    _, val_pairs = split_data(cfg.data)
    return SegmentationDataset(val_pairs, cfg.data)


@dataclass
class Measured:
    rows: list[dict[str, Any]]
    mean: dict[str, float]
    distance_error: np.ndarray
    distance_counts: np.ndarray


def measure(
    predictor: Predictor, dataset: SegmentationDataset, regions: str, report: ReportSpec, pred_dir: Path | None = None
) -> Measured:
    """Overlap, region (with split and merge counts), boundary and thin-structure metrics of
    every image, plus the pixel error rate within ``NEAR_BOUNDARY_PX`` of a true boundary
    (``error_near_boundary``)."""
    rows, curves = [], []
    for index in range(len(dataset.samples)):
        item = dataset[index]
        pred = predictor.classes(predictor.probabilities(item["image"]))
        target = item["mask"].numpy()
        scores = segmentation_metrics(pred, target, predictor.num_classes, regions)
        scores.update(detail_metrics(pred, target, report.tolerances))
        if regions != "none":
            scores.update(object_errors(regions_of(pred, regions), regions_of(target, regions)))
        near, _ = error_by_distance(pred, target, [0.0, NEAR_BOUNDARY_PX, float("inf")])
        scores["error_near_boundary"] = float(near[0])
        rows.append({"name": item["name"], **scores})
        curves.append(error_by_distance(pred, target, report.distance_bins))
        if pred_dir is not None:
            pred_dir.mkdir(parents=True, exist_ok=True)
            write_array(pred_dir / f"{item['name']}.png", pred.astype(np.uint8))
    return Measured(rows, mean_metrics(rows), pool_error_by_distance(curves), np.sum([c for _, c in curves], axis=0))


SWEPT = ("dice", "bf1_2px")


def corruption_sweep(predictor: Predictor, dataset: SegmentationDataset, report: ReportSpec) -> dict[str, dict[str, list[float]]]:
    """Dice and boundary F1 (2 px) under each corruption and strength, mean over images."""
    sweep: dict[str, dict[str, list[float]]] = {}
    for kind, strengths in report.corruptions.items():
        curves: dict[str, list[float]] = {"strength": list(strengths), **{k: [] for k in SWEPT}}
        for strength in strengths:
            rows = []
            for index in range(len(dataset.samples)):
                image, target = dataset.load(index)
                noisy = corrupt(image, kind, strength, seed=index)
                pred = predictor.classes(predictor.probabilities(torch.from_numpy(noisy.transpose(2, 0, 1).copy())))
                scores = segmentation_metrics(pred, target, predictor.num_classes)
                scores["bf1_2px"] = boundary_f1(pred, target, 2)
                rows.append(scores)
            for key in SWEPT:
                curves[key].append(float(np.mean([r[key] for r in rows])))
        sweep[kind] = curves
    return sweep


def analyse_run(checkpoint: Path, report: ReportSpec, device: str = "cpu", pred_dir: Path | None = None) -> dict[str, Any]:
    """Metrics of the run's final weights (not the best epoch: every variant gets the same
    budget, and picking epochs on the validation images would favour noisy variants), with the
    predicted masks written to ``pred_dir``."""
    dev = select_device(device)
    model, cfg, state = load_model(checkpoint, dev)
    predictor = Predictor(model, cfg.inference, cfg.data.num_classes, dev)
    dataset = validation_set(cfg)
    result = measure(predictor, dataset, cfg.eval.regions, report, pred_dir)
    return {
        "corruption": corruption_sweep(predictor, dataset, report),
        "variant": cfg.name,
        "seed": cfg.seed,
        "parameters": count_parameters(model),
        "skips": getattr(cfg.model, "skip_modes", lambda: [])(),
        "encoder": getattr(cfg.model, "encoder", cfg.model.arch),
        "mean": result.mean,
        "images": result.rows,
        "distance": {"bins": report.distance_bins, "error": result.distance_error.tolist(), "counts": result.distance_counts.tolist()},
        "history": state["history"],
    }
