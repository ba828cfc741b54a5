"""Pictures for looking at a prediction: the image with the predicted contours drawn, or,
against a ground-truth mask, with false positives and false negatives coloured.

A mask file alone hides where a model fails; an overlay shows it at a glance (a membrane
gap, a merged cell). Colours are from the Okabe-Ito palette, which stays distinguishable
with the common colour-vision deficiencies.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from unetseg.data.io import write_array

RGB = tuple[int, int, int]
# Okabe-Ito: yellow, sky blue, bluish green, reddish purple (one per foreground class).
CONTOUR_COLOURS: tuple[RGB, ...] = ((240, 228, 66), (86, 180, 233), (0, 158, 115), (204, 121, 167))
FALSE_POSITIVE: RGB = (230, 159, 0)  # orange: predicted foreground where the truth has none
FALSE_NEGATIVE: RGB = (0, 114, 178)  # blue: foreground the prediction missed


def display_image(image: np.ndarray) -> np.ndarray:
    """8-bit RGB (H, W, 3) of a model input (H, W, C float, any normalisation), min-max scaled:
    grey from the first channel of a one- or two-channel input, the first three as RGB otherwise
    (a multi-modal scan shows its first modalities)."""
    lo, hi = float(image.min()), float(image.max())
    scaled = (image - lo) / (hi - lo) if hi > lo else np.zeros_like(image)
    rgb = np.repeat(scaled[..., :1], 3, axis=2) if scaled.shape[2] < 3 else scaled[..., :3]
    return np.ascontiguousarray(np.round(rgb * 255), dtype=np.uint8)


def contour_overlay(image: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """``image`` (8-bit RGB) with the one-pixel inner outline of every foreground class's regions.

    The outline is the region minus its erosion with the image border replicated, so a region
    cut by the image border is not outlined along it (``cv2.findContours`` would frame the image).
    """
    out = image.copy()
    kernel = np.ones((3, 3), np.uint8)
    for cls in range(1, int(classes.max(initial=0)) + 1):
        region = (classes == cls).astype(np.uint8)
        inner = cv2.erode(region, kernel, borderType=cv2.BORDER_REPLICATE)
        out[(region - inner) > 0] = CONTOUR_COLOURS[(cls - 1) % len(CONTOUR_COLOURS)]
    return out


def error_overlay(image: np.ndarray, pred: np.ndarray, truth: np.ndarray, alpha: float = 0.6) -> np.ndarray:
    """``image`` (8-bit RGB) with wrong pixels tinted: a wrong pixel predicted as foreground is
    a false positive, one predicted as background (class 0) a false negative. With several
    classes, a pixel given the wrong foreground class counts as a false positive."""
    if pred.shape != truth.shape:
        raise ValueError(f"prediction is {pred.shape} but the ground truth is {truth.shape}")
    out = image.astype(np.float32)
    wrong = pred != truth
    for where, colour in ((wrong & (pred != 0), FALSE_POSITIVE), (wrong & (pred == 0), FALSE_NEGATIVE)):
        out[where] = (1 - alpha) * out[where] + alpha * np.array(colour, dtype=np.float32)
    return np.round(out).astype(np.uint8)


def write_overlay(path: Path, rgb: np.ndarray) -> None:
    """Write an 8-bit RGB picture (OpenCV writes BGR)."""
    write_array(path, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
