"""Data: readers (PNG/TIFF/stacks), pairing and splits, datasets, augmentation.

``build_train_transform`` is imported on first use: albumentations takes about a second to
import, and ``unetseg train`` should say what it faces before that.
"""

from typing import Any

from unetseg.data.dataset import SegmentationDataset, worker_init
from unetseg.data.io import DataError, Sample, read_image, read_mask, write_array, write_mask
from unetseg.data.pairing import attach_masks, find_images, find_pairs, match_masks
from unetseg.data.splits import split_samples

__all__ = [
    "DataError",
    "Sample",
    "SegmentationDataset",
    "attach_masks",
    "build_train_transform",
    "find_images",
    "find_pairs",
    "match_masks",
    "read_image",
    "read_mask",
    "split_samples",
    "worker_init",
    "write_array",
    "write_mask",
]


def __getattr__(name: str) -> Any:
    if name == "build_train_transform":
        from unetseg.data.transforms import build_train_transform

        return build_train_transform
    raise AttributeError(f"module 'unetseg.data' has no attribute {name!r}")
