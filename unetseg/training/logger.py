"""Per-epoch metrics: a CSV rewritten from the run history (so a resumed run never holds a
duplicate or missing row), and, when tensorboard is installed, TensorBoard scalars and a few
small validation pictures (image | ground truth | prediction), so a run's progress can be
seen, not only read off a Dice curve.

TensorBoard is a view of the run, not part of it: if its writer fails (a full disk, a file
size limit: "OSError: [Errno 27] File too large" from the writer's thread), the run goes on
without it and says so once; metrics.csv and the checkpoints are written as before. The
pictures are kept small (at most :data:`PICTURE_HEIGHT` rows) and sparse (at most one set per
:data:`PICTURE_EPOCHS` epochs): three full-size ISBI pictures per validation made 3.7 MB of
event file per two tiny epochs.
"""

from __future__ import annotations

import contextlib
import csv
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np
import torch

from unetseg.inference.overlay import display_image

if TYPE_CHECKING:
    from unetseg.data.dataset import SegmentationDataset

IMAGES_PER_EPOCH = 3  # the first validation samples: the same ones every epoch, so TensorBoard's slider compares them
PICTURE_HEIGHT = 256  # rows of a logged picture at most (downscaled by area averaging)
PICTURE_EPOCHS = 10  # epochs between two sets of pictures at least (the first validation always has one)


def side_by_side(image: np.ndarray, truth: np.ndarray | None, pred: np.ndarray, num_classes: int) -> np.ndarray:
    """8-bit RGB (H, W', 3): the input (min-max scaled), the ground truth and the prediction as
    grey levels (class k of K at k / (K - 1)), separated by white 2-pixel bars."""

    def grey(classes: np.ndarray) -> np.ndarray:
        return np.repeat(np.round(classes * 255.0 / (num_classes - 1)).astype(np.uint8)[..., None], 3, axis=2)

    bar = np.full((image.shape[0], 2, 3), 255, np.uint8)
    panels = [display_image(image)] + ([grey(truth)] if truth is not None else []) + [grey(pred)]
    return np.concatenate([part for panel in panels for part in (panel, bar)][:-1], axis=1)


def _quiet_writer_threads() -> None:
    """TensorBoard's writer thread stores its error for the next call from the training loop
    (which :class:`MetricsLogger` turns into one note) and then re-raises it, so Python prints
    the thread's traceback too. Silence exactly those threads' errors; others go to the hook
    that was there before."""
    import threading

    previous = threading.excepthook
    if getattr(previous, "unetseg_quiet", False):
        return

    def hook(args: Any) -> None:
        if type(args.thread).__name__ != "_AsyncWriterThread" or not issubclass(args.exc_type, Exception):
            previous(args)

    hook.unetseg_quiet = True  # type: ignore[attr-defined]
    threading.excepthook = hook


def shrink(picture: np.ndarray, height: int = PICTURE_HEIGHT) -> np.ndarray:
    """``picture`` scaled down (area averaging) to at most ``height`` rows, aspect kept."""
    if picture.shape[0] <= height:
        return picture
    width = max(1, round(picture.shape[1] * height / picture.shape[0]))
    return cv2.resize(picture, (width, height), interpolation=cv2.INTER_AREA)


class MetricsLogger:
    def __init__(self, out_dir: Path, tensorboard: bool = True, log: Callable[[str], None] = print) -> None:
        self.csv_path = Path(out_dir) / "metrics.csv"
        self.log = log
        self._tb = None
        self._pictured: int | None = None  # the last epoch with pictures
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                return

            def start() -> None:
                _quiet_writer_threads()
                self._tb = SummaryWriter(str(Path(out_dir) / "tensorboard"))

            self._guard(start)

    def _guard(self, action: Callable[[], None]) -> None:
        """Run a TensorBoard call; on failure, stop TensorBoard for the rest of the run and say so once."""
        try:
            action()
        except Exception as err:
            writer, self._tb = self._tb, None
            why = f"{err.strerror or err}" if isinstance(err, OSError) else f"{type(err).__name__}: {err}"
            self.log(
                f"note: TensorBoard logging stopped ({why}); training goes on, metrics.csv and checkpoints "
                "are still written"
            )
            if writer is not None:
                with contextlib.suppress(Exception):  # it failed once already; closing must not fail the run
                    writer.close()

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
            self._guard(lambda: self._scalars(history[-1]))

    def _scalars(self, row: dict[str, Any]) -> None:
        assert self._tb is not None
        for key, value in row.items():
            if key != "epoch" and isinstance(value, (int, float)):
                self._tb.add_scalar(key, value, row["epoch"])
        self._tb.flush()

    def write_images(self, epoch: int, predictor: Any, dataset: SegmentationDataset | None) -> None:
        """Image | truth | prediction of the first :data:`IMAGES_PER_EPOCH` validation samples,
        under ``val/<name>``, at most :data:`PICTURE_HEIGHT` rows each, at the first call and
        then at most every :data:`PICTURE_EPOCHS` epochs (nothing without TensorBoard or a
        validation set)."""
        if self._tb is None or dataset is None:
            return
        if self._pictured is not None and epoch - self._pictured < PICTURE_EPOCHS:
            return
        self._pictured = epoch
        self._guard(lambda: self._pictures(epoch, predictor, dataset))

    def _pictures(self, epoch: int, predictor: Any, dataset: SegmentationDataset) -> None:
        assert self._tb is not None
        for index in range(min(IMAGES_PER_EPOCH, len(dataset.samples))):
            image, truth = dataset.load(index)  # validation data are not augmented
            probs = predictor.probabilities(torch.from_numpy(image.transpose(2, 0, 1).copy()))
            picture = shrink(side_by_side(image, truth, predictor.classes(probs), predictor.num_classes))
            self._tb.add_image(f"val/{dataset.samples[index].name}", picture, epoch, dataformats="HWC")
        self._tb.flush()

    def close(self) -> None:
        if self._tb is not None:
            self._guard(self._tb.close)
