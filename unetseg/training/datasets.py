"""The training and validation datasets of a config, decoded before the first step: a broken
file fails before any step, named, not mid-epoch, and DataLoader workers fork with the caches
(and border-weight maps) already filled."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from pathlib import Path

from unetseg.config import Config, ConfigError
from unetseg.data import SegmentationDataset
from unetseg.data.layouts import split_data
from unetseg.data.scaling import Resolution
from unetseg.data.weights import border_weights
from unetseg.training.errors import TrainingError


def build_datasets(cfg: Config) -> tuple[SegmentationDataset, SegmentationDataset | None]:
    """(augmented training set of ``train.samples_per_epoch`` crops, un-augmented validation set),
    decoded."""
    train_ds, val_ds = open_datasets(cfg)
    decode_datasets(cfg, train_ds, val_ds)
    return train_ds, val_ds


def open_datasets(cfg: Config) -> tuple[SegmentationDataset, SegmentationDataset | None]:
    """The datasets of the split, nothing decoded and no augmentation yet: enough for the
    trainer's first line and first guess of the duration, which a newcomer should see within
    seconds; albumentations' import and the decoding come after (:func:`decode_datasets`)."""
    data, train = cfg.data, cfg.train
    train_pairs, val_pairs = split_data(data)
    if not train_pairs:
        raise TrainingError("the split leaves no training pairs")
    border = train.loss.border_weight
    weights = partial(border_weights, w0=border.w0, sigma=border.sigma, objects=border.objects) if border else None
    train_ds = SegmentationDataset(train_pairs, data, None, train.samples_per_epoch, weights, Resolution.of(data))
    return train_ds, SegmentationDataset(val_pairs, data) if val_pairs else None


def decode_datasets(
    cfg: Config,
    train_ds: SegmentationDataset,
    val_ds: SegmentationDataset | None,
    log: Callable[[str], None] | None = None,
) -> None:
    """Give the training set its augmentation, decode every pair and its border weights, and
    check the crop against the image sizes: all before the run writes anything. ``log`` hears
    of pairs too many to keep decoded in memory."""
    from unetseg.data.transforms import build_train_transform  # albumentations: about a second to import

    train_ds.transform = build_train_transform(cfg.augment, cfg.seed)
    sizes: dict[tuple[int, ...], Path] = {}  # each image size, with the first image of that size
    for i, sample in enumerate(train_ds.samples):
        sizes.setdefault(train_ds.load(i)[0].shape[:2], sample.image)
    for i in range(len(val_ds.samples) if val_ds else 0):
        val_ds.load(i)
    check_sizes(cfg, sizes)
    for i in range(len(train_ds.samples)):
        _, mask = train_ds.load(i)
        if train_ds.weights is not None and mask is not None:
            train_ds.weight_map(i, mask)
    notes = [ds.cache_note(what) for ds, what in ((train_ds, "training"), (val_ds, "validation")) if ds is not None]
    for note in filter(None, notes):
        if log is not None:
            log(note)


def check_sizes(cfg: Config, sizes: dict[tuple[int, ...], Path]) -> None:
    """The crop against the training image sizes, before anything of the run is written: a
    crop larger than every image is nearly all padding, and a huge one (crop_size=100000)
    asked for a 40 GB batch in the first step. Without a crop, batches need one image size."""
    crop = cfg.augment.crop_size
    largest, path = max(sizes.items(), key=lambda item: max(item[0]))
    if crop is not None and crop > max(largest):
        raise ConfigError(
            f"augment.crop_size {crop} is larger than every training image (the largest, {path}, is "
            f"{largest[1]}x{largest[0]}, WxH): a crop would be mostly padding. Set augment.crop_size to at most "
            f"{max(largest)}, or null to train on whole images"
        )
    if crop is None and cfg.train.batch_size > 1 and len(sizes) > 1:
        (first, a), (second, b) = list(sizes.items())[:2]
        raise TrainingError(
            f"training images differ in size ({a} is {first[1]}x{first[0]}, {b} is {second[1]}x{second[0]}, WxH): "
            "set augment.crop_size or train.batch_size: 1"
        )
