"""The working resolution (``data.scale``): images are shrunk before the network sees them and
its probabilities are resized back to each image's own size.

nnU-Net resamples every case to a target spacing so that an object spans the same number of
voxels everywhere; a 2D photograph has no spacing, but the same decision remains. When objects
are large (a skin lesion covering a third of a photograph, nuclei imaged 4x larger), a
full-resolution crop holds a fraction of one object and none of its surroundings, and the
network cannot tell the object from what lies around it. Shrinking the image by ``scale``
fixes that at the cost of detail, which is why thin structures are never shrunk.

Photographs framed on one object (a lesion, a fundus, a leaf) are different again: the
photographer's framing, not the camera's pixel count, sets how large the object is, so the same
lesion spans 300 px in one archive's images and 1,000 px in another's. There each image is brought
to one size (``data.short_side``: its shorter side to that many pixels, as MONAI's ``Resize`` or a
torchvision pipeline would), which is what nnU-Net does per case when it resamples every case
from its own spacing to one target spacing. Training,
validation, ``evaluate`` and ``predict`` all go through these functions, so they see images the
same way and every score is computed on the image's own pixels.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import cv2
import numpy as np
import torch
import torch.nn.functional as F

if TYPE_CHECKING:
    from unetseg.config import DataConfig


@dataclass(frozen=True)
class Resolution:
    """How an image of any size is brought to the working resolution: by one factor for every
    image (``data.scale``), or to one shorter side (``data.short_side``)."""

    scale: float = 1.0
    short_side: int | None = None

    @classmethod
    def of(cls, data: DataConfig) -> Resolution:
        return cls(data.scale, data.short_side)

    def factor(self, height: int, width: int) -> float:
        """The resize factor of an image of this size (1: as it is)."""
        return self.short_side / min(height, width) if self.short_side else self.scale


def _interpolation(scale: float) -> int:
    """Area averaging to shrink (no aliasing), bilinear to enlarge (area is nearest-like there)."""
    return cv2.INTER_AREA if scale < 1.0 else cv2.INTER_LINEAR


def working_size(height: int, width: int, scale: float) -> tuple[int, int]:
    """(height, width) of an image at ``scale``, at least one pixel a side."""
    return max(1, round(height * scale)), max(1, round(width * scale))


def rescale_image(image: np.ndarray, scale: float) -> np.ndarray:
    """An HxWxC float image at ``scale``: area averaging, so shrinking does not alias."""
    if scale == 1.0:
        return image
    height, width = working_size(*image.shape[:2], scale)
    out = cv2.resize(image, (width, height), interpolation=_interpolation(scale))
    return out if out.ndim == 3 else out[..., None]


def rescale_mask(mask: np.ndarray, scale: float) -> np.ndarray:
    """An HxW class map at ``scale``: each pixel takes the class covering most of its area (a
    nearest-neighbour pick would keep one of every 16 pixels at 1/4 and jitter the borders)."""
    if scale == 1.0:
        return mask
    height, width = working_size(*mask.shape, scale)
    # class indices are small and non-negative: counting them is ~10x faster than np.unique's hash
    classes = np.flatnonzero(np.bincount(mask.ravel())) if mask.min() >= 0 else np.unique(mask)
    if len(classes) == 1:
        return np.full((height, width), classes[0], dtype=mask.dtype)
    shares = [
        cv2.resize((mask == c).astype(np.float32), (width, height), interpolation=_interpolation(scale))
        for c in classes
    ]
    return classes[np.argmax(np.stack(shares), axis=0)].astype(mask.dtype)


def shrink_input(image: torch.Tensor, scale: float) -> torch.Tensor:
    """A (C, H, W) CPU tensor at ``scale``, resized exactly as training resized its images."""
    if scale == 1.0:
        return image
    array = rescale_image(image.numpy().transpose(1, 2, 0), scale)
    return torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1)))


def restore_size(probs: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(N, K, h, w) probabilities resized (bilinearly) to ``size``: the image's own pixels."""
    if tuple(probs.shape[-2:]) == tuple(size):
        return probs
    return F.interpolate(probs, size=size, mode="bilinear", align_corners=False)
