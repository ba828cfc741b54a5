"""Metrics of a model over a labelled split, image by image, with the inference pipeline
that ``predict`` uses."""

from __future__ import annotations

from typing import Callable, Iterable

from unetseg.data.dataset import SegmentationDataset
from unetseg.inference import Predictor
from unetseg.metrics import mean_metrics, segmentation_metrics


def evaluate(
    predictor: Predictor,
    dataset: SegmentationDataset,
    regions: str = "none",
    progress: Callable[[Iterable[int]], Iterable[int]] = lambda xs: xs,
) -> tuple[dict[str, float], list[dict]]:
    """(mean metrics, per-image rows) over every pair of an un-augmented dataset."""
    rows = []
    for index in progress(range(len(dataset.samples))):
        item = dataset[index]
        probs = predictor.probabilities(item["image"])
        scores = segmentation_metrics(predictor.classes(probs), item["mask"].numpy(), predictor.num_classes, regions)
        rows.append({"name": item["name"], **scores})
    return mean_metrics(rows), rows
