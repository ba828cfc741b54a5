"""The torch Dataset of image/mask samples: decoding, caching, augmentation and border weights."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable

import numpy as np
import torch
from torch.utils.data import Dataset

from unetseg.config import DataConfig
from unetseg.data.channels import read_input
from unetseg.data.intensity import Normalization
from unetseg.data.io import DataError, Sample, read_mask
from unetseg.data.scaling import Resolution, rescale_image, rescale_mask

# The decoded pairs a dataset keeps may take this share of the memory free when it starts
# keeping them; the rest are decoded for every crop. data.cache is on by default, and a set of
# large images (or a data.scale raised by hand) would otherwise grow until the kernel kills the
# run mid-epoch, with no message and the run's last epochs lost.
CACHE_SHARE = 0.5


def available_memory() -> int | None:
    """Bytes free for new allocations (Linux's MemAvailable, else free pages), None if unknown."""
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):  # macOS and Windows lack the name
        return None


class SegmentationDataset(Dataset):
    """Pairs as tensors: image float32 (C, H, W), mask int64 (H, W).

    With ``length`` larger than the number of pairs, indices wrap around, so an epoch can
    hold many random crops of few large images. Decoded arrays are cached when asked, which
    makes the 30 ISBI slices a 30 MB in-memory dataset after the first epoch. ``resolution``
    resizes images and masks to the working resolution (``data.scale``, ``data.short_side``) for
    training; sets that are
    scored keep their own size, and the predictor shrinks them (:mod:`unetseg.data.scaling`).
    """

    def __init__(
        self,
        samples: list[Sample],
        data: DataConfig,
        transform: Callable[..., dict] | None = None,
        length: int | None = None,
        weights: Callable[[np.ndarray], np.ndarray] | None = None,
        resolution: Resolution | None = None,
    ) -> None:
        if not samples:
            raise DataError("the dataset is empty")
        self.samples = samples
        self.data = data
        self.transform = transform
        self.length = length or len(samples)
        self.normalization = Normalization.of(data)
        self.weights = weights
        self.resolution = resolution or Resolution()
        self._cache: dict[int, tuple[np.ndarray, np.ndarray | None]] = {}
        self.cache_bytes = 0
        self.cache_limit: int | None = None  # set when the first pair is kept
        self.not_cached: set[int] = set()  # pairs over the limit: decoded for every crop
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
        factor = self.resolution.factor(*image.shape[:2])
        if mask is not None:
            mask = rescale_mask(mask, factor)
        image = rescale_image(image, factor)
        if self.data.cache:
            self._keep(index, image, mask)
        return image, mask

    def _keep(self, index: int, image: np.ndarray, mask: np.ndarray | None) -> None:
        if self.cache_limit is None:
            free = available_memory()
            self.cache_limit = int(CACHE_SHARE * free) if free else sys.maxsize
        size = image.nbytes + (mask.nbytes if mask is not None else 0)
        if self.cache_bytes + size > self.cache_limit:
            self.not_cached.add(index)
            return
        self._cache[index] = (image, mask)
        self.cache_bytes += size

    def cache_note(self, what: str) -> str | None:
        """One line where some pairs could not be kept decoded, saying what it costs and what helps."""
        if not self.not_cached:
            return None
        kept = len(self.samples) - len(self.not_cached)
        return (
            f"note: data.cache keeps {kept} of {len(self.samples)} {what} pairs decoded "
            f"({self.cache_bytes / 2**30:.1f} GiB, {CACHE_SHARE:.0%} of the memory that was free); the other "
            f"{len(self.not_cached)} are read from disk for every crop, which is slower: a smaller data.scale or "
            "data.short_side keeps them all, data.cache: false keeps none"
        )

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
