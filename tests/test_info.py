"""``unetseg info``: config, parameters, FLOPs, per-level widths and skips, training metrics."""

from __future__ import annotations

import json

import pytest
import torch
from ckpt_helpers import write_checkpoint
from cli_helpers import assert_clean_failure, invoke
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from unetseg.config import config_from_dict
from unetseg.models import build_model
from unetseg.models.checkpoint import load_model
from unetseg.models.info import count_flops, level_rows, model_info

HISTORY = [
    {"epoch": 1, "lr": 0.01, "train_loss": 0.9, "val_dice": 0.5, "val_hd95": float("nan"), "elapsed_s": 1.0},
    {"epoch": 2, "lr": 0.005, "train_loss": 0.7, "val_dice": 0.8, "val_hd95": 4.0, "elapsed_s": 2.0},
    {"epoch": 3, "lr": 0.001, "train_loss": 0.6, "val_dice": 0.7, "val_hd95": 5.0, "elapsed_s": 3.0},
]


def test_flops_of_a_convolution_are_two_per_multiply_add():
    conv = nn.Conv2d(3, 4, kernel_size=3, padding=1, bias=False)
    assert count_flops(conv, 3, (10, 12)) == 2 * (3 * 9) * 4 * 10 * 12


def test_flops_on_meta_equal_a_real_forward_and_scale_with_area(tiny_cfg_dict):
    cfg = config_from_dict(tiny_cfg_dict)
    model = build_model(cfg.model, 1, 1).eval()
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(torch.rand(1, 1, 64, 48))
    assert count_flops(model, 1, (64, 48)) == counter.get_total_flops() > 0
    assert count_flops(model, 1, (128, 96)) == 4 * count_flops(model, 1, (64, 48))
    assert next(model.parameters()).device.type == "cpu"  # counted on a copy


def test_levels_show_widths_and_skip_modes(tiny_cfg_dict):
    tiny_cfg_dict["model"].update(depth=4, base_width=4, skips=["concat", "add", "none"])
    cfg = config_from_dict(tiny_cfg_dict)
    rows = level_rows(build_model(cfg.model, 1, 1))
    assert [r["encoder"] for r in rows] == [4, 8, 16, 32]
    assert [r["skip"] for r in rows] == ["concat", "add", "none", "bottleneck"]
    assert [r["decoder"] for r in rows] == [4, 8, 16, None]
    assert [r["decoder_in"] for r in rows] == [8, 8, 16, None]  # concat adds the encoder width
    monai = config_from_dict({**tiny_cfg_dict, "model": {"arch": "monai_unet", "channels": [4, 8], "strides": [2]}})
    assert level_rows(build_model(monai.model, 1, 1)) is None


def test_info_command_prints_and_writes_json(tiny_cfg_dict, tmp_path):
    ckpt = write_checkpoint(
        tmp_path / "m.pt", tiny_cfg_dict, history=HISTORY, model_changes={"skips": ["add", "concat"]}
    )
    out = tmp_path / "info" / "m.json"
    result = invoke("info", ckpt, "--size", 64, 96, "--json", out)
    assert result.exit_code == 0, result.output
    text = result.output
    assert "config:" in text and "  model:" in text and "arch: unet" in text
    model, cfg, state = load_model(ckpt)
    params = sum(p.numel() for p in model.parameters())
    assert f"parameters: {params:,}" in text
    assert "forward pass at 64x96" in text
    assert "last epoch 3: train_loss 0.6, val_dice 0.7" in text and "best epoch 2: train_loss 0.7, val_dice 0.8" in text
    data = json.loads(out.read_text())  # NaN metrics became null: strict JSON
    assert data["parameters"] == params and data["flops"]["input"] == [1, 1, 64, 96]
    assert data["flops"]["total"] == count_flops(model, 1, (64, 96))
    assert data["config"] == state["config"]
    assert [r["skip"] for r in data["levels"]] == ["add", "concat", "bottleneck"]
    assert data["metrics"]["best"]["epoch"] == 2 and data["metrics"]["last"]["val_hd95"] == 5.0
    assert data["metrics"]["best"] == {**HISTORY[1]}
    assert model_info(model, cfg, {}, (32, 32))["metrics"] == {"last": None, "best": None}


def test_info_on_a_trained_run_and_a_bad_file(trained, tmp_path):
    result = invoke("info", trained / "checkpoints" / "last.pt")
    assert result.exit_code == 0, result.output
    assert "last epoch 2: train_loss" in result.output and "val_dice" in result.output
    assert "forward pass at 512x512" in result.output
    # best.pt holds the record up to and including its own epoch
    best = invoke("info", trained / "checkpoints" / "best.pt")
    assert best.exit_code == 0, best.output
    assert "best (none recorded)" not in best.output
    best_line = next(line for line in best.output.splitlines() if line.strip().startswith("best epoch"))
    last_line = next(line for line in best.output.splitlines() if line.strip().startswith("last epoch"))
    assert best_line.strip()[len("best ") :] == last_line.strip()[len("last ") :]
    assert_clean_failure(invoke("info", tmp_path / "missing.pt"), "missing.pt")


@pytest.mark.parametrize("size", [("0", "5"), ("5",)])
def test_info_rejects_bad_sizes(size, tmp_path):
    assert invoke("info", tmp_path / "m.pt", "--size", *size).exit_code == 2
