"""One image plane to class indices (and what ``--prob`` writes), tile by tile when it is large.

A whole-image pass, and MONAI's sliding window too, hold the class probabilities of the
whole image as one torch tensor (MONAI adds a weight map of the same size): for a
20000x20000 image that is over 3 GB per tensor, and the allocation failed with a traceback
that stopped the rest of the folder. Whole-slide-sized inputs (pathology, EM montages) are
real, so an image above :attr:`Tiling.max_pixels` is cut into tiles of ``tile`` x ``tile``
pixels. Each is predicted as a small image would be (whole image or sliding window, TTA,
ensemble) together with a margin of ``halo`` pixels of real context on every side, and only
its core is kept. Torch never holds more than one tile with its margin; the classes are
stitched into a uint8 (or uint16) array, a quarter or an eighth of the torch tensor's size,
and the probabilities, only when asked for, into a memory-mapped file beside the outputs.

A network that sees no further than ``halo`` pixels and normalises with fixed statistics
(batch norm in eval mode) predicts the core of a tile exactly as it predicts that region of
the whole image, so the stitched result equals the untiled one to float rounding. Instance
norm computes its statistics per input, per tile here: close, not identical, for an image
that could not have been predicted whole anyway.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import torch


class ProbabilityModel(Protocol):
    """What :func:`predict_plane` needs of a predictor or an ensemble."""

    @property
    def num_classes(self) -> int: ...

    def probabilities(self, image: torch.Tensor) -> torch.Tensor: ...

    def classes(self, probs: torch.Tensor) -> np.ndarray: ...

    def postprocess(self, classes: np.ndarray) -> np.ndarray: ...


@dataclass(frozen=True)
class Tiling:
    """When and how to tile: images above ``max_pixels`` pixels go in ``tile``-pixel tiles,
    each predicted with ``halo`` pixels of context on every side."""

    max_pixels: int = 4096 * 4096
    tile: int = 2048
    halo: int = 256

    def needed(self, height: int, width: int) -> bool:
        return height * width > self.max_pixels

    def cores(self, height: int, width: int) -> list[tuple[slice, slice]]:
        """The tiles' cores, row by row; they cover the image without overlap."""
        return [
            (slice(y, min(y + self.tile, height)), slice(x, min(x + self.tile, width)))
            for y in range(0, height, self.tile)
            for x in range(0, width, self.tile)
        ]

    def window(self, core: tuple[slice, slice], height: int, width: int) -> tuple[slice, slice]:
        """The core and its margin, within the image."""
        rows, cols = core
        return (
            slice(max(rows.start - self.halo, 0), min(rows.stop + self.halo, height)),
            slice(max(cols.start - self.halo, 0), min(cols.stop + self.halo, width)),
        )


def foreground(probs: torch.Tensor, num_classes: int) -> np.ndarray:
    """What ``--prob`` writes: the foreground probability (binary) or every class's (C, H, W)."""
    return (probs[1] if num_classes == 2 else probs).numpy().astype(np.float32)


def _as_tensor(image: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))


def _scratch(shape: tuple[int, ...], folder: Path | None) -> np.ndarray:
    """A float32 array backed by an anonymous file in ``folder`` (the output folder: the
    system's temporary folder is often memory), freed with the array."""
    return np.memmap(tempfile.TemporaryFile(dir=folder), dtype=np.float32, mode="w+", shape=shape)


def predict_plane(
    predictor: ProbabilityModel,
    image: np.ndarray,
    with_probs: bool,
    tiling: Tiling = Tiling(),
    scratch: Path | None = None,
) -> tuple[np.ndarray, np.ndarray | None]:
    """``image`` (H, W, C float32) -> (class indices (H, W), what ``--prob`` writes or None)."""
    height, width = image.shape[:2]
    num_classes = predictor.num_classes
    if not tiling.needed(height, width):
        probs = predictor.probabilities(_as_tensor(image))
        return predictor.postprocess(predictor.classes(probs)), foreground(probs, num_classes) if with_probs else None
    classes = np.empty((height, width), np.uint8 if num_classes <= 256 else np.uint16)
    stitched = None
    if with_probs:
        stitched = _scratch((height, width) if num_classes == 2 else (num_classes, height, width), scratch)
    for rows, cols in tiling.cores(height, width):
        around_rows, around_cols = tiling.window((rows, cols), height, width)
        probs = predictor.probabilities(_as_tensor(image[around_rows, around_cols]))
        core = probs[
            :,
            rows.start - around_rows.start : rows.stop - around_rows.start,
            cols.start - around_cols.start : cols.stop - around_cols.start,
        ]
        classes[rows, cols] = predictor.classes(core)
        if stitched is not None:
            stitched[..., rows, cols] = foreground(core, num_classes)
    return predictor.postprocess(classes), stitched  # on the whole image: components cross tiles
