"""U-Net border weights: the map against hand-computed values, its journey through augmentation,
the weighted loss, and a training run that uses them."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from unetseg.config import BorderWeightConfig, ConfigError, DataConfig, LossConfig, config_from_dict
from unetseg.data import SegmentationDataset, find_pairs
from unetseg.data.weights import border_weights
from unetseg.training import Trainer
from unetseg.training.losses import build_loss


def two_cells(gap: int) -> np.ndarray:
    """ISBI-like mask: membrane (1) everywhere but two 10x7 cells (0) ``gap`` pixels apart."""
    mask = np.ones((20, 40), np.int64)
    mask[5:15, 5:12] = 0
    mask[5:15, 12 + gap : 19 + gap] = 0
    return mask


def test_thin_wall_gets_the_papers_weight():
    w = border_weights(two_cells(3), w0=10, sigma=5, objects="background")
    # The wall's middle pixel is 2 px from both cells; its neighbours in the wall 1 and 3 px.
    assert w[10, 13] == pytest.approx(1 + 10 * math.exp(-((2 + 2) ** 2) / 50), rel=1e-5)
    assert w[10, 12] == pytest.approx(1 + 10 * math.exp(-((1 + 3) ** 2) / 50), rel=1e-5)
    # Inside a cell, one pixel from the wall: d1 = 0, d2 = 4.
    assert w[10, 11] == pytest.approx(1 + 10 * math.exp(-((0 + 4) ** 2) / 50), rel=1e-5)


def test_wider_walls_and_lone_objects_weigh_less():
    thin = border_weights(two_cells(2), w0=10, sigma=5, objects="background")[10, 12:14].max()
    wide = border_weights(two_cells(12), w0=10, sigma=5, objects="background")[10, 12:24].max()
    assert thin > 8 > 2 > wide > 1
    lone = np.ones((20, 20), np.int64)
    lone[5:10, 5:10] = 0
    assert np.all(border_weights(lone, w0=10, sigma=5, objects="background") == 1.0)


def test_objects_can_be_the_foreground():
    nuclei = 1 - two_cells(3)  # the same geometry with the classes swapped
    fg = border_weights(nuclei, w0=10, sigma=5, objects="foreground")
    np.testing.assert_allclose(fg, border_weights(two_cells(3), w0=10, sigma=5, objects="background"))


def test_weights_of_an_isbi_label_are_high_on_thin_membranes(isbi):
    from unetseg.data import read_mask

    mask = read_mask(sorted((isbi / "train" / "label").iterdir())[0], {0: 1, 255: 0})
    w = border_weights(mask, w0=10, sigma=5, objects="background")
    assert w.shape == mask.shape and w.dtype == np.float32
    assert w.min() >= 1.0 and w.max() <= 11.0
    assert w[mask == 1].mean() > 2 * w[mask == 0].mean()  # membranes are where cells meet


def test_weights_are_the_same_bytes_every_call(isbi):
    """Issue #27: OpenCV's multithreaded distance transform gave differing last bits from call
    to call, so two runs of isbi_cpu.yaml (border weights on) diverged."""
    import hashlib

    import cv2

    from unetseg.data import read_mask

    mask = read_mask(isbi / "train" / "label" / "0.png", {0: 1, 255: 0})
    threads = cv2.getNumThreads()
    cv2.setNumThreads(4)  # as on a many-core machine, where the old transform raced
    try:
        digests = {hashlib.sha256(border_weights(mask, 10, 5, "background").tobytes()).hexdigest() for _ in range(8)}
    finally:
        cv2.setNumThreads(threads)
    assert len(digests) == 1


def test_dataset_moves_the_weights_with_the_mask(pair_dirs):
    from unetseg.config import AugmentConfig
    from unetseg.data import build_train_transform

    images, masks = pair_dirs
    data = DataConfig(images=images, masks=masks)
    pairs = find_pairs(images, masks)

    def weights(m):
        return border_weights(m, w0=10, sigma=3, objects="foreground")

    aug = AugmentConfig(crop_size=None, hflip=0.5, vflip=0.5, rot90=1.0)
    ds = SegmentationDataset(pairs, data, build_train_transform(aug, seed=3), length=12, weights=weights)
    for i in range(12):
        item = ds[i]
        # Flips and rotations commute with distances: the augmented map is the map of the augmented mask.
        expected = border_weights(item["mask"].numpy(), w0=10, sigma=3, objects="foreground")
        np.testing.assert_allclose(item["weight"].numpy(), expected, rtol=1e-5)
    assert "weight" not in SegmentationDataset(pairs, data)[0]


@pytest.mark.parametrize("out_channels", [1, 3])
def test_weighted_loss(out_channels):
    cfg = LossConfig(name="dice_ce", border_weight=BorderWeightConfig())
    loss_fn, plain = build_loss(cfg, out_channels), build_loss(LossConfig(name="dice_ce"), out_channels)
    torch.manual_seed(0)
    logits = torch.randn(2, out_channels, 8, 8, requires_grad=True)
    target = torch.randint(0, max(out_channels, 2), (2, 8, 8))
    ones = torch.ones(2, 8, 8)
    assert float(loss_fn(logits, target, ones)) == pytest.approx(float(plain(logits, target)), rel=1e-5)
    assert float(loss_fn(logits, target)) == pytest.approx(float(plain(logits, target)), rel=1e-5)
    # Weight one pixel 100x: it takes most of the CE term's gradient.
    heavy = ones.clone()
    heavy[0, 3, 4] = 100.0
    loss_fn(logits, target, heavy).backward()
    grad = logits.grad.abs().sum(1)
    assert grad[0, 3, 4] > 10 * grad[0].median()


def test_border_weight_needs_a_ce_term():
    with pytest.raises(ValueError, match="border_weight"):
        LossConfig(name="dice", border_weight={})


def test_training_with_border_weights(tmp_path, pair_dirs):
    from conftest import tiny_config

    tree = tiny_config(*pair_dirs, tmp_path / "run")
    tree["train"].update(
        {"epochs": 2, "samples_per_epoch": 4, "loss": {"name": "dice_ce", "border_weight": {"sigma": 3}}}
    )
    trainer = Trainer(config_from_dict(tree), log=lambda *_: None)
    summary = trainer.fit()
    assert all(np.isfinite(row["train_loss"]) for row in summary["history"])
    assert len(trainer.train_ds._weight_cache) == len(trainer.train_ds.samples)  # computed up front, once
    with pytest.raises(ConfigError, match="border_weight"):
        bad = tiny_config(*pair_dirs, tmp_path / "bad")
        bad["train"]["loss"] = {"name": "dice", "border_weight": {}}
        config_from_dict(bad)
