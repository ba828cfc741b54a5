"""Scoring a model on a labelled set: the one loop over its images that ``evaluate``, the
trainer's validation, the ablation and the studies all run, so they all measure alike.

Each image goes through the same :class:`Predictor` as ``predict`` (padding or sliding window,
TTA, threshold); what is measured is a list of scorers, each a function of the predicted and
true class maps that returns named scores.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch

from unetseg.config import Config
from unetseg.data.dataset import SegmentationDataset
from unetseg.data.io import write_array
from unetseg.data.layouts import split_data
from unetseg.data.pairing import find_pairs
from unetseg.data.roi import RegionOfInterest
from unetseg.inference.overlay import CONTOUR_COLOURS, display_image, error_overlay
from unetseg.inference.predictor import Predictor
from unetseg.metrics.boundary import detail_metrics, error_by_distance, pool_error_by_distance
from unetseg.metrics.region import mean_metrics, object_errors, regions_of, segmentation_metrics
from unetseg.report.gallery import GalleryItem

Scorer = Callable[[np.ndarray, np.ndarray], dict[str, float]]
Progress = Callable[[Iterable[int]], Iterable[int]]

NEAR_BOUNDARY_PX = 2.0
DISTANCE_BINS = (0, 1, 2, 3, 4, 6, 8, 12, 16, 24, float("inf"))
TOLERANCES = (1, 2)


def validation_set(cfg: Config) -> SegmentationDataset:
    """The un-augmented validation images of ``cfg``'s split."""
    _, val_pairs = split_data(cfg.data)
    return SegmentationDataset(val_pairs, cfg.data)


def held_out_set(images: Path, masks: Path, cfg: Config) -> SegmentationDataset:
    """The labelled pairs of two folders (paired by name, :func:`~unetseg.data.pairing.find_pairs`),
    read as ``cfg``'s data (channels, label map, normalisation) at their own size: images the
    run never saw, such as a dataset's test split."""
    return SegmentationDataset(find_pairs(images, masks, cfg.data.slice_axis), cfg.data)


def score_images(
    predictor: Predictor,
    dataset: SegmentationDataset,
    scorers: Sequence[Scorer],
    progress: Progress = lambda xs: xs,
    perturb: Callable[[int, np.ndarray], np.ndarray] | None = None,
    on_prediction: Callable[[str, np.ndarray], None] | None = None,
    roi: RegionOfInterest | None = None,
) -> tuple[dict[str, float], list[dict[str, Any]]]:
    """(mean scores, per-image rows) over every image of an un-augmented ``dataset``.

    ``perturb(index, image)`` changes the decoded HxWxC image before prediction (the
    robustness sweeps); ``on_prediction(name, classes)`` sees each predicted map (to keep it);
    with ``roi`` both maps are scored inside each image's region only (see
    :mod:`unetseg.data.roi`), and the kept map is the restricted one.
    """
    rows = []
    for index in progress(range(len(dataset.samples))):
        item = dataset[index]
        image = item["image"]
        if perturb is not None:
            changed = perturb(index, image.numpy().transpose(1, 2, 0))
            image = torch.from_numpy(np.ascontiguousarray(changed.transpose(2, 0, 1)))
        pred, target = predictor.postprocess(predictor.classes(predictor.probabilities(image))), item["mask"].numpy()
        if roi is not None:
            pred, target = roi.restrict(item["name"], pred, target)
        scores: dict[str, float] = {}
        for scorer in scorers:
            scores.update(scorer(pred, target))
        rows.append({"name": item["name"], **scores})
        if on_prediction is not None:
            on_prediction(item["name"], pred)
    return mean_metrics(rows), rows


def evaluate(
    predictor: Predictor,
    dataset: SegmentationDataset,
    regions: str = "none",
    progress: Progress = lambda xs: xs,
    detail: bool = False,
    on_prediction: Callable[[str, np.ndarray], None] | None = None,
) -> tuple[dict[str, float], list[dict[str, Any]]]:
    """Overlap and region scores of every image; ``detail`` adds the boundary and
    thin-structure measures (boundary F1, HD95, clDice), about half a second per 512x512 image."""
    scorers: list[Scorer] = [partial(segmentation_metrics, num_classes=predictor.num_classes, regions=regions)]
    if detail:
        scorers.append(detail_metrics)
    return score_images(predictor, dataset, scorers, progress, on_prediction=on_prediction)


def _class_picture(classes: np.ndarray) -> np.ndarray:
    """8-bit RGB of a class map: background black, each foreground class in its contour colour."""
    out = np.zeros((*classes.shape, 3), np.uint8)
    for cls in range(1, int(classes.max(initial=0)) + 1):
        out[classes == cls] = CONTOUR_COLOURS[(cls - 1) % len(CONTOUR_COLOURS)]
    return out


def gallery_items(
    dataset: SegmentationDataset, predictions: dict[str, np.ndarray], rows: list[dict[str, Any]]
) -> list[GalleryItem]:
    """What ``evaluate --report`` shows of each scored image: picture, truth, prediction, errors."""
    index = {sample.name: i for i, sample in enumerate(dataset.samples)}
    items = []
    for row in rows:
        image, truth = dataset.load(index[row["name"]])
        assert truth is not None
        pred = predictions[row["name"]]
        picture = display_image(image)
        scores = {k: float(v) for k, v in row.items() if k != "name" and isinstance(v, (int, float))}
        items.append(
            GalleryItem(
                row["name"],
                scores,
                picture,
                _class_picture(truth),
                _class_picture(pred),
                error_overlay(picture, pred, truth),
            )
        )
    return items


@dataclass
class Measured:
    rows: list[dict[str, Any]]
    mean: dict[str, float]
    distance_error: np.ndarray
    distance_counts: np.ndarray


def measure(
    predictor: Predictor,
    dataset: SegmentationDataset,
    regions: str,
    tolerances: Sequence[int] = TOLERANCES,
    distance_bins: Sequence[float] = DISTANCE_BINS,
    pred_dir: Path | None = None,
    roi: RegionOfInterest | None = None,
) -> Measured:
    """Everything the ablation and ``analyze-skips`` compare: overlap, region (with split and
    merge counts), boundary and thin-structure scores of every image, the pixel error rate within
    ``NEAR_BOUNDARY_PX`` of a true boundary (``error_near_boundary``), and the error curve by
    distance to the boundary pooled over images; the predicted masks go to ``pred_dir``; with
    ``roi``, inside each image's region of interest (:func:`score_images`)."""
    curves: list[tuple[np.ndarray, np.ndarray]] = []

    def fine_detail(pred: np.ndarray, target: np.ndarray) -> dict[str, float]:
        scores = detail_metrics(pred, target, tolerances)
        if regions != "none":
            scores.update(object_errors(regions_of(pred, regions), regions_of(target, regions)))
        near, _ = error_by_distance(pred, target, [0.0, NEAR_BOUNDARY_PX, float("inf")])
        curves.append(error_by_distance(pred, target, distance_bins))
        return {**scores, "error_near_boundary": float(near[0])}

    def keep(name: str, pred: np.ndarray) -> None:
        if pred_dir is not None:
            pred_dir.mkdir(parents=True, exist_ok=True)
            write_array(pred_dir / f"{name}.png", pred.astype(np.uint8))

    overlap = partial(segmentation_metrics, num_classes=predictor.num_classes, regions=regions)
    mean, rows = score_images(predictor, dataset, [overlap, fine_detail], on_prediction=keep, roi=roi)
    return Measured(rows, mean, pool_error_by_distance(curves), np.sum([c for _, c in curves], axis=0))
