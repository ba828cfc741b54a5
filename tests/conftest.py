"""Shared fixtures: small generated image/mask folders and a tiny training config.

Everything here is sized for a 2-core CPU without a GPU: 64 px images, depth-3 U-Nets with
4 channels, a handful of steps.
"""

from __future__ import annotations

import copy
import os
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import yaml

REPO = Path(__file__).resolve().parents[1]
ISBI = REPO / "data" / "isbi2012"


def pytest_configure(config):
    # One intra-op thread: on small CPU machines OpenMP's busy-waiting threads make tiny
    # convolutions 100x slower than a single thread, and one thread is also deterministic.
    torch.set_num_threads(1)


def blob_pair(rng: np.random.Generator, h: int = 64, w: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """A learnable synthetic pair: bright disks (mask 255) on a darker noisy background (mask 0)."""
    yy, xx = np.mgrid[:h, :w]
    mask = np.zeros((h, w), dtype=np.uint8)
    for _ in range(3):
        cy, cx = rng.integers(8, h - 8), rng.integers(8, w - 8)
        r = rng.integers(5, 11)
        mask[(yy - cy) ** 2 + (xx - cx) ** 2 <= r * r] = 255
    image = np.where(mask > 0, 170, 70).astype(np.float64) + rng.normal(0, 20, (h, w))
    return np.clip(image, 0, 255).astype(np.uint8), mask


def write_pairs(
    root: Path, n: int = 6, h: int = 64, w: int = 64, seed: int = 0, mask_suffix: str = ""
) -> tuple[Path, Path]:
    """``root/images/img_<i>.png`` and ``root/masks/img_<i><suffix>.png``."""
    rng = np.random.default_rng(seed)
    images, masks = root / "images", root / "masks"
    images.mkdir(parents=True, exist_ok=True)
    masks.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        image, mask = blob_pair(rng, h, w)
        assert cv2.imwrite(str(images / f"img_{i}.png"), image)
        assert cv2.imwrite(str(masks / f"img_{i}{mask_suffix}.png"), mask)
    return images, masks


@pytest.fixture
def pair_dirs(tmp_path: Path) -> tuple[Path, Path]:
    """Six 64x64 generated image/mask pairs (mask values 0 and 255)."""
    return write_pairs(tmp_path / "data")


def tiny_config(images: Path, masks: Path, out: Path) -> dict:
    """A complete config for a seconds-long training run on ``images``/``masks``."""
    return {
        "name": "tiny",
        "seed": 3,
        "output_dir": str(out),
        "data": {
            "images": str(images),
            "masks": str(masks),
            "channels": 1,
            "split": {"mode": "block", "folds": 3, "fold": -1},
        },
        "model": {"arch": "unet", "depth": 3, "base_width": 4, "encoder": "residual", "skips": "concat"},
        "augment": {"crop_size": 32, "hflip": 0.5, "vflip": 0.5, "rot90": 0.5, "brightness_contrast": 0.5},
        "train": {
            "epochs": 2,
            "samples_per_epoch": 8,
            "batch_size": 2,
            "lr": 0.01,
            "warmup_epochs": 1,
            "scheduler": "cosine",
            "threads": 1,
            "progress": False,
            "val_every": 1,
            "monitor": "dice",
        },
        "inference": {"mode": "whole"},
        "eval": {"regions": "foreground"},
    }


@pytest.fixture
def tiny_cfg_dict(pair_dirs, tmp_path: Path) -> dict:
    images, masks = pair_dirs
    return tiny_config(images, masks, tmp_path / "run")


def repo_pythonpath() -> str:
    """PYTHONPATH for a subprocess that runs this checkout's unetseg: the repo first, then
    whatever the test process had (packages installed with --target, as on the GPU machine)."""
    return os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))


def write_yaml(path: Path, tree: dict) -> Path:
    path.write_text(yaml.safe_dump(copy.deepcopy(tree), sort_keys=False))
    return path


@pytest.fixture
def tiny_cfg_file(tiny_cfg_dict, tmp_path: Path) -> Path:
    return write_yaml(tmp_path / "tiny.yaml", tiny_cfg_dict)


@pytest.fixture
def isbi() -> Path:
    if not (ISBI / "train" / "image").is_dir():
        pytest.skip("ISBI 2012 data not present")
    return ISBI


@dataclass
class RecordedMeter:
    """What a command told its overall progress bar: the units of work announced and done."""

    desc: str
    unit: str
    expected: int = 0
    done: int = 0

    def expect(self, units: int) -> None:
        self.expected += units

    def advance(self, units: int = 1) -> None:
        self.done += units

    def write(self, message: str) -> None:
        print(message)


@pytest.fixture
def meters(monkeypatch) -> list[RecordedMeter]:
    """The overall progress bars the commands open (in tests stderr is no terminal, so the real
    bar would draw nothing to look at); each is recorded here in the order opened."""
    import unetseg.meter

    opened: list[RecordedMeter] = []

    @contextmanager
    def recording(desc: str, unit: str):
        opened.append(RecordedMeter(desc, unit))
        yield opened[-1]

    monkeypatch.setattr(unetseg.meter, "progress_bar", recording)
    return opened


@pytest.fixture
def trained(tiny_cfg_file, tmp_path) -> Path:
    """A run of the tiny config trained through the command line."""
    from cli_helpers import invoke

    out = tmp_path / "cli_run"
    result = invoke("train", "--config", tiny_cfg_file, "--out", out)
    assert result.exit_code == 0, result.output
    assert "done: best dice" in result.output
    return out
