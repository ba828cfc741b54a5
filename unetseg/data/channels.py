"""Reading a sample's input, including channels that come from several files (nnU-Net's
``case_0000``, ``case_0001``) or from a volume's 4th axis (the Decathlon's multi-modal scans).

Such channels are modalities (T1, T2, FLAIR; CT and PET), not the colours of one picture: each
is normalised on its own statistics (a whole volume's for a volume), and their count must be
exactly ``data.channels``, since there is no grey/colour conversion between a T2 and a FLAIR.
An ordinary image (grey, RGB, RGBA in one file) is prepared by
:func:`unetseg.data.io.prepare_image` as before: converted to 1 or 3 channels and normalised
as a whole.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from unetseg.data.intensity import Normalization
from unetseg.data.io import DataError, Sample, prepare_image, read_raw
from unetseg.data.volumes import volume_scaling


def sample_files(sample: Sample) -> tuple[Path, ...]:
    """The files a sample's channels are read from, channel file 0 (``image``) first."""
    return (sample.image, *sample.channel_files)


def read_planes(sample: Sample) -> list[np.ndarray]:
    """The stored 2D arrays (HxW or HxWxC, original dtype) of a sample's files, one per file;
    files of differing sizes are an error naming the file."""
    files = sample_files(sample)
    planes = [read_raw(path, sample.page, sample.axis) for path in files]
    height, width = planes[0].shape[:2]
    for path, plane in zip(files[1:], planes[1:]):
        if plane.shape[:2] != (height, width):
            raise DataError(
                f"{path}: channel file is {plane.shape[1]}x{plane.shape[0]} (WxH) but {files[0].name} "
                f"of the same case is {width}x{height}"
            )
    return planes


def is_multichannel(sample: Sample, planes: list[np.ndarray]) -> bool:
    """Whether the channels are modalities: several files, or the slice of a 4D volume."""
    return len(planes) > 1 or (sample.axis is not None and planes[0].ndim == 3)


def prepare_input(
    planes: list[np.ndarray], sample: Sample, channels: int, normalize: str | Normalization
) -> np.ndarray:
    """Float32 HxWxC model input from :func:`read_planes`' arrays."""
    normalization = Normalization.of(normalize)
    if not is_multichannel(sample, planes):
        scaling = volume_scaling(sample.image, normalization) if sample.axis is not None else None
        return prepare_image(planes[0], channels, normalization, sample.image, scaling)
    layers = []
    for path, plane in zip(sample_files(sample), planes):
        plane = plane if plane.ndim == 3 else plane[..., None]
        for channel in range(plane.shape[2]):
            scaling = None
            if sample.axis is not None:
                scaling = volume_scaling(path, normalization, channel if plane.shape[2] > 1 else None)
            layers.append(prepare_image(plane[..., channel], 1, normalization, path, scaling))
    image = np.concatenate(layers, axis=2)
    if image.shape[2] != channels:
        source = f"{len(planes)} channel files" if len(planes) > 1 else "its 4th axis"
        raise DataError(f"{sample.image}: {image.shape[2]} channels from {source}, but data.channels is {channels}")
    return image


def read_input(sample: Sample, channels: int, normalize: str | Normalization) -> np.ndarray:
    """The model input of one sample (float32 HxWxC), from one file or several."""
    return prepare_input(read_planes(sample), sample, channels, normalize)
