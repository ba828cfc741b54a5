"""``unetseg predict IMAGES`` with nothing else: the newest finished run's model, masks written
beside that run, and one clear message when there is no model yet."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import click
import pytest
import yaml
from click.testing import CliRunner
from conftest import write_yaml

from unetseg.cli import main
from unetseg.cli.runs import CHECKPOINT, finished_checkpoints, predictions_folder


def invoke(*args: object):
    return CliRunner().invoke(main, [str(a) for a in args])


def touch(path: Path, mtime: float) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    os.utime(path, (mtime, mtime))
    return path


def test_finished_runs_are_best_checkpoints_of_runs_and_folds_newest_first(tmp_path: Path) -> None:
    root = tmp_path / "runs"
    old = touch(root / "old" / "checkpoints" / "best.pt", 1_000)
    fold = touch(root / "cv" / "fold1" / "checkpoints" / "best.pt", 3_000)
    new = touch(root / "new" / "checkpoints" / "best.pt", 2_000)
    touch(root / "unfinished" / "checkpoints" / "last.pt", 9_000)  # no best.pt yet
    touch(root / "cut" / "checkpoints" / ".best.pt.x1.tmp", 9_000)  # a save cut short
    touch(root / "ablation" / "runs" / "concat" / "seed0-ab12" / "checkpoints" / "best.pt", 9_000)  # the grid's cache
    assert finished_checkpoints(root) == [fold, new, old]
    assert finished_checkpoints(root / "new") == [new]  # a config's output_dir is the run itself
    assert finished_checkpoints(tmp_path / "absent") == []


def test_predictions_go_beside_the_run(tmp_path: Path) -> None:
    best = tmp_path / "runs" / "a" / "checkpoints" / "best.pt"
    (tmp_path / "test").mkdir()
    assert predictions_folder(best, tmp_path / "test") == tmp_path / "runs" / "a" / "predictions" / "test"
    assert (
        predictions_folder(best, tmp_path / "test" / "slice.07.png")
        == tmp_path / "runs" / "a" / "predictions" / "slice.07"
    )
    assert predictions_folder(tmp_path / "model.pt", tmp_path / "case.nii.gz") == tmp_path / "predictions" / "case"


def test_no_model_yet_is_one_message_saying_how_to_get_one(tmp_path: Path, monkeypatch, tiny_cfg_dict) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs" / "started" / "checkpoints").mkdir(parents=True)
    result = invoke("predict", tiny_cfg_dict["data"]["images"])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert result.output.strip().splitlines() == [
        "Error: no trained model in runs/ (no run there has checkpoints/best.pt): train one first with "
        "`unetseg train --config configs/isbi_cpu.yaml` (about 8 minutes on a laptop CPU), or give --checkpoint"
    ]
    cfg = write_yaml(tmp_path / "mine.yaml", {**tiny_cfg_dict, "output_dir": "runs/mine"})
    result = invoke("predict", tiny_cfg_dict["data"]["images"], "--config", cfg)
    assert result.exit_code == 1
    assert (
        f"no trained model in runs/mine/ (no run there has checkpoints/best.pt): train one first with "
        f"`unetseg train --config {cfg}`, or give --checkpoint" in result.output
    )
    assert not (tmp_path / "runs" / "started" / "predictions").exists()


def test_predict_takes_the_newest_run_and_writes_beside_it(
    tmp_path: Path, monkeypatch, tiny_cfg_file, pair_dirs
) -> None:
    monkeypatch.chdir(tmp_path)
    images = pair_dirs[0]
    assert invoke("train", "--config", tiny_cfg_file, "--out", "runs/first", "--set", "train.epochs=1").exit_code == 0
    shutil.copytree(tmp_path / "runs" / "first", tmp_path / "runs" / "second")
    newer = (tmp_path / "runs" / "first" / "checkpoints" / "best.pt").stat().st_mtime + 10
    os.utime(tmp_path / "runs" / "second" / "checkpoints" / "best.pt", (newer, newer))

    result = invoke("predict", images)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0] == f"using {Path('runs/second/checkpoints/best.pt')} (the newest finished run in runs/)"
    out = Path("runs") / "second" / "predictions" / "images"
    assert lines[-1] == f"wrote 6 mask(s) to {out}"
    assert sorted(p.name for p in out.iterdir()) == [f"img_{i}.png" for i in range(6)]

    again = invoke("predict", images)
    assert again.exit_code == 1 and "already exist" in again.output and "--overwrite" in again.output
    assert invoke("predict", images, "--overwrite").exit_code == 0

    single = invoke("predict", images / "img_2.png")
    assert single.exit_code == 0 and (tmp_path / "runs" / "second" / "predictions" / "img_2" / "img_2.png").is_file()

    # --config looks in its output_dir only: here the older run.
    cfg = write_yaml(tmp_path / "first.yaml", {**yaml.safe_load(tiny_cfg_file.read_text()), "output_dir": "runs/first"})
    chosen = invoke("predict", images, "--config", cfg)
    assert chosen.exit_code == 0, chosen.output
    assert (
        chosen.output.splitlines()[0]
        == f"using {Path('runs/first/checkpoints/best.pt')} (the newest finished run in runs/first/)"
    )
    assert (tmp_path / "runs" / "first" / "predictions" / "images" / "img_0.png").is_file()

    # The run folder train printed stands for its model; so does its checkpoints/ folder.
    for named in ("runs/first", "runs/first/checkpoints"):
        by_folder = invoke("predict", images, "--checkpoint", named, "--out", f"by_{Path(named).name}")
        assert by_folder.exit_code == 0, by_folder.output
        assert sorted(p.name for p in Path(f"by_{Path(named).name}").iterdir()) == [f"img_{i}.png" for i in range(6)]


def test_checkpoint_option_names_the_model_a_wrong_path_meant(tmp_path: Path) -> None:
    run = tmp_path / "run"
    best = touch(run / "checkpoints" / "best.pt", 1_000)
    (tmp_path / "empty").mkdir()
    assert CHECKPOINT.convert(str(run), None, None) == best
    assert CHECKPOINT.convert(str(run / "checkpoints"), None, None) == best
    assert CHECKPOINT.convert(str(best), None, None) == best
    with pytest.raises(click.BadParameter, match=r"gone.pt: no such checkpoint file$"):
        CHECKPOINT.convert(str(tmp_path / "gone.pt"), None, None)
    runs = tmp_path / "runs"
    second = touch(runs / "b" / "checkpoints" / "best.pt", 2_000)
    with pytest.raises(
        click.BadParameter, match=r"runs is a folder without checkpoints/best.pt; the runs in it have: "
    ) as refused:
        CHECKPOINT.convert(str(runs), None, None)
    assert str(second) in str(refused.value)
    with pytest.raises(
        click.BadParameter, match=r"run/best.pt: no such checkpoint file; did you mean .*run/checkpoints/best.pt\?"
    ):
        CHECKPOINT.convert(str(run / "best.pt"), None, None)
    with pytest.raises(click.BadParameter, match=r"empty is a folder without checkpoints/best.pt"):
        CHECKPOINT.convert(str(tmp_path / "empty"), None, None)


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--checkpoint", "a.pt", "--checkpoint", "b.pt"], "give --out for its masks"),
        (["--checkpoint", "a.pt", "--config", "c.yaml"], "--config only says where to look for the newest run"),
    ],
)
def test_predict_option_clashes_are_usage_errors(
    tmp_path: Path, monkeypatch, pair_dirs, extra: list[str], message: str
) -> None:
    monkeypatch.chdir(tmp_path)
    for name in ("a.pt", "b.pt"):  # checkpoints that exist: the clash, not a missing file, is refused
        touch(tmp_path / name, 1_000)
    result = invoke("predict", pair_dirs[0], *extra)
    assert result.exit_code == 2 and message in result.output
