"""Test-time corruptions for robustness sweeps: contrast loss, Gaussian noise, Gaussian blur.

Strength 0 is always the clean image. Images are float HxWxC as the readers return them
(intensities in [0, 1] for the default ``dtype`` scaling); noise is seeded so every variant
sees exactly the same corrupted images.
"""

from __future__ import annotations

import cv2
import numpy as np

CORRUPTIONS = ("contrast", "noise", "blur")


def corrupt(image: np.ndarray, kind: str, strength: float, seed: int = 0) -> np.ndarray:
    """``contrast``: blend towards the mean by ``strength`` (0..1); ``noise``: add Gaussian noise of
    standard deviation ``strength``; ``blur``: Gaussian blur of sigma ``strength`` pixels."""
    if strength == 0:
        return image
    if kind == "contrast":
        mean = image.mean(axis=(0, 1), keepdims=True)
        return (mean + (image - mean) * (1.0 - strength)).astype(np.float32)
    if kind == "noise":
        rng = np.random.default_rng(seed)
        return (image + rng.normal(0.0, strength, image.shape)).astype(np.float32)
    if kind == "blur":
        blurred = cv2.GaussianBlur(image, (0, 0), sigmaX=strength, borderType=cv2.BORDER_REFLECT_101)
        return blurred.reshape(image.shape).astype(np.float32)
    raise ValueError(f"unknown corruption {kind!r}; choose from {', '.join(CORRUPTIONS)}")
