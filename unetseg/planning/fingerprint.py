"""A dataset's fingerprint: what ``unetseg init`` plans from (as nnU-Net plans from its
``dataset_fingerprint.json``).

It reads what ``unetseg data check`` reads (sizes, channels, dtypes, intensity ranges, mask
values and class frequencies) on up to :data:`MAX_PLANES` 2D samples spread evenly over the
dataset, and adds the shape of the labelled structure (:mod:`unetseg.planning.shapes`), both
for the non-zero mask values and, for two-valued masks, for value 0, since some datasets draw
the structure to segment as 0 (ISBI's membranes between white cells).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from unetseg.config import DataConfig
from unetseg.data.channels import is_multichannel, read_planes
from unetseg.data.io import Sample, is_lossy, read_mask_raw
from unetseg.data.layouts import labelled_samples, list_cases
from unetseg.data.splits import case_of
from unetseg.data.volumes import voxel_spacing
from unetseg.planning.shapes import ShapeSummary, measure_shape, summarise

MAX_PLANES = 48  # enough for stable medians; reading and skeletonising more only costs time
PIXELS_PER_PLANE = 20_000  # intensity values sampled from each plane for the percentiles
SPACING_CASES = 8
SHAPE_SIDE = 512  # larger masks are pooled down to this side for their shape (skeletons of 20 MP masks took minutes)


@dataclass
class Fingerprint:
    data: DataConfig  # the dataset as detected (layout, paths, the metadata's channels and labels)
    cases: int
    planes: int
    measured: int
    volumes: bool
    sizes: list[tuple[int, int]]  # (H, W) of the measured planes
    channels: int  # input channels: the metadata's count, the files' own, or 3 when any image is in colour
    colour: int  # measured images in colour (RGB with differing channels)
    multichannel: bool  # channels from several files or a 4th axis (modalities)
    dtypes: dict[str, int]
    value_range: tuple[float, float]
    percentiles: tuple[float, float]  # 0.5 and 99.5 % of the pooled intensities
    foreground_percentiles: tuple[float, float] | None  # the same over labelled (non-zero) pixels
    mean_spread: float  # spread of the images' mean intensity, relative to the pooled range
    mask_values: dict[int, float]  # raw mask value -> share of the measured pixels
    values_per_mask: float
    nonzero: ShapeSummary | None  # the shape of the non-zero mask values
    zero: ShapeSummary | None  # the shape of value 0 (two-valued masks only)
    spacing: tuple[float, float, float] | None = None  # median voxel size of the volumes (mm)
    channel_names: list[str] | None = None
    labels: dict[int, str] | None = None  # mask value -> class name, from dataset.json
    lossy_masks: int = 0  # measured masks stored as JPEG, read with their halo snapped
    samples: list[Sample] = field(default_factory=list, repr=False)  # every labelled 2D sample
    measured_samples: list[Sample] = field(default_factory=list, repr=False)  # those read for the fingerprint

    @property
    def median_size(self) -> tuple[int, int]:
        return int(np.median([h for h, _ in self.sizes])), int(np.median([w for _, w in self.sizes]))

    @property
    def min_side(self) -> int:
        return min(min(size) for size in self.sizes)

    @property
    def max_pixels(self) -> int:
        return max(h * w for h, w in self.sizes)

    def decoded_bytes(self) -> float:
        """What caching every decoded plane takes: float32 image, int64 mask, float32 weights."""
        mean_pixels = float(np.mean([h * w for h, w in self.sizes]))
        return self.planes * mean_pixels * (4 * self.channels + 8 + 4)


def _pick(samples: list[Sample], count: int) -> list[Sample]:
    if len(samples) <= count:
        return samples
    return [samples[i] for i in np.linspace(0, len(samples) - 1, count).round().astype(int)]


def _is_colour(raw: np.ndarray) -> bool:
    if raw.ndim != 3 or raw.shape[2] < 3:
        return False
    rgb = raw[..., :3]
    return not ((rgb == rgb[..., :1]).all())


def _pooled(structure: np.ndarray, side: int) -> tuple[np.ndarray, int]:
    """(``structure`` pooled by an integer factor until its long side is at most ``side``, the
    factor): a block is set where any of its pixels is, so thin lines survive as lines; the
    shape's lengths are then scaled back by the factor. Init takes seconds on any image size."""
    factor = -(-max(structure.shape) // side)
    if factor == 1:
        return structure, 1
    h, w = structure.shape
    padded = np.zeros((-(-h // factor) * factor, -(-w // factor) * factor), bool)
    padded[:h, :w] = structure
    blocks = padded.reshape(padded.shape[0] // factor, factor, padded.shape[1] // factor, factor)
    return blocks.any(axis=(1, 3)), factor


def _sample_values(values: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
    values = values[np.isfinite(values)] if np.issubdtype(values.dtype, np.floating) else values
    if values.size > count:  # drawn with replacement: choice without it permutes the whole image
        values = values[rng.integers(0, values.size, count)]
    return values.astype(np.float64)


def _value_counts(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(values, counts) of a mask; a counting pass for small non-negative labels (np.unique sorts
    the whole mask: seconds for a 20 MP one)."""
    if mask.size and mask.min() >= 0 and mask.max() < 2**16:
        counts = np.bincount(mask.ravel())
        found = np.flatnonzero(counts)
        return found, counts[found]
    return np.unique(mask, return_counts=True)


@dataclass
class _Tally:
    """What :func:`measure` gathers plane by plane, before it is summed up."""

    rng: np.random.Generator
    sizes: list[tuple[int, int]] = field(default_factory=list)
    dtypes: Counter[str] = field(default_factory=Counter)
    means: list[float] = field(default_factory=list)
    pooled: list[np.ndarray] = field(default_factory=list)
    foreground: list[np.ndarray] = field(default_factory=list)
    values: Counter[int] = field(default_factory=Counter)
    distinct: list[int] = field(default_factory=list)
    nonzero_shapes: list[Any] = field(default_factory=list)
    zero_shapes: list[Any] = field(default_factory=list)
    colour: int = 0
    channels: int = 0
    multichannel: bool = False
    lossy: int = 0

    def add(self, sample: Sample) -> None:
        planes = read_planes(sample)
        raw = planes[0] if len(planes) == 1 else np.dstack(planes)
        self.multichannel |= is_multichannel(sample, planes)
        self.channels = max(self.channels, 1 if raw.ndim == 2 else raw.shape[2])
        self.colour += (not is_multichannel(sample, planes)) and _is_colour(raw)
        mask = read_mask_raw(sample.mask, sample.page, sample.axis)
        self.lossy += is_lossy(sample.mask)
        mask = (mask[..., 0] if mask.ndim == 3 else mask).astype(np.int64)
        self.sizes.append(raw.shape[:2])
        self.dtypes[str(planes[0].dtype)] += 1
        intensities = raw.astype(np.float64) if raw.dtype == np.bool_ else raw
        self.pooled.append(_sample_values(np.asarray(intensities).ravel(), PIXELS_PER_PLANE, self.rng))
        self.means.append(float(self.pooled[-1].mean()) if self.pooled[-1].size else 0.0)
        labelled = (mask != 0) if raw.ndim == 2 else np.repeat((mask != 0)[..., None], raw.shape[2], axis=2)
        self.foreground.append(_sample_values(np.asarray(intensities)[labelled], PIXELS_PER_PLANE // 4, self.rng))
        found, counts = _value_counts(mask)
        self.values.update(dict(zip(found.tolist(), counts.tolist())))
        self.distinct.append(len(found))
        self.nonzero_shapes.append(measure_shape(*_pooled(mask != 0, SHAPE_SIDE)))
        self.zero_shapes.append(measure_shape(*_pooled(mask == 0, SHAPE_SIDE)))


def measure(data: DataConfig, max_planes: int = MAX_PLANES) -> Fingerprint:
    """The fingerprint of the labelled samples ``data`` describes (a broken dataset raises the
    first problem, as training would; ``unetseg data check`` lists them all)."""
    samples = labelled_samples(data)
    picked = _pick(samples, max_planes)
    tally = _Tally(np.random.default_rng(0))
    for sample in picked:
        tally.add(sample)
    pooled, foreground, values, means = tally.pooled, tally.foreground, tally.values, tally.means
    channels, colour, multichannel = tally.channels, tally.colour, tally.multichannel
    all_values = np.concatenate(pooled) if pooled else np.zeros(1)
    fg_values = np.concatenate(foreground) if foreground else np.zeros(0)
    low, high = (float(v) for v in np.percentile(all_values, (0.5, 99.5)))
    total = sum(values.values())
    two_valued = len(values) == 2 and 0 in values
    listing = list_cases(data) if data.layout in ("nnunet", "msd") else None
    volumes = any(s.axis is not None for s in samples)
    return Fingerprint(
        data=data,
        cases=len(dict.fromkeys(case_of(s) for s in samples)),
        planes=len(samples),
        measured=len(picked),
        volumes=volumes,
        sizes=tally.sizes,
        channels=data.channels
        if data.layout in ("nnunet", "msd")
        else (channels if multichannel else 3 if colour else 1),
        colour=colour,
        multichannel=multichannel,
        dtypes=dict(tally.dtypes),
        value_range=(float(all_values.min()), float(all_values.max())),
        percentiles=(low, high),
        foreground_percentiles=tuple(float(v) for v in np.percentile(fg_values, (0.5, 99.5)))
        if fg_values.size
        else None,
        mean_spread=float(np.std(means) / (high - low)) if high > low else 0.0,
        mask_values={k: v / total for k, v in sorted(values.items())},
        values_per_mask=float(np.median(tally.distinct)),
        nonzero=summarise(tally.nonzero_shapes),
        zero=summarise(tally.zero_shapes) if two_valued else None,
        spacing=_spacing(samples) if volumes else None,
        channel_names=listing.channel_names if listing else None,
        labels=listing.labels if listing else None,
        lossy_masks=tally.lossy,
        samples=samples,
        measured_samples=picked,
    )


def _spacing(samples: list[Sample]) -> tuple[float, float, float] | None:
    files = list(dict.fromkeys(s.image for s in samples if s.axis is not None))[:SPACING_CASES]
    spacings = [voxel_spacing(f) for f in files]
    return tuple(float(v) for v in np.median(spacings, axis=0)) if spacings else None  # type: ignore[return-value]
