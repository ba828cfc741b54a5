"""Block deletion at test time (issue #9, claim 2) and the degradation section of the ablation report (claim 1)."""

from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner

from unetseg.ablation.depth import degradation
from unetseg.cli import main
from unetseg.config import config_from_dict
from unetseg.models import UNet
from unetseg.studies.deletion import deletable_blocks, deletion_study, without_blocks
from unetseg.training import Trainer


def test_deletable_blocks_are_those_that_keep_shape():
    net = UNet(1, 1, depth=3, base_width=4, encoder="residual", blocks_per_level=3)
    assert deletable_blocks(net) == [(0, 1), (0, 2), (1, 1), (1, 2), (2, 1), (2, 2)]
    assert deletable_blocks(UNet(1, 1, depth=3, base_width=4)) == []


def test_deleting_a_residual_block_with_a_zero_branch_changes_nothing():
    torch.manual_seed(0)
    x = torch.randn(2, 1, 32, 32)
    # Training mode: batch statistics keep the activations at unit scale (at init, running
    # statistics would let a plain stack shrink them towards zero and hide any change).
    residual = UNet(1, 1, depth=3, base_width=4, encoder="residual", blocks_per_level=3, zero_init_residual=True)
    with torch.no_grad():
        assert torch.allclose(residual(x), without_blocks(residual, [(1, 1), (2, 2)])(x), atol=1e-6)
        plain = UNet(1, 1, depth=3, base_width=4, encoder="plain", blocks_per_level=3)
        intact, pruned = plain(x), without_blocks(plain, [(1, 1)])(x)
    assert (intact - pruned).abs().max() > 0.01 * intact.abs().max()
    assert isinstance(plain.encoder.stages[1].blocks[1], torch.nn.Module) and not isinstance(
        plain.encoder.stages[1].blocks[1], torch.nn.Identity
    )  # the original is untouched


@pytest.fixture
def trained(tiny_cfg_dict, tmp_path):
    tiny_cfg_dict["model"].update(blocks_per_level=2, encoder="residual")
    tiny_cfg_dict["train"].update(epochs=1, samples_per_epoch=4)
    Trainer(config_from_dict(tiny_cfg_dict), log=lambda *_: None).fit()
    return tmp_path / "run" / "checkpoints" / "last.pt"


def test_deletion_study_on_a_trained_model(trained):
    study = deletion_study(trained, draws=2)
    assert len(study["single"]) == 3 and len(study["by_count"]) == 3  # depth 3, one deletable block per level
    assert all(0.0 <= r["dice"] <= 1.0 for r in study["single"] + study["by_count"])
    assert study["by_count"][-1]["min"] == study["by_count"][-1]["max"]  # all deleted: one possible set
    assert study["encoder"] == "residual" and study["blocks_per_level"] == 2


def test_analyze_blocks_cli(trained, tmp_path, tiny_cfg_dict, meters):
    out = tmp_path / "blocks"
    result = CliRunner().invoke(
        main, ["analyze-blocks", "--checkpoint", str(trained), "--out", str(out), "--draws", "1"]
    )
    assert result.exit_code == 0, result.output
    # intact, 3 single deletions, 1 + 1 random sets of one and two blocks, all three deleted
    assert [(m.desc, m.expected, m.done) for m in meters] == [("analyze-blocks", 7, 7)]
    assert len(json.loads((out / "blocks.json").read_text())["studies"]) == 1
    assert (out / "figures" / "deletion_count.png").is_file()


def test_analyze_blocks_refuses_single_block_models(tiny_cfg_dict, tmp_path):
    tiny_cfg_dict["train"].update(epochs=1, samples_per_epoch=2)
    Trainer(config_from_dict(tiny_cfg_dict), log=lambda *_: None).fit()
    result = CliRunner().invoke(
        main,
        [
            "analyze-blocks",
            "--checkpoint",
            str(tmp_path / "run" / "checkpoints" / "last.pt"),
            "--out",
            str(tmp_path / "o"),
        ],
    )
    assert result.exit_code != 0 and "blocks_per_level > 1" in result.output


def _run(encoder: str, blocks: int, losses: list[float]) -> dict:
    return {
        "config": {"model": {"encoder": encoder, "blocks_per_level": blocks}},
        "history": [{"train_loss": v} for v in losses],
    }


def test_degradation_table_reads_final_losses_by_encoder_and_depth():
    grouped = {
        "p1": [_run("plain", 1, [0.9, 0.5, 0.3]), _run("plain", 1, [0.9, 0.5, 0.5])],
        "p4": [_run("plain", 4, [0.9, 0.7, 0.7])],
        "r4": [_run("residual", 4, [0.9, 0.4, 0.2])],
    }
    table, _, _ = degradation(grouped)
    assert table.columns == ["encoder", "1 block(s)/level", "4 block(s)/level"]
    rows = {r[0]: r[1:] for r in table.rows}
    assert rows["plain"][0].startswith("0.450")  # seeds' last-two-epoch means 0.4 and 0.5
    assert rows["plain"][1].startswith("0.700")
    assert rows["residual"] == ["–", "0.300 ± 0.000"]
    assert degradation({"a": [_run("plain", 2, [1.0, 0.5])]}) is None  # one depth: nothing to show
