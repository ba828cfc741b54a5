"""Shattered gradients and early gradient norms (issue #9, claims 3 and 4)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from conftest import write_yaml

from unetseg.cli import main
from unetseg.studies.gradients import (
    GradientStudy,
    autocorrelation,
    build_encoder_net,
    calibrate_norms,
    early_gradient_norms,
    encoder_blocks,
    line_gradients,
    load_crops,
)


def test_autocorrelation_by_hand():
    assert autocorrelation(np.array([1.0, -1.0, 1.0, -1.0]), 2) == pytest.approx([1.0, -1.0, 1.0])
    assert autocorrelation(np.full(10, 3.0), 3) == pytest.approx([1.0] * 4)  # constant: a linear network
    rng = np.random.default_rng(0)
    assert abs(autocorrelation(rng.normal(size=4000), 1)[1]) < 0.05  # white noise
    assert autocorrelation(np.cumsum(rng.normal(size=4000)), 1)[1] > 0.95  # brown noise


def _x0(seed: int = 0) -> torch.Tensor:
    return torch.rand(1, 32, 32, generator=torch.Generator().manual_seed(seed))


def test_looks_linear_network_has_constant_gradient_along_the_line():
    model = build_encoder_net("looks_linear", blocks=4, depth=3, base_width=4, seed=0)
    calibrate_norms(model, torch.rand(4, 1, 32, 32))
    g = line_gradients(model, _x0(), points=32, seed=0)
    assert np.abs(g).max() > 0
    assert np.ptp(g) < 1e-4 * np.abs(g).max()
    plain = build_encoder_net("plain", blocks=4, depth=3, base_width=4, seed=0)
    calibrate_norms(plain, torch.rand(4, 1, 32, 32))
    g_plain = line_gradients(plain, _x0(), points=32, seed=0)
    assert np.ptp(g_plain) > 1e-2 * np.abs(g_plain).max()  # ReLUs switch along the line


def test_line_gradient_matches_finite_differences():
    model = build_encoder_net("residual", blocks=2, depth=3, base_width=4, seed=1).double()
    calibrate_norms(model, torch.rand(4, 1, 32, 32, dtype=torch.float64))
    x0 = _x0().double()
    torch.set_default_dtype(torch.float64)
    try:
        g = line_gradients(model, x0, points=5, seed=3)
        gen = torch.Generator().manual_seed(3)
        direction = torch.randn(x0.shape, generator=gen)
        direction /= direction.std()
        with torch.no_grad():
            readout = torch.randn(
                model.encoder(model.stem(x0[None]))[-1].shape[1:], generator=gen
            )  # residual: no CReLU

            @torch.no_grad()
            def f(t: float) -> float:
                return float((model.encoder(model.stem((x0 + t * direction)[None]))[-1][0] * readout).sum())

        h = 1e-6
        for i, t in enumerate(np.linspace(-1, 1, 5)):
            assert g[i] == pytest.approx((f(t + h) - f(t - h)) / (2 * h), rel=1e-4, abs=1e-6)
    finally:
        torch.set_default_dtype(torch.float32)


def test_calibrated_norms_are_frozen_and_exact():
    model = build_encoder_net("plain", blocks=1, depth=2, base_width=4, seed=0)
    crops = torch.rand(6, 1, 16, 16)
    calibrate_norms(model, crops)
    assert not model.training
    first = model.encoder.stages[0].blocks[0].conv1
    conv, bn = first[0], first[1]
    with torch.no_grad():
        out = conv(crops)
    assert torch.allclose(bn.running_mean, out.mean((0, 2, 3)), atol=1e-5)


def test_early_gradient_norms_per_block_and_iteration(pair_dirs):
    images, masks = pair_dirs
    study = GradientStudy(seeds=(0,), depth=2, base_width=4, norm_blocks=2, norm_iterations=3, norm_crop=32)
    rows = early_gradient_norms(study, images, masks, None)
    assert [r["variant"] for r in rows] == ["plain", "residual"]
    for r in rows:
        assert np.asarray(r["norms"]).shape == (3, 4)  # iterations x (2 levels x 2 blocks)
        assert (np.asarray(r["norms"]) > 0).all()
    model = build_encoder_net("plain", 2, 2, 4, 0)
    assert len(encoder_blocks(model)) == 4


def test_load_crops_pairs_images_with_masks(pair_dirs):
    images, masks = pair_dirs
    x, y = load_crops(images, masks, None, 16, 5, seed=0)
    assert x.shape == (5, 1, 16, 16) and y.shape == (5, 16, 16)
    assert set(torch.unique(y).tolist()) <= {0.0, 1.0}
    with pytest.raises(ValueError, match="smaller than"):
        load_crops(images, masks, None, 128, 1, seed=0)


def test_analyze_gradients_cli_end_to_end(tiny_cfg_dict, tmp_path, meters):
    cfg = write_yaml(tmp_path / "cfg.yaml", tiny_cfg_dict)
    out = tmp_path / "grads"
    args = [
        "analyze-gradients",
        "--config",
        str(cfg),
        "--out",
        str(out),
        "--variants",
        "plain,residual,looks_linear",
        "--blocks",
        "1,2",
        "--seeds",
        "0,1",
        "--iterations",
        "2",
        "--crop",
        "32",
        "--threads",
        "1",
    ]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    # 3 variants x 2 depths x 2 seeds for the line gradients, then plain and residual x 2 seeds.
    assert [(m.desc, m.expected, m.done) for m in meters] == [("analyze-gradients", 16, 16)]
    data = json.loads((out / "gradients.json").read_text())
    assert {(r["variant"], r["blocks"]) for r in data["shattering"]} == {
        (v, b) for v in ("plain", "residual", "looks_linear") for b in (1, 2)
    }
    linear = [r for r in data["shattering"] if r["variant"] == "looks_linear"]
    assert all(r["lag1"] == pytest.approx(1.0) for r in linear)
    assert [r["variant"] for r in data["norm_ratios"]] == ["plain", "residual"]
    assert "Shattered gradients" in (out / "gradients.md").read_text()
    assert (out / "figures" / "autocorrelation.png").stat().st_size > 0


def test_analyze_gradients_rejects_unknown_variant(tiny_cfg_dict, tmp_path):
    cfg = write_yaml(tmp_path / "cfg.yaml", tiny_cfg_dict)
    result = CliRunner().invoke(
        main, ["analyze-gradients", "--config", str(cfg), "--out", str(tmp_path / "o"), "--variants", "plain,resnet"]
    )
    assert result.exit_code != 0 and "resnet" in result.output
