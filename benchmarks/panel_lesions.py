"""A made panel dataset of the kind the panel's licensed and shipped sets lack: colour
photographs with one large lesion each, drawn after dermoscopy (the kind on which the planner
of 2026-12-05 lost 0.22 Dice to a plain MONAI loop, issue #33).

Synthetic, so nothing of a licensed archive enters the repository, and deterministic (image
``i`` of a split is drawn from its own seed). What makes the real photographs hard is drawn on
purpose, with the variety a real archive has:

- one lesion per image covering 5-45 % of it, its outline irregular (a radius modulated by a few
  random harmonics), its boundary sharp on some images and fading over up to 20 px on others
  (at 800 px; every drawn feature grows with the image's size);
- inside it mottled shades of brown, darker globules, on some a blue-grey veil; some lesions are
  faint (little darker than the skin);
- skin of varying tone under uneven light, with pore-scale texture;
- on most images the dark vignette of the dermoscope's round field of view, whose corners are
  as dark as a lesion or darker, so that a network must see the whole circle to tell them apart;
- hairs crossing lesion and skin, air bubbles and glare;
- sizes from 560 to 1600 px on the long side (archives mix cameras: the same framing at 2-3x
  the pixels), landscape and portrait, saved as JPEG.

It is a stand-in that tests the planning rules' mechanism (working scale, whole-object context)
on a kind of data, not a dermoscopy benchmark: real archives (ISIC) have textures no generator
draws.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

SPLITS = {"train": (120, 0), "test": (40, 10_000)}  # images, seed offset


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], scale: int) -> np.ndarray:
    """Noise in [-1, 1] whose features are about ``scale`` pixels across."""
    small = rng.normal(0, 1, (max(2, shape[0] // scale), max(2, shape[1] // scale)))
    field = cv2.resize(small, (shape[1], shape[0]), interpolation=cv2.INTER_CUBIC)
    return field / (np.abs(field).max() + 1e-6)


def _outline(rng: np.random.Generator, shape: tuple[int, int], share: tuple[float, float] = (0.05, 0.45)) -> np.ndarray:
    """The lesion mask: a closed curve whose radius carries a few random harmonics, covering a
    ``share`` of the image drawn uniformly."""
    h, w = shape
    area = rng.uniform(*share) * h * w
    radius = np.sqrt(area / np.pi)
    centre = np.array([w / 2, h / 2]) + rng.uniform(-0.15, 0.15, 2) * [w, h]
    angles = np.linspace(0, 2 * np.pi, 720, endpoint=False)
    modulation = 1 + sum(
        rng.uniform(0, 0.25 / k**0.7) * np.cos(k * angles + rng.uniform(0, 2 * np.pi)) for k in range(2, 9)
    )
    stretch = rng.uniform(0.7, 1.0)
    tilt = rng.uniform(0, np.pi)
    x, y = radius * modulation * np.cos(angles), radius * modulation * np.sin(angles) * stretch
    points = np.stack([x * np.cos(tilt) - y * np.sin(tilt), x * np.sin(tilt) + y * np.cos(tilt)], 1) + centre
    mask = np.zeros(shape, np.uint8)
    cv2.fillPoly(mask, [np.round(points).astype(np.int32)], 1)
    return mask


def _skin(rng: np.random.Generator, shape: tuple[int, int], zoom: float) -> np.ndarray:
    """Skin of one tone (BGR, float 0-255) under uneven light, with pores."""
    tone = np.array([rng.uniform(120, 200), rng.uniform(140, 190), rng.uniform(190, 240)])
    tone *= rng.uniform(0.55, 1.0)  # darker skin and dimmer exposures
    light = 1 + 0.18 * _smooth_noise(rng, shape, max(shape) // 3)
    pores = 1 + 0.05 * _smooth_noise(rng, shape, round(6 * zoom)) + rng.normal(0, 0.02, shape)
    return tone * (light * pores)[..., None]


def _pigment(rng: np.random.Generator, shape: tuple[int, int], skin: np.ndarray, zoom: float) -> np.ndarray:
    """The lesion's colour at every pixel: mottled brown, globules, maybe a blue-grey veil."""
    brown = np.array([rng.uniform(20, 70), rng.uniform(40, 90), rng.uniform(80, 150)])
    faint = rng.random() < 0.25
    if faint:  # a lesion only a little darker than the skin around it
        brown = 0.35 * brown + 0.65 * skin.mean(axis=(0, 1))
    shade = 1 + 0.35 * _smooth_noise(rng, shape, max(12, min(shape) // 12))
    pigment = brown * shade[..., None]
    globules = _smooth_noise(rng, shape, round(10 * zoom)) > 0.55
    pigment[globules] *= 0.55
    if rng.random() < 0.3:
        veil = _smooth_noise(rng, shape, min(shape) // 5) > 0.3
        pigment[veil] = 0.5 * pigment[veil] + 0.5 * np.array([140, 120, 110])
    return pigment


def _hairs_and_glare(rng: np.random.Generator, image: np.ndarray, zoom: float) -> None:
    h, w = image.shape[:2]
    for _ in range(int(rng.choice([0, 0, 3, 8, 15]) * rng.uniform(0.5, 1.5))):
        start, mid, end = rng.uniform(0, 1, (3, 2)) * [w, h]
        t = np.linspace(0, 1, 60)[:, None]
        curve = (1 - t) ** 2 * start + 2 * (1 - t) * t * mid + t**2 * end
        colour = tuple(float(c) for c in rng.uniform(10, 50) * np.array([1.0, 1.0, 1.1]))
        cv2.polylines(
            image,
            [np.round(curve).astype(np.int32)],
            False,
            colour,
            max(1, round(rng.integers(1, 4) * zoom)),
            cv2.LINE_AA,
        )
    for _ in range(int(rng.integers(0, 6))):
        centre = (int(rng.integers(0, w)), int(rng.integers(0, h)))
        axes = (round(rng.integers(3, 25) * zoom), round(rng.integers(3, 25) * zoom))
        cv2.ellipse(image, centre, axes, 0, 0, 360, (245, 245, 245), 1 + int(rng.integers(0, 2)), cv2.LINE_AA)


def draw(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """One photograph (BGR uint8) and its lesion mask (0/255)."""
    rng = np.random.default_rng(seed)
    long_side = int(np.exp(rng.uniform(np.log(560), np.log(1600))))
    short_side = int(long_side * rng.uniform(0.66, 0.8))
    shape = (short_side, long_side) if rng.random() < 0.8 else (long_side, short_side)
    mask = _outline(rng, shape)
    zoom = long_side / 800  # the same framing drawn at more pixels: hairs, pores and blur grow with it
    skin = _skin(rng, shape, zoom)
    blur = float(rng.choice([0.5, 2.0, 6.0, 12.0])) * zoom
    alpha = cv2.GaussianBlur(mask.astype(np.float32), (0, 0), blur)[..., None]
    image = skin * (1 - alpha) + _pigment(rng, shape, skin, zoom) * alpha
    if rng.random() < 0.7:  # the dermoscope's round field of view
        h, w = shape
        yy, xx = np.mgrid[0:h, 0:w]
        radius = np.hypot(h, w) / 2 * rng.uniform(0.62, 0.95)
        distance = np.hypot(yy - h / 2 + rng.uniform(-0.05, 0.05) * h, xx - w / 2)
        inside = np.clip((radius - distance) / (rng.uniform(5, 40) * zoom), 0, 1)
        image = image * (0.08 + 0.92 * inside[..., None])
    _hairs_and_glare(rng, image, zoom)
    image = np.clip(image + rng.normal(0, 3, image.shape), 0, 255).astype(np.uint8)
    return image, (mask * 255).astype(np.uint8)


def make(cache: Path, kind: str = "lesion", drawer: Callable[[int], tuple[np.ndarray, np.ndarray]] = draw) -> Path:
    """``cache/<kind>s/{train,test}/{images,masks}`` of ``drawer``'s pictures, written once."""
    root = cache / f"{kind}s"
    done = root / ".complete"
    if done.exists():
        return root
    for split, (count, offset) in SPLITS.items():
        (root / split / "images").mkdir(parents=True, exist_ok=True)
        (root / split / "masks").mkdir(parents=True, exist_ok=True)
        for index in range(count):
            image, mask = drawer(offset + index)
            name = f"{kind}_{offset + index:05d}"
            cv2.imwrite(str(root / split / "images" / f"{name}.jpg"), image, [cv2.IMWRITE_JPEG_QUALITY, 90])
            cv2.imwrite(str(root / split / "masks" / f"{name}.png"), mask)
    done.write_text("")
    return root
