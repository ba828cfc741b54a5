"""analyze-skips: knock-out of a trained model's skips, linear CKA, the report."""

from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner

from unetseg.cli import main
from unetseg.config import config_from_dict
from unetseg.studies.skips import linear_cka
from unetseg.training import Trainer


def test_linear_cka_invariances():
    torch.manual_seed(0)
    x = torch.randn(500, 8, dtype=torch.float64)
    q, _ = torch.linalg.qr(torch.randn(8, 8, dtype=torch.float64))
    assert linear_cka(x, x) == pytest.approx(1.0)
    assert linear_cka(x, 3.0 * x @ q) == pytest.approx(1.0)  # rotation and scale do not matter
    assert linear_cka(x, torch.randn(500, 8, dtype=torch.float64)) < 0.1


@pytest.fixture
def trained_checkpoint(tiny_cfg_dict):
    tiny_cfg_dict["model"]["skips"] = ["gated", "none"]
    tiny_cfg_dict["train"]["level_stats"] = True
    cfg = config_from_dict(tiny_cfg_dict)
    Trainer(cfg, log=lambda m: None).fit()
    return cfg.output_dir / "checkpoints" / "last.pt"


def test_analyze_skips_cli_reports_used_levels_only(trained_checkpoint, tmp_path, meters):
    out = tmp_path / "analysis"
    result = CliRunner().invoke(
        main, ["analyze-skips", "--checkpoint", str(trained_checkpoint), "--out", str(out), "--device", "cpu"]
    )
    assert result.exit_code == 0, result.output
    assert [(m.desc, m.expected, m.done) for m in meters] == [
        ("analyze-skips", 3, 3)
    ]  # intact, then level 0 zero and mean
    data = json.loads((out / "skip_analysis.json").read_text())
    assert data["skips"] == ["gated", "none"]
    rows = data["knockout"]
    assert [(r["level"], r["knockout"]) for r in rows] == [("-", "none (intact)"), (0, "zero"), (0, "mean")]
    for row in rows[1:]:
        assert row["delta_dice"] == pytest.approx(row["dice"] - rows[0]["dice"])
    assert data["cka"][1] is None and 0.0 <= data["cka"][0] <= 1.0
    assert data["gates"][1] is None and 0.0 < data["gates"][0] < 1.0
    page = (out / "skip_analysis.html").read_text()
    assert "data:image/png;base64," in page and "CKA" in page
    for name in ("history_gate", "history_grad", "history_update"):
        assert (out / "figures" / f"{name}.png").is_file(), name


def test_analyze_skips_refuses_reference_models(tiny_cfg_dict, tmp_path):
    tiny_cfg_dict["model"] = {"arch": "monai_basicunet", "features": [4, 4, 8, 8, 16, 4]}
    cfg = config_from_dict(tiny_cfg_dict)
    Trainer(cfg, log=lambda m: None).fit()
    result = CliRunner().invoke(
        main,
        [
            "analyze-skips",
            "--checkpoint",
            str(cfg.output_dir / "checkpoints" / "last.pt"),
            "--out",
            str(tmp_path / "a"),
        ],
    )
    assert result.exit_code != 0 and "needs a unetseg U-Net" in result.output and "Traceback" not in result.output
