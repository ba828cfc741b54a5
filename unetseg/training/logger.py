"""Per-epoch metrics: a CSV rewritten from the run history (so a resumed run never holds a
duplicate or missing row), and, when tensorboard is installed, TensorBoard scalars and a few
validation pictures (image | ground truth | prediction) per validation epoch, so a run's
progress can be seen, not only read off a Dice curve."""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from unetseg.overlay import display_image

if TYPE_CHECKING:
    from unetseg.data.dataset import SegmentationDataset

IMAGES_PER_EPOCH = 3  # the first validation samples: the same ones every epoch, so TensorBoard's slider compares them


def side_by_side(image: np.ndarray, truth: np.ndarray | None, pred: np.ndarray, num_classes: int) -> np.ndarray:
    """8-bit RGB (H, W', 3): the input (min-max scaled), the ground truth and the prediction as
    grey levels (class k of K at k / (K - 1)), separated by white 2-pixel bars."""
    def grey(classes: np.ndarray) -> np.ndarray:
        return np.repeat(np.round(classes * 255.0 / (num_classes - 1)).astype(np.uint8)[..., None], 3, axis=2)

    bar = np.full((image.shape[0], 2, 3), 255, np.uint8)
    panels = [display_image(image)] + ([grey(truth)] if truth is not None else []) + [grey(pred)]
    return np.concatenate([part for panel in panels for part in (panel, bar)][:-1], axis=1)


class MetricsLogger:
    def __init__(self, out_dir: Path, tensorboard: bool = True) -> None:
        self.csv_path = Path(out_dir) / "metrics.csv"
        self._tb = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self._tb = SummaryWriter(str(Path(out_dir) / "tensorboard"))
            except ImportError:
                self._tb = None

    def write(self, history: list[dict]) -> None:
        """Rewrite the CSV with every epoch so far and send the newest row to TensorBoard."""
        if not history:
            return
        keys: list[str] = []
        for row in history:
            keys += [k for k in row if k not in keys]
        tmp = self.csv_path.with_suffix(".csv.tmp")
        with open(tmp, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=keys)
            writer.writeheader()
            writer.writerows(history)
        os.replace(tmp, self.csv_path)
        if self._tb is not None:
            last = history[-1]
            for key, value in last.items():
                if key != "epoch" and isinstance(value, (int, float)):
                    self._tb.add_scalar(key, value, last["epoch"])
            self._tb.flush()

    def write_images(self, epoch: int, predictor: Any, dataset: SegmentationDataset | None) -> None:
        """Image | truth | prediction of the first :data:`IMAGES_PER_EPOCH` validation samples,
        under ``val/<name>`` (nothing without TensorBoard or a validation set)."""
        if self._tb is None or dataset is None:
            return
        for index in range(min(IMAGES_PER_EPOCH, len(dataset.samples))):
            image, truth = dataset.load(index)  # validation data are not augmented
            probs = predictor.probabilities(torch.from_numpy(image.transpose(2, 0, 1).copy()))
            picture = side_by_side(image, truth, predictor.classes(probs), predictor.num_classes)
            self._tb.add_image(f"val/{dataset.samples[index].name}", picture, epoch, dataformats="HWC")
        self._tb.flush()

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
