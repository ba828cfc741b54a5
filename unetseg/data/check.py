"""Dataset integrity check: every problem of an image/mask folder pair in one report.

Training reads lazily and stops at the first bad file; a user with 300 images wants the
whole list at once, as nnU-Net's ``verify_dataset_integrity`` gives it. The check pairs
files with the same rule as training (:func:`unetseg.data.pairing.match_masks` for folders,
the layout readers of :mod:`unetseg.data.layouts` for nnU-Net, Decathlon and CSV datasets),
reads every file with the same readers, and records instead of raising:

- **errors** (training would fail or learn from wrong labels): unreadable files, images
  without a mask, image/mask size or page-count mismatches, mask values outside
  ``data.label_map``, colour or fractional masks, NaN/inf intensities, unsupported channel
  counts, a split that cannot be made;
- **warnings**: entries of the folders that are not inputs (an unsupported file type, a
  sub-folder, a broken link: each named, nothing skipped silently), masks without an image, empty masks (no foreground), several non-zero mask
  values merged into one class without a label map, channel counts or dtypes that differ
  across images, constant images, classes that never occur.

Alongside: per-image size, channels, dtype, intensity range and class pixel counts, and the
class frequencies over the whole set. ``unetseg data check`` prints it; ``unetseg train``
runs it first and stops on an error.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from unetseg.config import DataConfig
from unetseg.data.channels import prepare_input, read_planes, sample_files
from unetseg.data.intensity import Normalization
from unetseg.data.io import (
    DataError,
    Sample,
    is_lossy,
    list_image_files,
    lossy_note,
    mask_classes,
    read_raw,
    skipped_entries,
    snap_lossy,
)
from unetseg.data.layouts import case_samples, labelled_cases, list_cases
from unetseg.data.pairing import expand_samples, match_masks
from unetseg.data.splits import split_samples
from unetseg.report.table import format_table


@dataclass(frozen=True)
class Problem:
    severity: str  # "error" or "warning"
    kind: str  # short name shown in the table, e.g. "no mask"
    path: str
    detail: str


@dataclass
class ImageStats:
    name: str
    image: str
    mask: str | None
    height: int
    width: int
    channels: int
    dtype: str
    min: float
    max: float
    class_pixels: list[int] | None = None  # pixels per class; None without a usable mask


@dataclass
class CheckReport:
    images: Path  # the image folder, or the dataset folder / manifest of another layout
    masks: Path
    num_classes: int
    problems: list[Problem] = field(default_factory=list)
    stats: list[ImageStats] = field(default_factory=list)
    layout: str = "folders"

    @property
    def title(self) -> str:
        if self.layout == "folders":
            return f"{self.images} (images) and {self.masks} (masks)"
        return f"{self.images} ({self.layout} layout)"

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "error"]

    @property
    def warnings(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "warning"]

    @property
    def fatal(self) -> bool:
        return bool(self.errors)

    def add(self, severity: str, kind: str, path: Path | str, detail: str) -> None:
        self.problems.append(Problem(severity, kind, str(path), detail))

    def class_frequencies(self) -> list[float]:
        """Fraction of all labelled pixels in each class."""
        counts = np.zeros(self.num_classes, dtype=np.int64)
        for stat in self.stats:
            if stat.class_pixels is not None:
                counts += np.asarray(stat.class_pixels, dtype=np.int64)
        total = counts.sum()
        return (counts / total).tolist() if total else [0.0] * self.num_classes

    def summary(self) -> str:
        return f"{len(self.errors)} error(s), {len(self.warnings)} warning(s) in {len(self.stats)} image(s)"

    def problem_table(self) -> str:
        rows = [
            [p.severity, p.kind, p.path, p.detail] for p in sorted(self.problems, key=lambda p: p.severity != "error")
        ]
        return format_table(["severity", "problem", "file", "detail"], rows)

    def format(self, per_image: bool = True) -> str:
        """The problems table, class frequencies and (optionally) one row per image."""
        lines = [f"data check of {self.title}: {self.summary()}"]
        lines += [self.problem_table()] if self.problems else ["  no problems found"]
        freqs = ", ".join(f"{k}: {f:.1%}" for k, f in enumerate(self.class_frequencies()))
        lines.append(f"class frequencies (fraction of labelled pixels): {freqs}")
        if per_image and self.stats:
            columns = ["name", "size (WxH)", "channels", "dtype", "min", "max"]
            columns += [f"class {k} %" for k in range(1, self.num_classes)]
            rows = []
            for s in self.stats:
                total = sum(s.class_pixels) if s.class_pixels else 0
                shares = [
                    round(100.0 * n / total, 1) if total else float("nan")
                    for n in (s.class_pixels or [0] * self.num_classes)[1:]
                ]
                rows.append([s.name, f"{s.width}x{s.height}", s.channels, s.dtype, s.min, s.max, *shares])
            lines += ["per image:", format_table(columns, rows)]
        return "\n".join(lines)

    def raise_if_fatal(self) -> None:
        """A DataError holding the problems table, for callers that must stop (``train``)."""
        if self.fatal:
            raise DataError(
                f"{self.format(per_image=False)}\nfix the errors above (unetseg data check lists them again)"
            )

    def to_dict(self) -> dict[str, Any]:
        return {
            "layout": self.layout,
            "images": str(self.images),
            "masks": str(self.masks),
            "fatal": self.fatal,
            "errors": len(self.errors),
            "warnings": len(self.warnings),
            "class_frequencies": self.class_frequencies(),
            "problems": [asdict(p) for p in self.problems],
            "per_image": [asdict(s) for s in self.stats],
        }


def _channels(raw: np.ndarray) -> int:
    return 1 if raw.ndim == 2 else int(raw.shape[2])


def _add_error(report: CheckReport, kind: str, sample: Sample, err: DataError) -> None:
    """Record ``err`` against the file its message names (one of the sample's channel files)."""
    message = str(err)
    path = next((p for p in sample_files(sample) if message.startswith(f"{p}: ")), sample.image)
    report.add("error", kind, path, message.removeprefix(f"{path}: "))


def _check_image(report: CheckReport, sample: Sample, data: DataConfig) -> ImageStats | None:
    try:
        planes = read_planes(sample)
    except DataError as err:
        _add_error(report, "unreadable", sample, err)
        return None
    raw = planes[0] if len(planes) == 1 else np.dstack(planes)
    values = raw.astype(np.float64) if raw.dtype == np.bool_ else raw
    finite = np.isfinite(values) if np.issubdtype(values.dtype, np.floating) else np.ones(values.shape, bool)
    if not finite.all():
        report.add("error", "non-finite", sample.image, f"{int((~finite).sum())} NaN or infinite value(s)")
    lo, hi = (float(values[finite].min()), float(values[finite].max())) if finite.any() else (float("nan"),) * 2
    if lo == hi:
        report.add("warning", "constant image", sample.image, f"every pixel is {lo:g}")
    if finite.all():
        try:
            prepare_input(planes, sample, data.channels, Normalization.of(data))
        except DataError as err:
            _add_error(report, "image", sample, err)
    return ImageStats(
        sample.name, str(sample.image), None, raw.shape[0], raw.shape[1], _channels(raw), str(raw.dtype), lo, hi
    )


def _check_mask(report: CheckReport, sample: Sample, stats: ImageStats, data: DataConfig) -> None:
    assert sample.mask is not None
    stats.mask = str(sample.mask)
    try:
        raw = read_raw(sample.mask, sample.page, sample.axis)
    except DataError as err:
        report.add("error", "unreadable", sample.mask, str(err).removeprefix(f"{sample.mask}: "))
        return
    if is_lossy(sample.mask):
        report.add("warning", "lossy mask", sample.mask, lossy_note(sample.mask, raw))
        raw = snap_lossy(raw)
    if raw.shape[:2] != (stats.height, stats.width):
        report.add(
            "error",
            "size mismatch",
            sample.mask,
            f"mask is {raw.shape[1]}x{raw.shape[0]} (WxH), its image {Path(stats.image).name} {stats.width}x{stats.height}",
        )
        return
    try:
        classes = mask_classes(raw, data.label_map, sample.mask)
    except DataError as err:
        report.add("error", "labels", sample.mask, str(err).removeprefix(f"{sample.mask}: "))
        return
    if data.label_map is None:
        nonzero = [v for v in np.unique(raw[..., 0] if raw.ndim == 3 else raw).tolist() if v != 0]
        if len(nonzero) > 1:
            report.add(
                "warning",
                "labels",
                sample.mask,
                f"values {nonzero[:6]} all become class 1: set data.label_map if they are different classes",
            )
    stats.class_pixels = np.bincount(classes.ravel(), minlength=report.num_classes).tolist()
    if stats.class_pixels[0] == classes.size:
        report.add("warning", "empty mask", sample.mask, "no foreground pixel")


def _samples(report: CheckReport, image: Path, mask: Path | None, axis: int) -> list[Sample]:
    """The 2D samples of one image file (pages of a stack, slices of a volume); none if the
    stack cannot be used."""
    try:
        return expand_samples(image, mask, axis)
    except DataError as err:  # an unreadable TIFF or volume, or image and mask stacks of different lengths
        report.add("error", "tiff", image, str(err).removeprefix(f"{image}: "))
        return []


def _compare_across_images(report: CheckReport, data: DataConfig) -> None:
    """Warn about the minority when channel counts or dtypes differ between images."""
    for attribute, why in (
        ("channels", f"converted to data.channels={data.channels}, but the set is mixed"),
        (
            "dtype",
            "scaled by a different range with normalize 'dtype'" if data.normalize == "dtype" else "mixed bit depths",
        ),
    ):
        counts = Counter(getattr(s, attribute) for s in report.stats)
        if len(counts) > 1:
            common = counts.most_common(1)[0][0]
            for s in report.stats:
                if getattr(s, attribute) != common:
                    report.add(
                        "warning",
                        attribute,
                        s.image,
                        f"{attribute} {getattr(s, attribute)} where most images have {common}: {why}",
                    )
    labelled = [s for s in report.stats if s.class_pixels is not None]
    if labelled:
        totals = np.sum([s.class_pixels for s in labelled], axis=0)
        for cls in np.flatnonzero(totals == 0).tolist():
            report.add("warning", "missing class", report.masks, f"class {cls} occurs in no mask")


def _check_samples(report: CheckReport, samples: list[Sample], data: DataConfig, usable: list[Sample]) -> None:
    """Read and check every sample, keeping those without an error of their own in ``usable``."""
    for sample in samples:
        errors_before = len(report.errors)
        stats = _check_image(report, sample, data)
        if stats is None:
            continue
        report.stats.append(stats)
        if sample.mask is not None:
            _check_mask(report, sample, stats, data)
            if len(report.errors) == errors_before:
                usable.append(sample)


def check_folders(images: Path, masks: Path, data: DataConfig) -> tuple[CheckReport, list[Sample]]:
    """Check one image/mask folder pair; returns the report and the usable pairs."""
    report = CheckReport(Path(images), Path(masks), data.num_classes)
    try:
        image_files, mask_files = list_image_files(images), list_image_files(masks)
    except DataError as err:
        report.add("error", "folder", str(err).split(": ", 1)[0], str(err).split(": ", 1)[-1])
        return report, []
    for folder in dict.fromkeys((Path(images), Path(masks))):
        for entry, why in skipped_entries(folder):
            report.add("warning", "skipped", entry, why)
    matched, orphans = match_masks(image_files, mask_files)
    for mask in orphans:
        report.add("warning", "no image", mask, f"no image in {images} has this mask's name")
    usable: list[Sample] = []
    for image, mask in matched:
        if mask is None:
            report.add("error", "no mask", image, f"no mask of this name in {masks}")
        _check_samples(report, _samples(report, image, mask, data.slice_axis), data, usable)
    _compare_across_images(report, data)
    return report, usable


def _compare_labels(report: CheckReport, labels: dict[int, str] | None, data: DataConfig, where: Path) -> None:
    """Warn when dataset.json's labels and data.label_map disagree (a class would be lost or merged)."""
    if not labels:
        return
    expected = {value: index for index, value in enumerate(sorted(labels))}
    configured = data.label_map if data.label_map is not None else ({0: 0, 1: 1} if sorted(labels) == [0, 1] else None)
    if configured != expected:
        report.add(
            "warning",
            "labels",
            where,
            f"dataset.json labels {dict(sorted(labels.items()))} read as classes {expected}, but data.label_map is {data.label_map}",
        )


def check_layout(data: DataConfig) -> tuple[CheckReport, list[Sample]]:
    """Check an nnU-Net, Decathlon or CSV dataset: the listing's problems, then every case."""
    assert data.root is not None
    report = CheckReport(Path(data.root), Path(data.root), data.num_classes, layout=data.layout)
    try:
        listing = list_cases(data)
    except DataError as err:  # no usable dataset.json or manifest at all
        path, _, detail = str(err).partition(": ")
        report.add("error", "dataset", path, detail)
        return report, []
    for path, what in listing.problems:
        report.add("error", "dataset", path, what)
    for path, what in listing.notes:
        report.add("warning", "outside", path, what)
    if listing.channel_names and len(listing.channel_names) != data.channels:
        report.add(
            "error",
            "channels",
            data.root,
            f"dataset.json names {len(listing.channel_names)} channel(s) {listing.channel_names}, data.channels is {data.channels}",
        )
    _compare_labels(report, listing.labels, data, data.root)
    usable: list[Sample] = []
    for case in labelled_cases(listing):
        try:
            samples = case_samples(case, data.slice_axis)
        except DataError as err:
            report.add("error", "stack", case.images[0], str(err).removeprefix(f"{case.images[0]}: "))
            continue
        _check_samples(report, samples, data, usable)
    _compare_across_images(report, data)
    return report, usable


def check_dataset(data: DataConfig) -> CheckReport:
    """Check the configured dataset (and the validation folders of a ``folders`` split), then
    whether the configured split can be made from the usable pairs."""
    if data.layout == "folders":
        assert data.images is not None and data.masks is not None
        report, samples = check_folders(data.images, data.masks, data)
    else:
        report, samples = check_layout(data)
    split = data.split
    if split.mode == "folders":
        assert split.val_images is not None and split.val_masks is not None
        val_report, _ = check_folders(split.val_images, split.val_masks, data)
        report.problems += val_report.problems
        report.stats += val_report.stats
    elif samples and not report.fatal:
        _check_split(report, samples, data)
    return report


def _check_split(report: CheckReport, samples: list[Sample], data: DataConfig) -> None:
    """Whether the configured split can be made from ``samples`` and leaves pairs to train on."""
    try:
        train, _ = split_samples(samples, data.split, data)
    except DataError as err:
        report.add("error", "split", data.source, str(err).removeprefix(f"{data.source}: "))
        return
    if not train:
        report.add("error", "split", data.source, "the split leaves no training pairs")


def check_plan(data: DataConfig, measured: list[Sample], samples: list[Sample]) -> CheckReport:
    """What ``data check`` says of a planned data section, from the samples ``init`` measured
    (every one of a small set) and the split of all of them: ``init`` refuses what training
    would refuse, in the same words, without reading a large set twice."""
    root = data.images if data.layout == "folders" else data.root
    report = CheckReport(Path(str(root)), Path(str(data.masks or root)), data.num_classes, layout=data.layout)
    usable: list[Sample] = []
    _check_samples(report, measured, data, usable)
    _compare_across_images(report, data)
    if data.layout in ("nnunet", "msd"):
        _compare_labels(report, list_cases(data).labels, data, Path(str(data.root)))
    if data.split.mode != "folders" and not report.fatal:
        _check_split(report, samples, data)
    return report
