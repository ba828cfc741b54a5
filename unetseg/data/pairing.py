"""Which image goes with which mask, by name: the one pairing rule that training, prediction
overlays and ``data check`` share (``_mask``, ``_seg``, ... suffixes and nnU-Net's ``_0000``
channel suffix are ignored when matching), and the expansion of stacks and volumes into
one sample per plane."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from unetseg.data.io import DEFAULT_SLICE_AXIS, DataError, Sample, expand_stacks, file_stem, list_image_files
from unetseg.data.volumes import is_dicom_series, is_volume

# Mask names may carry one of these suffixes after the image's stem (cell_01.png / cell_01_mask.png;
# ISIC's ISIC_0000000_segmentation.png, GlaS's testA_1_anno.bmp); nnU-Net-style images carry a
# channel suffix (case_0000.png / case.png).
MASK_SUFFIXES = (
    "",
    "_mask",
    "_masks",
    "_label",
    "_labels",
    "_seg",
    "_segmentation",
    "_gt",
    "_anno",
    "_annotation",
)
IMAGE_SUFFIXES = ("_0000",)


def _mask_index(mask_files: list[Path]) -> dict[str, Path]:
    index: dict[str, Path] = {}
    for path in mask_files:
        stem = file_stem(path)
        for suffix in sorted(MASK_SUFFIXES, key=len, reverse=True):
            if suffix and stem.endswith(suffix):
                index.setdefault(stem[: -len(suffix)], path)
        index[stem] = path  # an exact name always wins
    return index


def _image_stem(path: Path) -> str:
    stem = file_stem(path)
    for suffix in IMAGE_SUFFIXES:
        if stem.endswith(suffix):
            return stem[: -len(suffix)]
    return stem


def expand_samples(image: Path, mask: Path | None, axis: int = DEFAULT_SLICE_AXIS) -> list[Sample]:
    """The 2D samples of an image file and its mask: one, one per page of a TIFF stack, or one
    per slice of a volume along ``axis``."""
    pages = expand_stacks(image, axis)
    if pages[0][1] is None:
        return [Sample(_image_stem(image), image, mask, None)]
    volume_axis = axis if is_volume(image) else None
    if mask is not None:
        mask_pages = expand_stacks(mask, axis)
        if len(mask_pages) != len(pages):
            what = "pages" if volume_axis is None else f"slices along axis {axis}"
            raise DataError(f"{image} has {len(pages)} {what} but its mask {mask} has {len(mask_pages)}")
    return [Sample(f"{_image_stem(image)}_{page:04d}", image, mask, page, volume_axis) for _, page in pages]


def _lookup(index: dict[str, Path], image: Path) -> Path | None:
    return index.get(file_stem(image)) or index.get(_image_stem(image))


def match_masks(image_files: list[Path], mask_files: list[Path]) -> tuple[list[tuple[Path, Path | None]], list[Path]]:
    """Each image file with its mask file (None without one), and the masks no image claims.

    The one pairing rule, shared by training (:func:`find_pairs`), prediction overlays
    (:func:`attach_masks`) and the dataset check, which reports what does not pair.
    """
    index = _mask_index(mask_files)
    matched = [(image, _lookup(index, image)) for image in image_files]
    claimed = {mask for _, mask in matched}
    return matched, [mask for mask in mask_files if mask not in claimed]


def find_pairs(images: Path, masks: Path, axis: int = DEFAULT_SLICE_AXIS) -> list[Sample]:
    """Every image with its mask, naturally sorted; images without a mask are an error.
    Volumes are cut into slices along ``axis``."""
    matched, _ = match_masks(list_image_files(images), list_image_files(masks))
    missing = [image.name for image, mask in matched if mask is None]
    if missing:
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise DataError(f"{len(missing)} image(s) in {images} have no mask in {masks}: {shown}")
    return [sample for image, mask in matched for sample in expand_samples(image, mask, axis)]


def attach_masks(samples: list[Sample], masks: Path) -> list[Sample]:
    """Prediction inputs with their ground-truth mask from ``masks`` where one pairs by name."""
    index = _mask_index(list_image_files(masks))
    return [replace(sample, mask=_lookup(index, sample.image)) for sample in samples]


def find_images(path: Path, axis: int = DEFAULT_SLICE_AXIS) -> list[Sample]:
    """Unlabelled inputs for prediction: one file (or one DICOM series folder), or every image
    and volume in a folder; volumes are cut into slices along ``axis``."""
    path = Path(path)
    files = [path] if path.is_file() or is_dicom_series(path) else list_image_files(path)
    return [sample for file in files for sample in _expand_unlabelled(file, axis)]


def _expand_unlabelled(file: Path, axis: int) -> list[Sample]:
    try:
        return expand_samples(file, None, axis)
    except DataError:  # a broken TIFF or volume: keep it, so predict reports it by name and goes on
        return [Sample(_image_stem(file), file, None, None)]
