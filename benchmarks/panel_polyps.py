"""A second made panel dataset of the framed kind (one large object per photograph), so that
rule 18 and 19 are measured on two kinds, not tuned to one: colour endoscopy frames with one
polyp each, drawn after colonoscopy archives (Kvasir-SEG, CVC-ClinicDB).

What differs from the lesion photographs (``panel_lesions.py``), on purpose:

- the polyp is not darker than what surrounds it: it is told from the mucosa by the shading of a
  dome under the endoscope's light (bright on one side, a shadow on the other), a slightly
  different colour and a finer surface texture, so its outline is weak on many images;
- pink-red mucosa with folds, branching vessels and specular highlights (on the polyp too);
- the endoscope's black border (octagonal or round) and, on some frames, an overlay box in a
  corner, as archives keep them;
- landscape frames of 4:3, 5:4 and 16:9, 576-1920 px on the long side, saved as JPEG;
- the polyp covers 3-30 % of the frame.

Synthetic and deterministic, like the lesions: a stand-in for a kind of data, not a benchmark.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
from panel_lesions import _outline, _smooth_noise
from panel_lesions import make as make_framed

ASPECTS = (4 / 3, 4 / 3, 5 / 4, 16 / 9)


def _mucosa(rng: np.random.Generator, shape: tuple[int, int], zoom: float) -> np.ndarray:
    """Pink-red tissue (BGR, float 0-255) with folds and vessels."""
    tone = np.array([rng.uniform(60, 110), rng.uniform(70, 125), rng.uniform(170, 235)])
    folds = 1 + 0.3 * _smooth_noise(rng, shape, max(shape) // 5)
    grain = 1 + 0.04 * _smooth_noise(rng, shape, round(8 * zoom)) + rng.normal(0, 0.02, shape)
    tissue = tone * (folds * grain)[..., None]
    h, w = shape
    for _ in range(int(rng.integers(4, 20))):
        heading = rng.uniform(0, 2 * np.pi) + np.cumsum(rng.normal(0, 0.25, 40))
        steps = 10 * zoom * np.stack([np.cos(heading), np.sin(heading)], 1)
        points = np.cumsum(steps, axis=0) + rng.uniform(0, 1, 2) * [w, h]
        colour = tuple(float(c) for c in tone * rng.uniform(0.45, 0.7) * np.array([0.8, 0.7, 1.0]))
        cv2.polylines(tissue, [np.round(points).astype(np.int32)], False, colour, max(1, round(2 * zoom)), cv2.LINE_AA)
    return tissue


def _polyp(rng: np.random.Generator, mask: np.ndarray, tissue: np.ndarray, zoom: float) -> np.ndarray:
    """The polyp's colour at every pixel: a lit dome of a nearby tone with a finer texture."""
    height = cv2.distanceTransform(mask, cv2.DIST_L2, 5)
    height = np.sqrt(height / (height.max() + 1e-6))
    gy, gx = np.gradient(cv2.GaussianBlur(height, (0, 0), 3 * zoom))
    angle = rng.uniform(0, 2 * np.pi)
    lit = gx * np.cos(angle) + gy * np.sin(angle)
    lit = 1 + rng.uniform(0.3, 0.8) * lit / (np.abs(lit).max() + 1e-6)
    tone = tissue.mean(axis=(0, 1)) * rng.uniform(0.88, 1.12, 3)
    texture = 1 + 0.12 * _smooth_noise(rng, mask.shape, round(5 * zoom))
    return tone * (lit * texture)[..., None]


def _highlights(rng: np.random.Generator, image: np.ndarray, zoom: float) -> None:
    h, w = image.shape[:2]
    for _ in range(int(rng.integers(2, 14))):
        centre = (int(rng.integers(0, w)), int(rng.integers(0, h)))
        axes = (round(rng.integers(2, 14) * zoom), round(rng.integers(2, 8) * zoom))
        cv2.ellipse(image, centre, axes, float(rng.uniform(0, 180)), 0, 360, (250, 250, 250), -1, cv2.LINE_AA)


def _scope(rng: np.random.Generator, image: np.ndarray, zoom: float) -> tuple[np.ndarray, np.ndarray]:
    """The endoscope's black border and, on some frames, an overlay box in the lower left; and
    where the frame shows tissue (the mask is cut to it)."""
    h, w = image.shape[:2]
    field = np.zeros((h, w), np.uint8)
    if rng.random() < 0.5:
        cut = round(min(h, w) * rng.uniform(0.08, 0.2))
        corners = [(cut, 0), (w - cut, 0), (w, cut), (w, h - cut), (w - cut, h), (cut, h), (0, h - cut), (0, cut)]
        cv2.fillPoly(field, [np.array(corners, np.int32)], 1)
    else:
        cv2.ellipse(field, (w // 2, h // 2), (round(w * 0.56), round(h * 0.56)), 0, 0, 360, 1, -1)
    image = image * cv2.GaussianBlur(field.astype(np.float32), (0, 0), 2 * zoom)[..., None]
    if rng.random() < 0.4:
        box = (round(w * rng.uniform(0.12, 0.2)), round(h * rng.uniform(0.12, 0.25)))
        colour = (40.0, 140.0, 40.0) if rng.random() < 0.5 else (90.0, 90.0, 90.0)
        cv2.rectangle(image, (0, h - box[1]), (box[0], h), colour, -1)
        field[h - box[1] :, : box[0]] = 0
    return image, field


def draw(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """One endoscopy frame (BGR uint8) and its polyp mask (0/255)."""
    rng = np.random.default_rng(seed)
    long_side = int(np.exp(rng.uniform(np.log(576), np.log(1920))))
    shape = (round(long_side / ASPECTS[int(rng.integers(len(ASPECTS)))]), long_side)
    zoom = long_side / 1000
    mask = _outline(rng, shape, share=(0.03, 0.3))
    tissue = _mucosa(rng, shape, zoom)
    alpha = cv2.GaussianBlur(mask.astype(np.float32), (0, 0), float(rng.choice([1.0, 3.0, 8.0])) * zoom)[..., None]
    image = tissue * (1 - alpha) + _polyp(rng, mask, tissue, zoom) * alpha
    _highlights(rng, image, zoom)
    image, field = _scope(rng, image, zoom)
    image = np.clip(image + rng.normal(0, 3, image.shape), 0, 255).astype(np.uint8)
    return image, (mask * field * 255).astype(np.uint8)


def make(cache: Path) -> Path:
    """``cache/polyps/{train,test}/{images,masks}``, written once."""
    return make_framed(cache, "polyp", draw)
