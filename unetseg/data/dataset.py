"""Image/mask pairs matched by name, train/validation splits, and the torch Dataset."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from unetseg.config import DataConfig, SplitConfig
from unetseg.data.channels import read_input
from unetseg.data.intensity import Normalization
from unetseg.data.io import DEFAULT_SLICE_AXIS, DataError, Sample, expand_stacks, file_stem, list_image_files, read_mask
from unetseg.data.splits import CASE_MODES, split_by_case
from unetseg.data.volumes import is_dicom_series, is_volume

# Mask names may carry one of these suffixes after the image's stem (cell_01.png / cell_01_mask.png);
# nnU-Net-style images carry a channel suffix (case_0000.png / case.png).
MASK_SUFFIXES = ("", "_mask", "_masks", "_label", "_labels", "_seg", "_gt")
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


def split_samples(samples: list[Sample], split: SplitConfig, data: DataConfig) -> tuple[list[Sample], list[Sample]]:
    """Divide pairs into (train, validation) as the split config says."""
    if split.mode in CASE_MODES:
        return split_by_case(samples, split, data)
    if split.mode == "folders":
        assert split.val_images is not None and split.val_masks is not None
        return samples, find_pairs(split.val_images, split.val_masks, data.slice_axis)
    if split.mode == "names":
        names = set(split.val_names)
        unknown = names - {s.name for s in samples}
        if unknown:
            raise DataError(f"data.split.val_names: no pair named {sorted(unknown)[:5]} in {data.source}")
        return [s for s in samples if s.name not in names], [s for s in samples if s.name in names]
    if len(samples) < split.folds:
        raise DataError(f"{data.source}: {len(samples)} pairs cannot be cut into {split.folds} folds")
    bounds = np.linspace(0, len(samples), split.folds + 1).round().astype(int)
    fold = split.fold % split.folds
    lo, hi = bounds[fold], bounds[fold + 1]
    return samples[:lo] + samples[hi:], samples[lo:hi]


class SegmentationDataset(Dataset):
    """Pairs as tensors: image float32 (C, H, W), mask int64 (H, W).

    With ``length`` larger than the number of pairs, indices wrap around, so an epoch can
    hold many random crops of few large images. Decoded arrays are cached when asked, which
    makes the 30 ISBI slices a 30 MB in-memory dataset after the first epoch.
    """

    def __init__(
        self,
        samples: list[Sample],
        data: DataConfig,
        transform: Callable[..., dict] | None = None,
        length: int | None = None,
        weights: Callable[[np.ndarray], np.ndarray] | None = None,
    ) -> None:
        if not samples:
            raise DataError("the dataset is empty")
        self.samples = samples
        self.data = data
        self.transform = transform
        self.length = length or len(samples)
        self.normalization = Normalization.of(data)
        self.weights = weights
        self._cache: dict[int, tuple[np.ndarray, np.ndarray | None]] = {}
        self._weight_cache: dict[int, np.ndarray] = {}

    def __len__(self) -> int:
        return self.length

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray | None]:
        """The decoded (image HxWxC float32, mask HxW int64 or None) of pair ``index``."""
        if index in self._cache:
            return self._cache[index]
        sample = self.samples[index]
        image = read_input(sample, self.data.channels, self.normalization)
        mask = None
        if sample.mask is not None:
            mask = read_mask(sample.mask, self.data.label_map, sample.page, sample.axis)
            if mask.shape != image.shape[:2]:
                raise DataError(
                    f"{sample.mask}: mask is {mask.shape[1]}x{mask.shape[0]} (WxH) but its image "
                    f"{sample.image} is {image.shape[1]}x{image.shape[0]}"
                )
        if self.data.cache:
            self._cache[index] = (image, mask)
        return image, mask

    def reseed(self, seed: int) -> None:
        """Reset the augmentation RNG (per epoch, per worker) so runs and resumes repeat exactly."""
        if self.transform is not None and hasattr(self.transform, "set_random_seed"):
            self.transform.set_random_seed(seed % 2**32)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor | str]:
        pair = index % len(self.samples)
        image, mask = self.load(pair)
        targets = {"image": image}
        if mask is not None:
            targets["mask"] = mask
            if self.weights is not None:
                targets["weight"] = self.weight_map(pair, mask)
        if self.transform is not None:
            targets = self.transform(**targets)
        image, mask, weight = targets["image"], targets.get("mask"), targets.get("weight")
        item: dict[str, torch.Tensor | str] = {
            "image": torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))),
            "name": self.samples[pair].name,
        }
        if mask is not None:
            item["mask"] = torch.from_numpy(np.ascontiguousarray(mask, dtype=np.int64))
        if weight is not None:
            item["weight"] = torch.from_numpy(np.ascontiguousarray(weight, dtype=np.float32))
        return item

    def weight_map(self, index: int, mask: np.ndarray) -> np.ndarray:
        """The loss weights of pair ``index`` (from its un-augmented mask), computed once."""
        if index not in self._weight_cache:
            assert self.weights is not None
            self._weight_cache[index] = self.weights(mask)
        return self._weight_cache[index]


def worker_init(worker_id: int) -> None:
    """DataLoader worker hook: seed the worker's augmentations from torch's per-worker seed."""
    info = torch.utils.data.get_worker_info()
    if info is not None and isinstance(info.dataset, SegmentationDataset):
        info.dataset.reseed(torch.initial_seed())
