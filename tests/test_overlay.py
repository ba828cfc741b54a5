"""Overlays: contours of the prediction, or false positives / negatives against a ground
truth, drawn by unetseg.inference.overlay and written by ``predict --overlay [--masks DIR]``."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
from ckpt_helpers import write_checkpoint
from cli_helpers import invoke
from torch import nn

from unetseg.config import InferenceConfig
from unetseg.data import attach_masks, find_images
from unetseg.data.io import read_raw
from unetseg.inference.overlay import (
    CONTOUR_COLOURS,
    FALSE_NEGATIVE,
    FALSE_POSITIVE,
    contour_overlay,
    display_image,
    error_overlay,
)
from unetseg.inference.predictor import Predictor, predict_samples


def test_display_image_scales_any_normalisation_to_8_bit_rgb():
    image = np.linspace(-2.0, 3.0, 12, dtype=np.float32).reshape(3, 4, 1)  # z-scored values
    rgb = display_image(image)
    assert rgb.shape == (3, 4, 3) and rgb.dtype == np.uint8
    assert rgb.min() == 0 and rgb.max() == 255 and (rgb[..., 0] == rgb[..., 2]).all()
    assert (display_image(np.full((2, 2, 3), 7.0, np.float32)) == 0).all()  # constant image: no division by zero


def test_contour_overlay_outlines_each_class_and_leaves_the_rest():
    image = np.full((20, 20, 3), 100, np.uint8)
    classes = np.zeros((20, 20), np.int64)
    classes[5:15, 5:15] = 1
    classes[0:3, 16:19] = 2
    out = contour_overlay(image, classes)
    ring = np.zeros((20, 20), bool)
    ring[5:15, 5:15] = True
    ring[6:14, 6:14] = False
    assert (out[ring] == CONTOUR_COLOURS[0]).all()
    assert (out[6:14, 6:14] == 100).all() and (out[17:, :] == 100).all()
    assert (out[1, 17] == 100).all() and (out[0, 16] == CONTOUR_COLOURS[1]).all()
    assert (image == 100).all()  # the input is not drawn on


def test_error_overlay_colours_false_positives_and_negatives():
    image = np.full((4, 4, 3), 50, np.uint8)
    truth = np.array([[0, 0, 1, 1]] * 4)
    pred = np.array([[0, 1, 1, 0]] * 4)
    out = error_overlay(image, pred, truth, alpha=1.0)
    assert (out[:, 1] == FALSE_POSITIVE).all() and (out[:, 3] == FALSE_NEGATIVE).all()
    assert (out[:, [0, 2]] == 50).all()
    with pytest.raises(ValueError, match="ground truth"):
        error_overlay(image, pred, truth[:2])


class Threshold(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 10 * (x[:, :1] - 0.5)


def test_predict_samples_writes_overlays_and_refuses_to_overwrite_them(tmp_path, pair_dirs):
    images, masks = pair_dirs
    predictor = Predictor(Threshold(), InferenceConfig(), 2)
    out = tmp_path / "out"
    samples = attach_masks(find_images(images), masks)[:2] + find_images(images)[2:3]  # two with truth, one without
    report = predict_samples(predictor, samples, out, 1, "dtype", None, overlay=True)
    assert report.masks == 3 and not report.failed
    for sample in samples:
        overlay = read_raw(out / f"{sample.name}_overlay.png")
        assert overlay.shape == (64, 64, 3)
    truth = read_raw(masks / "img_0.png") > 0
    pred = read_raw(out / "img_0.png") > 0
    overlay = read_raw(out / "img_0_overlay.png")
    assert (pred & ~truth).any() or (~pred & truth).any()
    tinted = (overlay[..., 0] != overlay[..., 1]) | (overlay[..., 1] != overlay[..., 2])
    assert (tinted == (pred != truth)).all()  # exactly the wrong pixels are coloured
    plain = read_raw(out / "img_2_overlay.png")
    assert ((plain[..., 0] != plain[..., 2]).sum()) > 0  # contours drawn
    (out / "img_0.png").unlink()
    with pytest.raises(FileExistsError, match="img_0_overlay.png"):
        predict_samples(predictor, samples[:1], out, 1, "dtype", None, overlay=True)


def test_predict_overlay_from_the_cli_with_and_without_masks(tmp_path, pair_dirs, tiny_cfg_dict):
    images, masks = pair_dirs
    ckpt = write_checkpoint(tmp_path / "m.pt", tiny_cfg_dict)
    result = invoke("predict", images, "--checkpoint", ckpt, "--out", tmp_path / "a", "--overlay")
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (tmp_path / "a").glob("*_overlay.png")) == [f"img_{i}_overlay.png" for i in range(6)]
    bad = tmp_path / "bad_masks"
    bad.mkdir()
    cv2.imwrite(str(bad / "img_1.png"), np.zeros((10, 10), np.uint8))  # wrong size; the others have no mask
    result = invoke("predict", images, "--checkpoint", ckpt, "--out", tmp_path / "b", "--overlay", "--masks", bad)
    assert result.exit_code == 1
    assert (
        "5 image(s) have no mask" in result.output and "img_1: overlay:" in result.output and "10x10" in result.output
    )
    assert "wrote 6 mask(s)" in result.output and not (tmp_path / "b" / "img_1_overlay.png").exists()
    with_truth = invoke("predict", images, "--checkpoint", ckpt, "--out", tmp_path / "c", "--overlay", "--masks", masks)
    assert with_truth.exit_code == 0, with_truth.output
    usage = invoke("predict", images, "--checkpoint", ckpt, "--out", tmp_path / "d", "--masks", masks)
    assert usage.exit_code == 2 and "--overlay" in usage.output
