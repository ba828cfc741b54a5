"""A third made panel dataset of the framed kind, and the first grey one: breast ultrasound
scans with one lesion each, drawn after public B-mode archives (BUSI, UDIAT). It checks that the
framed-object rules (18, 19) hold for a kind, not for colour photographs.

What differs from the lesion photographs and the polyp frames, on purpose:

- one grey channel, multiplicative speckle everywhere (the grain is a few pixels, the same in
  the lesion as around it), brightness falling with depth and a brighter time-gain band;
- layered tissue: a bright skin line at the top, then fat and glandular bands whose boundaries
  wave across the image;
- the lesion is darker than the gland around it (hypoechoic), but so are fat lobules, which are
  not labelled: a network must use the lesion's shape and its margin, not its darkness alone;
- a lesion casts an acoustic shadow below it on some scans and a brighter band on others;
  margins are sharp on some, blurred or spiculated on others;
- the scan sits in a black frame with white text and depth ticks on its borders, as exported
  from a scanner; sizes 450-900 px wide, landscape, saved as PNG;
- the lesion covers 1-25 % of the scan.

Synthetic and deterministic, like the others: a stand-in for a kind of data, not a benchmark.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
from panel_lesions import _outline, _smooth_noise
from panel_lesions import make as make_framed


def _tissue(rng: np.random.Generator, shape: tuple[int, int], zoom: float) -> np.ndarray:
    """Echo strength (0-1) of skin, fat and gland bands, with dark fat lobules."""
    h, w = shape
    rows = np.arange(h)[:, None] / h + 0.06 * _smooth_noise(rng, shape, max(8, w // 3))
    skin = round(rng.uniform(0.03, 0.07) * h)
    fat_end = rng.uniform(0.2, 0.4)
    echo = np.where(rows < fat_end, rng.uniform(0.3, 0.45), rng.uniform(0.55, 0.75))
    echo = echo + 0.12 * _smooth_noise(rng, shape, round(40 * zoom))
    echo[:skin] = rng.uniform(0.8, 0.95)
    for _ in range(int(rng.integers(4, 14))):  # hypoechoic fat lobules: flat, dark, not labelled
        centre = (int(rng.integers(0, w)), int(rng.integers(skin, h)))
        axes = (round(rng.uniform(20, 90) * zoom), round(rng.uniform(10, 35) * zoom))
        lobule = np.zeros(shape, np.float32)
        cv2.ellipse(lobule, centre, axes, float(rng.uniform(-20, 20)), 0, 360, 1.0, -1, cv2.LINE_AA)
        echo = echo * (1 - rng.uniform(0.3, 0.6) * cv2.GaussianBlur(lobule, (0, 0), 2 * zoom))
    return echo


def _lesion(rng: np.random.Generator, shape: tuple[int, int], zoom: float) -> np.ndarray:
    """The lesion mask (0/1): smooth or spiculated, below the skin."""
    mask = _outline(rng, shape, share=(0.01, 0.25))
    if rng.random() < 0.4:  # spiculated: thin spokes out of the margin
        ys, xs = np.nonzero(mask)
        cy, cx = ys.mean(), xs.mean()
        for angle in rng.uniform(0, 2 * np.pi, int(rng.integers(5, 12))):
            reach = np.sqrt(mask.sum() / np.pi) * rng.uniform(1.1, 1.5)
            end = (round(cx + reach * np.cos(angle)), round(cy + reach * np.sin(angle)))
            cv2.line(mask, (round(cx), round(cy)), end, 1, max(1, round(4 * zoom)))
    return mask


def draw(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """One ultrasound scan (grey uint8) and its lesion mask (0/255)."""
    rng = np.random.default_rng(seed)
    width = int(rng.integers(450, 900))
    shape = (round(width / rng.uniform(1.1, 1.5)), width)
    h, w = shape
    zoom = w / 600
    echo = _tissue(rng, shape, zoom)
    mask = _lesion(rng, shape, zoom)
    inside = cv2.GaussianBlur(mask.astype(np.float32), (0, 0), float(rng.choice([0.7, 2.0, 5.0])) * zoom)
    interior = rng.uniform(0.1, 0.4) * (1 + 0.35 * _smooth_noise(rng, shape, round(15 * zoom)))  # internal echoes
    echo = echo * (1 - inside) + interior * inside
    ys, xs = np.nonzero(mask)
    if rng.random() < 0.7:  # posterior shadow (darker) or enhancement (brighter) below the lesion
        below = np.zeros(shape, np.float32)
        below[int(ys.mean()) :, xs.min() : xs.max() + 1] = 1
        below = cv2.GaussianBlur(below, (0, 0), 10 * zoom) * (1 - mask)
        echo = echo * (1 + rng.choice([-0.5, 0.4]) * below)
    depth = np.linspace(1.0, rng.uniform(0.45, 0.8), h)[:, None]
    gain = 1 + 0.2 * np.exp(-(((np.arange(h)[:, None] / h - rng.uniform(0.3, 0.7)) / 0.1) ** 2))
    grain = cv2.GaussianBlur(rng.rayleigh(1.0, shape).astype(np.float32), (0, 0), 1.2 * zoom)
    image = 255 * np.clip(echo * depth * gain * grain / 1.25, 0, 1)
    top, left = round(rng.uniform(0.06, 0.12) * h), round(rng.uniform(0.03, 0.1) * w)
    framed = np.zeros((h + 2 * top, w + 2 * left), np.float32)
    framed[top : top + h, left : left + w] = image
    framed = np.clip(framed + rng.normal(0, 2, framed.shape), 0, 255).astype(np.uint8)
    for y in range(top, top + h, round(h / 8)):  # depth ticks and scanner text
        cv2.line(framed, (left + w + 4, y), (left + w + 12, y), 255, 1)
    cv2.putText(framed, f"L{int(rng.integers(5, 15))}MHz", (left, top - 6), cv2.FONT_HERSHEY_SIMPLEX, 0.5, 230, 1)
    full = np.zeros(framed.shape, np.uint8)
    full[top : top + h, left : left + w] = mask
    return framed, full * 255


def make(cache: Path) -> Path:
    """``cache/ultrasounds/{train,test}/{images,masks}``, written once."""
    return make_framed(cache, "ultrasound", draw)
