"""Regions of interest: masks that say which pixels of an image are scored at all (a fundus
photograph's field of view; nonzero = inside), paired with the images by name like masks.

Scoring inside a region sets every pixel outside it to background in both the prediction and
the truth (:meth:`RegionOfInterest.restrict`). For Dice that is exactly the Dice of the pixels
inside: a pixel outside is then background in both maps, so it adds to neither the overlap
(2|P∩T∩R|) nor the two areas (|P∩R| + |T∩R|); a false positive outside the field of view, where
a fundus image is black, costs nothing, as the vessel literature scores it. The same holds for
IoU and every measure made from foreground pixels and their boundaries (boundary F1, clDice,
the thin-structure recall). Pixel-wise error rates (pixel error, error by distance to the
boundary) count the pixels outside as correct background, so they are the rates over the whole
image with the outside forgiven, not the rates inside.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from unetseg.data.errors import DataError
from unetseg.data.io import DEFAULT_SLICE_AXIS, Sample, read_mask
from unetseg.data.pairing import find_pairs


@dataclass(frozen=True)
class RegionOfInterest:
    """Each sample's region-of-interest file, by sample name (a :class:`Sample` whose ``mask``
    is the region's file, as :func:`find_pairs` pairs them)."""

    folder: Path
    regions: dict[str, Sample]

    @classmethod
    def pair(cls, images: Path, folder: Path, axis: int = DEFAULT_SLICE_AXIS) -> RegionOfInterest:
        """The regions in ``folder`` of the images in ``images``, paired by name as masks are;
        an image without one is an error naming it."""
        return cls(Path(folder), {sample.name: sample for sample in find_pairs(images, folder, axis)})

    def inside(self, name: str, shape: tuple[int, ...]) -> np.ndarray:
        """The boolean map of sample ``name``'s region (True inside), checked against ``shape``."""
        sample = self.regions.get(name)
        if sample is None or sample.mask is None:
            raise DataError(f"{self.folder}: no region of interest for image {name!r}")
        region = read_mask(sample.mask, None, sample.page, sample.axis) > 0
        if region.shape != tuple(shape):
            raise DataError(
                f"{sample.mask}: region of interest is {region.shape[1]}x{region.shape[0]} (WxH) but image "
                f"{name!r} is {shape[1]}x{shape[0]}"
            )
        return region

    def restrict(self, name: str, pred: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``pred`` and ``target`` with every pixel outside the region set to background (0)."""
        inside = self.inside(name, target.shape)
        return np.where(inside, pred, 0), np.where(inside, target, 0)
