"""k-fold training from one command: ``unetseg train --folds 3`` on tiny generated data,
the per-fold and pooled summary, and resuming that reuses finished folds."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from cli_helpers import assert_clean_failure, invoke

from unetseg.config import config_from_dict
from unetseg.models.checkpoint import load_checkpoint
from unetseg.training.crossval import fold_config, is_finished, pool


def test_fold_config_sets_a_block_split_and_its_own_folder(tiny_cfg_dict):
    cfg = config_from_dict(
        {**tiny_cfg_dict, "data": {**tiny_cfg_dict["data"], "split": {"mode": "names", "val_names": ["img_0"]}}}
    )
    fold = fold_config(cfg, 4, 2)
    assert fold.data.split.mode == "block" and (fold.data.split.folds, fold.data.split.fold) == (4, 2)
    assert fold.output_dir == cfg.output_dir / "fold2" and fold.name == "tiny_fold2"
    assert cfg.data.split.mode == "names"  # the original is untouched


def test_pool_is_mean_and_sample_std_over_finite_values():
    records = [
        {"val": {"dice": 0.5, "hd95": 3.0}},
        {"val": {"dice": 0.7, "hd95": float("nan")}},
        {"val": {"dice": 0.9}},
    ]
    pooled = pool(records)
    assert pooled["dice"]["mean"] == pytest.approx(0.7) and pooled["dice"]["std"] == pytest.approx(0.2)
    assert pooled["hd95"] == {"mean": 3.0, "std": pytest.approx(float("nan"), nan_ok=True), "n": 1}


def test_three_folds_from_one_command_then_resume_reuses_finished_folds(tiny_cfg_dict, tiny_cfg_file, tmp_path):
    out = tmp_path / "cv"
    result = invoke("train", "--config", tiny_cfg_file, "--out", out, "--folds", 3)
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "cv_summary.json").read_text())
    assert summary["folds"] == 3 and summary["monitor"] == "dice"
    folds = summary["per_fold"]
    assert [f["val_names"] for f in folds] == [["img_0", "img_1"], ["img_2", "img_3"], ["img_4", "img_5"]]
    for i, fold in enumerate(folds):
        state = load_checkpoint(out / f"fold{i}" / "checkpoints" / "last.pt")
        assert state["config"]["data"]["split"] == {
            **state["config"]["data"]["split"],
            "mode": "block",
            "folds": 3,
            "fold": i,
        }
        assert fold["best_epoch"] == state["best"]["epoch"] and fold["epochs_run"] == 2
        best_row = next(r for r in state["history"] if r["epoch"] == fold["best_epoch"])
        assert fold["val"]["dice"] == best_row["val_dice"]
        assert (out / f"fold{i}" / "checkpoints" / "best.pt").is_file()
    dice = [f["val"]["dice"] for f in folds]
    assert summary["pooled"]["dice"]["mean"] == pytest.approx(np.mean(dice))
    assert summary["pooled"]["dice"]["std"] == pytest.approx(np.std(dice, ddof=1))
    assert "mean ± std" in result.output and "fold 2/3: training" in result.output

    again = invoke("train", "--config", tiny_cfg_file, "--out", out, "--folds", 3)
    assert_clean_failure(again, "already hold runs", "--resume")

    finished = (out / "fold0" / "checkpoints" / "last.pt").stat().st_mtime_ns
    shutil.rmtree(out / "fold2")
    resumed = invoke("train", "--config", tiny_cfg_file, "--out", out, "--folds", 3, "--resume")
    assert resumed.exit_code == 0, resumed.output
    assert (
        "fold 0/3: finished before, reused" in resumed.output and "fold 1/3: finished before, reused" in resumed.output
    )
    assert "fold 2/3: training" in resumed.output
    assert (out / "fold0" / "checkpoints" / "last.pt").stat().st_mtime_ns == finished
    assert json.loads((out / "cv_summary.json").read_text())["per_fold"][:2] == folds[:2]

    # Settings of how fast a run goes, not of what it learns: a resume under other values reuses every fold.
    checkpoints = [out / f"fold{i}" / "checkpoints" / "last.pt" for i in range(3)]
    trained = [path.stat().st_mtime_ns for path in checkpoints]
    summary_text = (out / "cv_summary.json").read_text()
    fixture = config_from_dict(tiny_cfg_dict).train
    for override in (
        f"train.threads={fixture.threads + 1}",
        f"train.num_workers={fixture.num_workers + 1}",
        f"train.progress={str(not fixture.progress).lower()}",
    ):
        faster = invoke("train", "--config", tiny_cfg_file, "--out", out, "--folds", 3, "--resume", "--set", override)
        assert faster.exit_code == 0, (override, faster.output)
        assert [f"fold {i}/3: finished before, reused" in faster.output for i in range(3)] == [True] * 3, override
        assert "training" not in faster.output and "resuming" not in faster.output, override
        assert [path.stat().st_mtime_ns for path in checkpoints] == trained, override
        assert json.loads((out / "cv_summary.json").read_text())["per_fold"] == json.loads(summary_text)["per_fold"]

    # Finished folds trained under settings that change what is learned are not passed off as folds of
    # this run: the resume is refused, naming the setting, and leaves the folds and the summary as they were.
    summary_text = (out / "cv_summary.json").read_text()
    two_folds = invoke("train", "--config", tiny_cfg_file, "--out", out, "--folds", 2, "--resume")
    assert_clean_failure(two_folds, "fold 0 in", "finished under other settings (data.split.folds)")
    other_lr = invoke(
        "train", "--config", tiny_cfg_file, "--out", out, "--folds", 3, "--resume", "--set", "train.lr=0.5"
    )
    assert_clean_failure(other_lr, "(train.lr)")
    assert (out / "cv_summary.json").read_text() == summary_text
    assert [path.stat().st_mtime_ns for path in checkpoints] == trained


def test_an_interrupted_fold_is_resumed(tiny_cfg_dict, tiny_cfg_file, tmp_path):
    out = tmp_path / "cv"
    short = invoke("train", "--config", tiny_cfg_file, "--out", out, "--folds", 2, "--set", "train.epochs=1")
    assert short.exit_code == 0, short.output
    cfg = fold_config(config_from_dict(tiny_cfg_dict), 2, 0)
    assert not is_finished(load_checkpoint(out / "fold0" / "checkpoints" / "last.pt"), cfg)  # 1 of 2 epochs
    resumed = invoke("train", "--config", tiny_cfg_file, "--out", out, "--folds", 2, "--resume")
    assert resumed.exit_code == 0, resumed.output
    assert "fold 0/2: resuming" in resumed.output and "epochs 2..2" in resumed.output
    assert [f["epochs_run"] for f in json.loads((out / "cv_summary.json").read_text())["per_fold"]] == [2, 2]
