"""Intensity normalisation, as an affine map fitted to a reference and applied to an image.

Fitting and applying are separate because the reference is not always the image: a 2D
image is its own reference, but the slices of a volume are all scaled by statistics of
the whole volume (:func:`unetseg.data.volumes.volume_scaling`), so a slice that is mostly
air does not get a different contrast from its neighbour through the lungs.

Modes (``data.normalize``):

- ``dtype``: integers divided by their type's range (applied to the raw array, before any
  fitting; the reference plays no part);
- ``minmax``: the reference's range to [0, 1];
- ``zscore``: zero mean, unit variance of the reference;
- ``percentile`` (MR): clip to the reference's ``percentile`` (e.g. 0.5 and 99.5 %), then
  z-score with the mean and standard deviation of the clipped reference (as nnU-Net does
  for non-CT modalities: MR intensities have no fixed unit and rare bright outliers);
- ``window`` (CT): clip to the fixed Hounsfield window ``center ± width / 2`` and map it to
  [0, 1] (CT values have a physical unit, so a fixed window keeps scans comparable).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from unetseg.config import DataConfig

NORMALIZE_MODES = ("dtype", "minmax", "zscore", "percentile", "window")


@dataclass(frozen=True)
class Scaling:
    """``(clip(x, lo, hi) - offset) / scale``: a normalisation fitted to its reference."""

    offset: float = 0.0
    scale: float = 1.0
    lo: float = -math.inf
    hi: float = math.inf

    def apply(self, image: np.ndarray) -> np.ndarray:
        if math.isfinite(self.lo) or math.isfinite(self.hi):
            image = np.clip(image, self.lo, self.hi)
        return ((image - self.offset) / self.scale).astype(np.float32)


@dataclass(frozen=True)
class Normalization:
    """A ``data.normalize`` mode with its parameters (hashable: volumes cache a fit per mode)."""

    mode: str = "dtype"
    percentile: tuple[float, float] = (0.5, 99.5)
    window: tuple[float, float] | None = None

    def __post_init__(self) -> None:
        if self.mode not in NORMALIZE_MODES:
            raise ValueError(f"normalize must be one of {', '.join(NORMALIZE_MODES)}, got {self.mode!r}")
        if self.mode == "window" and self.window is None:
            raise ValueError("normalize 'window' needs a window [center, width]")

    @classmethod
    def of(cls, spec: str | Normalization | DataConfig) -> Normalization:
        """From a mode name, a data config (its ``normalize``, ``percentile``, ``window``) or itself."""
        if isinstance(spec, Normalization):
            return spec
        if isinstance(spec, str):
            return cls(spec)
        window = tuple(spec.window) if spec.window is not None else None
        return cls(spec.normalize, tuple(spec.percentile), window)  # type: ignore[arg-type]

    def fit(self, reference: np.ndarray) -> Scaling:
        """The scaling this mode gives for ``reference`` (non-finite values are left out)."""
        if self.mode == "window":
            assert self.window is not None
            center, width = self.window
            return Scaling(offset=center - width / 2, scale=width, lo=center - width / 2, hi=center + width / 2)
        if self.mode == "dtype":
            return Scaling()
        values = np.asarray(reference, dtype=np.float64).ravel()
        values = values[np.isfinite(values)] if not np.isfinite(values).all() else values
        if values.size == 0:
            return Scaling()
        lo, hi = -math.inf, math.inf
        if self.mode == "percentile":
            lo, hi = (float(v) for v in np.percentile(values, self.percentile))
            values = np.clip(values, lo, hi)
        if self.mode == "minmax":
            low, high = float(values.min()), float(values.max())
            return Scaling(offset=low, scale=high - low if high > low else 1.0)
        return Scaling(offset=float(values.mean()), scale=max(float(values.std()), 1e-8), lo=lo, hi=hi)
