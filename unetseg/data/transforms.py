"""Training augmentation built from the config with albumentations.

Validation and inference see the images untouched (apart from intensity scaling), so the
numbers they report are for the data as it is.
"""

from __future__ import annotations

import albumentations as A
import cv2

from unetseg.config import AugmentConfig


def build_train_transform(cfg: AugmentConfig, seed: int = 0) -> A.Compose:
    """Rotation and scaling, a random crop (padded by reflection when the image is smaller than
    the crop), flips, 90-degree rotations, elastic deformation (U-Net paper), brightness/contrast,
    then the colour steps of photographs and stained slides.

    The crop comes after the affine step and before the rest, so the costly steps that follow
    it see only the crop's pixels.
    """
    steps: list[A.BasicTransform] = []
    if cfg.affine.p > 0:
        steps.append(
            A.Affine(
                rotate=(-cfg.affine.rotate, cfg.affine.rotate),
                scale=cfg.affine.scale,
                keep_ratio=True,  # one zoom factor for both axes, not a random stretch
                interpolation=cv2.INTER_LINEAR,
                mask_interpolation=cv2.INTER_NEAREST,
                border_mode=cv2.BORDER_REFLECT_101,
                p=cfg.affine.p,
            )
        )
    if cfg.crop_size is not None:
        steps.append(A.RandomCrop(cfg.crop_size, cfg.crop_size, pad_if_needed=True, border_mode=cv2.BORDER_REFLECT_101))
    if cfg.hflip > 0:
        steps.append(A.HorizontalFlip(p=cfg.hflip))
    if cfg.vflip > 0:
        steps.append(A.VerticalFlip(p=cfg.vflip))
    if cfg.rot90 > 0:
        steps.append(A.RandomRotate90(p=cfg.rot90))
    if cfg.elastic.p > 0:
        steps.append(
            A.ElasticTransform(
                alpha=cfg.elastic.alpha,
                sigma=cfg.elastic.sigma,
                interpolation=cv2.INTER_LINEAR,
                border_mode=cv2.BORDER_REFLECT_101,
                p=cfg.elastic.p,
            )
        )
    if cfg.brightness_contrast > 0:
        steps.append(A.RandomBrightnessContrast(cfg.brightness_limit, cfg.contrast_limit, p=cfg.brightness_contrast))
    steps += _photometric(cfg)
    # 'weight': the per-pixel loss weights, moved with the mask (nearest-neighbour) when present.
    return A.Compose(steps, seed=seed, additional_targets={"weight": "mask"})


def _photometric(cfg: AugmentConfig) -> list[A.BasicTransform]:
    """Hue/saturation, gamma and H&E stain jitter: what changes between two cameras, two
    illuminations or two staining batches of the same tissue. After the crop: HEStain costs
    about 11 ms per 256 x 256 crop and would cost 16x that on a 1000 x 1000 image."""
    steps: list[A.BasicTransform] = []
    if cfg.hue_saturation > 0:
        steps.append(
            A.HueSaturationValue(hue_shift_limit=10, sat_shift_limit=20, val_shift_limit=10, p=cfg.hue_saturation)
        )
    if cfg.gamma > 0:
        steps.append(A.RandomGamma(gamma_limit=(80, 120), p=cfg.gamma))
    if cfg.stain > 0:
        steps.append(A.HEStain(method="random_preset", p=cfg.stain))
    return steps
