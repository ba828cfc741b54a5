"""What a labelled structure looks like: thin walls, thin lines, or blobs.

The planner's biggest choices (border weights, which regions the Rand error counts, the
network recipe, even which mask value is the foreground) follow from the shape of what is
labelled, so it is measured here on each mask:

- **width**: the structure's local thickness, ``2 * median(distance to the edge at its
  skeleton) - 1``: 5 px for ISBI's membranes, about the diameter for a nucleus;
- **extent**: the size of its connected parts, the square root of their area-weighted mean
  area: a membrane network is one part spanning the image, a nucleus a few dozen pixels;
- **regions**: how many separate pieces the rest of the image falls into, and the largest
  one's share: walls cut it into many small regions (ISBI: over 100 cells, none above 15 %),
  lines and blobs leave one background.

Thin means the width is small beside the extent (a line or a network, not a blob); walls are
thin structures that cut the rest into many regions each much thicker than the wall.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from skimage.morphology import skeletonize

THIN_RATIO = 0.15  # width / extent below this: a line or network (ISBI membranes 0.02, nuclei 0.38-0.63)
WALL_REGIONS = 8  # walls cut the rest into at least this many regions per image (ISBI: 100-140)
WALL_LARGEST = 0.5  # ... none of which holds this share of the rest (ISBI: at most 0.15)
WALL_THINNER = 0.5  # ... and the wall is at most this fraction of the regions' own width (ISBI: 0.3)


@dataclass(frozen=True)
class Shape:
    """The shape of one structure in one mask (pixels)."""

    fraction: float
    width: float
    extent: float
    parts: int
    part_area: float  # median area of a connected part
    regions: int  # pieces the rest of the image falls into
    largest_region: float  # the largest piece's share of the rest
    region_width: float  # local thickness of those pieces


def _thickness(binary: np.ndarray) -> float:
    skeleton = skeletonize(binary)
    if not skeleton.any():
        return 0.0
    return max(1.0, 2.0 * float(np.median(ndimage.distance_transform_edt(binary)[skeleton])) - 1.0)


def measure_shape(structure: np.ndarray, factor: int = 1) -> Shape | None:
    """The shape of the True pixels of a 2D boolean mask; None when there are none. ``factor``:
    the mask was pooled down by this much, so lengths are scaled back up by it."""
    if not structure.any():
        return None
    parts, count = ndimage.label(structure)
    areas = np.bincount(parts.ravel())[1:].astype(np.float64)
    rest = ~structure
    pieces, piece_count = ndimage.label(rest)  # 4-connected, as the region measures count cells
    piece_areas = np.bincount(pieces.ravel())[1:] if piece_count else np.zeros(1)
    return Shape(
        fraction=float(structure.mean()),
        width=factor * _thickness(structure),
        extent=factor * float(np.sqrt((areas**2).sum() / areas.sum())),
        parts=int(count),
        part_area=factor**2 * float(np.median(areas)),
        regions=int(piece_count),
        largest_region=float(piece_areas.max() / max(piece_areas.sum(), 1)),
        # only walls need the regions' width, and walls cut the rest into many regions: a skeleton
        # of a whole background is the slowest step of the fingerprint, so it is skipped otherwise
        region_width=factor * _thickness(rest) if rest.any() and piece_count >= WALL_REGIONS else 0.0,
    )


@dataclass(frozen=True)
class ShapeSummary:
    """Medians of :class:`Shape` over the masks where the structure occurs."""

    masks: int
    fraction: float
    width: float
    extent: float
    parts: float
    part_area: float
    regions: float
    largest_region: float
    region_width: float

    @property
    def thin(self) -> bool:
        return self.width < THIN_RATIO * self.extent

    @property
    def walls(self) -> bool:
        """Thin structures that separate the rest into many regions much thicker than themselves."""
        return (
            self.thin
            and self.fraction < 0.5
            and self.regions >= WALL_REGIONS
            and self.largest_region < WALL_LARGEST
            and self.width < WALL_THINNER * self.region_width
        )

    @property
    def kind(self) -> str:
        return "walls" if self.walls else "lines" if self.thin else "blobs"


def summarise(shapes: list[Shape | None]) -> ShapeSummary | None:
    found = [s for s in shapes if s is not None]
    if not found:
        return None
    median = {name: float(np.median([getattr(s, name) for s in found])) for name in Shape.__dataclass_fields__}
    return ShapeSummary(masks=len(found), **median)
