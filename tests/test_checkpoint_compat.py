"""A checkpoint written by ``unetseg train`` before the package was reorganised (#26) still
loads, rebuilds the same model and gives the same logits; ``predict`` and ``info`` accept it.

The fixture (tests/fixtures/pre_layout/) was written at commit 30951a7: a depth-3 residual
U-Net with a gated and an additive skip, two epochs on generated blobs, and its logits on
``input.png`` scaled to [0, 1].
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import torch
from conftest import repo_pythonpath

from unetseg.models.checkpoint import load_model

FIXTURE = Path(__file__).parent / "fixtures" / "pre_layout"


def test_old_checkpoint_gives_the_same_logits() -> None:
    model, cfg, _ = load_model(FIXTURE / "tiny_gated.pt")
    assert list(cfg.model.skips) == ["gated", "add"]
    image = cv2.imread(str(FIXTURE / "input.png"), cv2.IMREAD_UNCHANGED).astype(np.float32) / 255.0
    with torch.no_grad():
        logits = model(torch.from_numpy(image)[None, None]).numpy()
    np.testing.assert_allclose(logits, np.load(FIXTURE / "logits.npy"), atol=1e-5)


def test_old_checkpoint_predicts_and_describes_itself(tmp_path: Path) -> None:
    images = tmp_path / "images"
    images.mkdir()
    (images / "a.png").write_bytes((FIXTURE / "input.png").read_bytes())
    env = {"PYTHONPATH": repo_pythonpath(), "NO_ALBUMENTATIONS_UPDATE": "1", "PATH": "/usr/bin:/bin"}
    run = [sys.executable, "-m", "unetseg"]
    predicted = subprocess.run(
        [*run, "predict", str(images), "--checkpoint", str(FIXTURE / "tiny_gated.pt"), "--out", str(tmp_path / "out")],
        capture_output=True,
        text=True,
        env=env,
    )
    assert predicted.returncode == 0, predicted.stderr
    mask = cv2.imread(str(tmp_path / "out" / "a.png"), cv2.IMREAD_UNCHANGED)
    assert mask is not None and mask.shape == (64, 64)
    info = subprocess.run([*run, "info", str(FIXTURE / "tiny_gated.pt")], capture_output=True, text=True, env=env)
    assert info.returncode == 0, info.stderr
    assert "gated" in info.stdout
