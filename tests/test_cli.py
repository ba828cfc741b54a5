"""The command line: train -> predict -> evaluate end to end, and user errors shown as one
line without a traceback."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import tifffile
from cli_helpers import assert_clean_failure, invoke
from click.testing import CliRunner
from conftest import REPO, repo_pythonpath, write_yaml

from unetseg.cli import main
from unetseg.data.io import read_raw


def _console_script() -> Path:
    """The installed `unetseg` console script: beside this interpreter (a venv's bin/, found whether or
    not bin/ is on PATH), else wherever PATH has one. Missing means the package is not installed."""
    beside = Path(sys.executable).parent / "unetseg"
    if beside.is_file():
        return beside
    found = shutil.which("unetseg")
    assert found, f"no unetseg console script beside {sys.executable} or on PATH: is the package installed?"
    return Path(found)


def test_help_via_entry_point_and_module():
    # The installed script imports whichever unetseg the interpreter finds: put this checkout first.
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": repo_pythonpath()}
    for cmd in ([str(_console_script()), "--help"], [sys.executable, "-m", "unetseg", "--help"]):
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env, cwd=REPO)
        assert proc.returncode == 0, proc.stderr
        for command in ("train", "predict", "evaluate"):
            assert command in proc.stdout
    for command in ("train", "predict", "evaluate"):
        result = invoke(command, "--help")
        assert result.exit_code == 0 and "Usage" in result.output
    version = invoke("--version")
    assert version.exit_code == 0 and "0.1.0" in version.output


def test_train_predict_evaluate_end_to_end(trained, tmp_path):
    ckpt = trained / "checkpoints" / "best.pt"
    for name in ("config.yaml", "metrics.csv", "checkpoints/last.pt", "checkpoints/best.pt"):
        assert (trained / name).is_file(), name

    inputs = tmp_path / "inputs"
    inputs.mkdir()
    rng = np.random.default_rng(0)
    odd = (rng.random((37, 50)) * 255).astype(np.uint8)  # 50 wide, 37 high
    assert cv2.imwrite(str(inputs / "odd.png"), odd)
    assert cv2.imwrite(str(inputs / "square.png"), (rng.random((64, 64)) * 255).astype(np.uint8))
    (inputs / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + rng.bytes(100))
    masks = tmp_path / "masks"

    result = invoke("predict", inputs, "--checkpoint", ckpt, "--out", masks, "--device", "cpu")
    assert result.exit_code != 0
    assert "Traceback" not in result.output
    assert "corrupt" in result.output and "corrupt.png" in result.stderr
    assert "wrote 2 mask(s)" in result.output
    assert sorted(p.name for p in masks.iterdir()) == ["odd.png", "square.png"]
    mask = read_raw(masks / "odd.png")
    assert mask.shape == (37, 50) and set(np.unique(mask).tolist()) <= {0, 255}
    assert read_raw(masks / "square.png").shape == (64, 64)

    again = invoke("predict", inputs, "--checkpoint", ckpt, "--out", masks)
    assert_clean_failure(again, "already exist", "--overwrite")

    (inputs / "corrupt.png").unlink()
    tta = invoke(
        "predict",
        inputs,
        "--checkpoint",
        ckpt,
        "--out",
        masks,
        "--overwrite",
        "--tta",
        "d4",
        "--mode",
        "sliding",
        "--roi-size",
        "32",
        "--prob",
    )
    assert tta.exit_code == 0, tta.output
    assert (masks / "odd_prob.tif").is_file()

    report = tmp_path / "report" / "metrics.json"
    ev = invoke("evaluate", "--checkpoint", ckpt, "--json", report)
    assert ev.exit_code == 0, ev.output
    assert "val split, 2 image(s)" in ev.output
    data = json.loads(report.read_text())
    assert data["split"] == "val" and data["checkpoint"] == str(ckpt)
    for key in ("dice", "iou", "pixel_error", "rand_error", "vi"):
        assert key in data["mean"] and isinstance(data["mean"][key], float)
    assert [row["name"] for row in data["images"]] == ["img_4", "img_5"]
    assert data["mean"]["dice"] == pytest.approx(np.mean([r["dice"] for r in data["images"]]))

    everything = invoke("evaluate", "--checkpoint", ckpt, "--split", "all", "--tta", "flips")
    assert everything.exit_code == 0 and "all split, 6 image(s)" in everything.output


def test_threshold_option_sets_where_foreground_starts(trained, tmp_path):
    """--threshold overrides the checkpoint's inference.threshold in predict and evaluate."""
    ckpt = trained / "checkpoints" / "last.pt"
    inputs = tmp_path / "in"
    inputs.mkdir()
    image = (np.random.default_rng(3).random((40, 48)) * 255).astype(np.uint8)
    assert cv2.imwrite(str(inputs / "a.png"), image)
    fractions = {}
    for threshold in ("0.2", "0.8"):
        out = tmp_path / f"t{threshold}"
        result = invoke("predict", inputs, "--checkpoint", ckpt, "--out", out, "--prob", "--threshold", threshold)
        assert result.exit_code == 0, result.output
        prob = tifffile.imread(out / "a_prob.tif")
        mask = read_raw(out / "a.png")
        np.testing.assert_array_equal(mask == 255, prob > float(threshold))
        fractions[threshold] = (mask == 255).mean()
    assert fractions["0.2"] > fractions["0.8"]

    scores = {}
    for threshold in ("0.01", "0.99"):
        ev = invoke(
            "evaluate", "--checkpoint", ckpt, "--threshold", threshold, "--json", tmp_path / f"{threshold}.json"
        )
        assert ev.exit_code == 0, ev.output
        scores[threshold] = json.loads((tmp_path / f"{threshold}.json").read_text())["mean"]["dice"]
    assert scores["0.01"] != scores["0.99"]
    assert_clean_failure(invoke("evaluate", "--checkpoint", ckpt, "--threshold", "1.5"), "--threshold")


def test_evaluate_with_other_config(trained, tiny_cfg_file, tmp_path):
    ev = invoke(
        "evaluate",
        "--checkpoint",
        trained / "checkpoints" / "last.pt",
        "--config",
        tiny_cfg_file,
        "--set",
        "data.split.fold=0",
        "--json",
        tmp_path / "m.json",
    )
    assert ev.exit_code == 0, ev.output
    assert [r["name"] for r in json.loads((tmp_path / "m.json").read_text())["images"]] == ["img_0", "img_1"]
    ckpt = trained / "checkpoints" / "last.pt"
    assert_clean_failure(
        invoke("evaluate", "--checkpoint", ckpt, "--config", tiny_cfg_file, "--set", "data.channels=3"),
        "does not describe the data",
        "data.channels 3 vs 1",
    )
    assert_clean_failure(
        invoke("evaluate", "--checkpoint", ckpt, "--set", "data.split.fold=0"), "give --config too"
    )  # an override with nothing to override is not silently dropped


def test_unknown_config_key_is_reported_without_traceback(tiny_cfg_dict, tmp_path):
    tiny_cfg_dict["model"]["depht"] = 3
    path = write_yaml(tmp_path / "typo.yaml", tiny_cfg_dict)
    result = invoke("train", "--config", path)
    assert_clean_failure(result, "model.depht", "did you mean 'depth'")
    assert not Path(tiny_cfg_dict["output_dir"]).exists()


def test_bad_override_is_reported_without_traceback(tiny_cfg_file):
    assert_clean_failure(invoke("train", "--config", tiny_cfg_file, "--set", "train.epochs=soon"), "train.epochs")
    assert_clean_failure(invoke("train", "--config", tiny_cfg_file, "--set", "train.epochs"), "key=value")


def test_unknown_smp_encoder_is_reported_without_traceback(tiny_cfg_file):
    result = invoke("train", "--config", tiny_cfg_file, "--set", "model.encoder=smp:resnt18")
    assert_clean_failure(result, "unknown smp encoder 'resnt18'", "resnet18")


@pytest.mark.parametrize(
    "device,message",
    [
        ("gpu0", "not a device name"),
        ("cuda:99", "device 'cuda:99'"),
        ("mps", "runs on cpu or cuda"),
        ("meta", "runs on cpu or cuda"),
    ],
)
def test_unusable_device_is_reported_without_traceback(tiny_cfg_dict, tiny_cfg_file, tmp_path, device, message):
    """A device this machine lacks (no CUDA here, or a hundredth GPU on a GPU machine), or a kind
    unetseg does not support, is the config's fault."""
    assert_clean_failure(invoke("train", "--config", tiny_cfg_file, "--set", f"train.device={device}"), message)
    assert not Path(tiny_cfg_dict["output_dir"]).exists()
    image = tmp_path / "a.png"
    cv2.imwrite(str(image), np.zeros((8, 8), np.uint8))
    (tmp_path / "x.pt").write_bytes(b"")  # the device is refused before the checkpoint is read
    assert_clean_failure(
        invoke("predict", image, "--checkpoint", tmp_path / "x.pt", "--out", tmp_path / "o", "--device", device),
        message,
    )


def test_missing_and_invalid_config_files(tmp_path):
    assert_clean_failure(invoke("train", "--config", tmp_path / "absent.yaml"), "absent.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: {epochs: [1,\n")
    assert_clean_failure(invoke("train", "--config", bad), "not valid YAML")


def test_existing_run_and_resume(trained, tiny_cfg_file):
    result = invoke("train", "--config", tiny_cfg_file, "--out", trained)
    assert_clean_failure(result, "already holds a run", "--resume")
    more = invoke("train", "--config", tiny_cfg_file, "--out", trained, "--resume", "--set", "train.epochs=3")
    assert more.exit_code == 0, more.output
    assert "epochs 3..3" in more.output and "changed settings train.epochs" in more.output
    assert len((trained / "metrics.csv").read_text().strip().splitlines()) == 1 + 3


def test_data_errors_are_reported_without_traceback(tiny_cfg_file, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    result = invoke("train", "--config", tiny_cfg_file, "--set", f"data.images={empty}")
    assert_clean_failure(result, "no image files")


def test_bad_checkpoint_is_reported_without_traceback(tmp_path):
    ckpt = tmp_path / "broken.pt"
    ckpt.write_bytes(b"not a checkpoint")
    image = tmp_path / "a.png"
    cv2.imwrite(str(image), np.zeros((8, 8), np.uint8))
    assert_clean_failure(invoke("predict", image, "--checkpoint", ckpt, "--out", tmp_path / "o"), "broken.pt")
    assert_clean_failure(invoke("evaluate", "--checkpoint", tmp_path / "missing.pt"), "missing.pt")


def _unwritable_dirs(tmp_path: Path) -> list[Path]:
    """Output folders that cannot be created: under a regular file always, and a read-only
    folder where this user is blocked by permissions (not as root)."""
    (tmp_path / "afile").write_text("")
    paths = [tmp_path / "afile" / "sub"]
    readonly = tmp_path / "readonly"
    readonly.mkdir()
    readonly.chmod(0o555)
    if not os.access(readonly, os.W_OK):
        paths.append(readonly / "sub")
    return paths


def test_unwritable_train_output_is_one_clear_error(tiny_cfg_file, tmp_path):
    for out in _unwritable_dirs(tmp_path):
        result = invoke("train", "--config", tiny_cfg_file, "--out", out)
        assert_clean_failure(result, f"cannot write to output directory {out}")
        assert result.output.count("Error") == 1


def test_unwritable_predict_output_is_one_clear_error(trained, tmp_path):
    image = tmp_path / "a.png"
    cv2.imwrite(str(image), np.zeros((16, 16), np.uint8))
    for out in _unwritable_dirs(tmp_path):
        result = invoke("predict", image, "--checkpoint", trained / "checkpoints" / "best.pt", "--out", out)
        assert_clean_failure(result, f"cannot write to output directory {out}")
        assert result.output.count("Error") == 1
    file_as_out = invoke(
        "predict", image, "--checkpoint", trained / "checkpoints" / "best.pt", "--out", tmp_path / "afile"
    )
    assert_clean_failure(file_as_out, "is a file")


def test_unwritable_report_outputs_are_one_clear_error(trained, tmp_path, isbi):
    """--json and report folders under a file or in a read-only place: one message, no traceback."""
    ckpt = trained / "checkpoints" / "best.pt"
    for out in _unwritable_dirs(tmp_path):
        for args in (
            ["evaluate", "--checkpoint", ckpt, "--json", out / "m.json"],
            ["info", ckpt, "--json", out / "i.json"],
            ["data", "check", isbi / "train", "--brief", "--json", out / "c.json"],
            ["analyze-skips", "--checkpoint", ckpt, "--out", out / "skips"],
        ):
            result = invoke(*args)
            assert_clean_failure(result, "cannot write to output directory", str(out))
            assert result.output.count("Error") == 1, args


def _json_command(command: str, trained: Path, config: Path) -> list[object]:
    ckpt = trained / "checkpoints" / "best.pt"
    return {
        "evaluate": ["evaluate", "--checkpoint", ckpt],
        "info": ["info", ckpt],
        "data check": ["data", "check", "--config", config, "--brief"],
    }[command]


@pytest.mark.parametrize("command", ["evaluate", "info", "data check"])
def test_json_onto_an_existing_file_or_a_link_is_refused_unless_overwrite(trained, tiny_cfg_file, tmp_path, command):
    """The probe's data loss: ``--json`` onto the evaluated ``best.pt`` turned the checkpoint into
    JSON. An existing file, or a link (dangling here), is refused before the work unless
    ``--overwrite``; with it the file is replaced by rename, and a link's target is never written."""
    args = _json_command(command, trained, tiny_cfg_file)
    ckpt = trained / "checkpoints" / "best.pt"
    saved = ckpt.read_bytes()
    result = invoke(*args, "--json", ckpt)
    assert_clean_failure(result, f"--json {ckpt}: a file is already there; pass --overwrite to replace it")
    assert result.output.count("Error") == 1 and "split," not in result.output  # refused before evaluating
    assert ckpt.read_bytes() == saved

    victim = tmp_path / "outside" / "victim.json"
    link = trained / "scores.json"
    link.symlink_to(victim)
    result = invoke(*args, "--json", link)
    assert_clean_failure(result, f"--json {link}: a symbolic link is already there; pass --overwrite")
    assert not victim.exists() and not victim.parent.exists()
    result = invoke(*args, "--json", link, "--overwrite")
    assert result.exit_code == 0, result.output
    assert not link.is_symlink() and isinstance(json.loads(link.read_text()), dict)
    assert not victim.parent.exists()

    old = trained / "old.json"
    old.write_text("an earlier report")
    result = invoke(*args, "--json", old, "--overwrite")
    assert result.exit_code == 0, result.output
    assert isinstance(json.loads(old.read_text()), dict)
    assert not [p.name for p in trained.iterdir() if p.name.endswith(".tmp")]  # written by rename, nothing left


def test_predict_refuses_an_output_folder_at_or_inside_its_input(trained, pair_dirs):
    """``predict IMAGES --out IMAGES --overwrite`` replaced every input image by its mask; the
    message suggested ``--overwrite``. Now refused before any work, flag or not."""
    images, _ = pair_dirs
    ckpt = trained / "checkpoints" / "best.pt"
    before = {p.name: p.read_bytes() for p in images.iterdir()}
    cases = [
        (images, images, ["--overwrite"], "is the input folder: the masks, named as the images, would replace them"),
        (images, images, [], "is the input folder"),
        (images, images / ".." / images.name, ["--overwrite"], "is the input folder"),
        (images, images / "masks", [], f"is inside the input folder {images}"),
        (images / "img_0.png", images, ["--overwrite"], f"is the folder of the input {images / 'img_0.png'}"),
    ]
    for source, out, flags, says in cases:
        result = invoke("predict", source, "--checkpoint", ckpt, "--out", out, *flags)
        assert_clean_failure(result, f"--out {out} {says}")
        assert result.output.count("Error") == 1
    assert {p.name: p.read_bytes() for p in images.iterdir()} == before


def test_checkpoint_write_failure_is_a_training_error(tiny_cfg_file, tmp_path, monkeypatch):
    import unetseg.training.trainer as trainer_module

    def full_disk(path, state):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(trainer_module, "save_checkpoint", full_disk)
    result = invoke("train", "--config", tiny_cfg_file, "--out", tmp_path / "run")
    assert_clean_failure(result, "cannot write checkpoint", "No space left on device")


def test_missing_checkpoint_for_predict(tmp_path):
    image = tmp_path / "a.png"
    cv2.imwrite(str(image), np.zeros((8, 8), np.uint8))
    result = invoke("predict", image, "--checkpoint", tmp_path / "absent.pt", "--out", tmp_path / "o")
    assert_clean_failure(result, "absent.pt", "no such checkpoint")
    assert not (tmp_path / "o").exists()


def test_evaluate_on_a_separate_labelled_folder(tmp_path, tiny_cfg_file):
    from conftest import write_pairs

    runner = CliRunner()
    out = tmp_path / "run"
    assert runner.invoke(main, ["train", "--config", str(tiny_cfg_file), "--out", str(out)]).exit_code == 0
    images, masks = write_pairs(tmp_path / "test", n=3, seed=7)
    json_path = tmp_path / "test.json"
    checkpoint = out / "checkpoints" / "last.pt"
    args = ["evaluate", "--checkpoint", checkpoint, "--images", images, "--masks", masks, "--json", json_path]
    result = runner.invoke(main, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    data = json.loads(json_path.read_text())
    assert data["split"] == "all" and len(data["images"]) == 3
    assert "bf1_1px" not in data["mean"]
    detailed = runner.invoke(main, [str(a) for a in [*args, "--detail", "--overwrite"]])  # the same --json again
    assert detailed.exit_code == 0, detailed.output
    mean = json.loads(json_path.read_text())["mean"]
    assert {"bf1_1px", "bf1_2px", "hd95", "cldice", "skeleton_recall"} <= set(mean) and 0 <= mean["bf1_2px"] <= 1
    assert {row["name"] for row in data["images"]} == {"img_0", "img_1", "img_2"}
    half = runner.invoke(
        main, ["evaluate", "--checkpoint", str(out / "checkpoints" / "last.pt"), "--images", str(images)]
    )
    assert half.exit_code != 0 and "--images and --masks go together" in half.output


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_checkpoint_with_non_finite_weights_is_refused_by_predict_and_evaluate_and_flagged_by_info(
    tiny_cfg_dict, tmp_path, bad
):
    """Issue #27: NaN weights made predict write all-foreground masks, evaluate print metrics
    and info say nothing, all with exit code 0."""
    import torch
    from ckpt_helpers import write_checkpoint

    from unetseg.models.checkpoint import load_checkpoint, save_checkpoint

    ckpt = write_checkpoint(tmp_path / "diverged.pt", tiny_cfg_dict)
    state = load_checkpoint(ckpt)
    name = next(k for k, v in state["model"].items() if v.is_floating_point())
    state["model"][name].view(-1)[0] = bad
    save_checkpoint(ckpt, {k: v for k, v in state.items() if k != "format"})
    images = Path(tiny_cfg_dict["data"]["images"])
    message = f"{ckpt}: the weights hold NaN or infinite values ({name}); "
    result = invoke("predict", images, "--checkpoint", ckpt, "--out", tmp_path / "pred")
    assert_clean_failure(result, message)
    assert not (tmp_path / "pred").exists()
    assert_clean_failure(invoke("evaluate", "--checkpoint", ckpt), message)
    result = invoke("info", ckpt)
    assert result.exit_code == 0, result.output
    assert f"warning: {message}" in result.output and "parameters:" in result.output
    assert torch.isfinite(load_checkpoint(write_checkpoint(tmp_path / "fine.pt", tiny_cfg_dict))["model"][name]).all()
    assert "warning" not in invoke("info", tmp_path / "fine.pt").output


def test_bad_settings_are_one_message_before_anything_is_written(tiny_cfg_file, tmp_path):
    """Issue #27: ``--set augment.crop_size=100000`` asked for a 40 GB batch after config.yaml
    and tensorboard/ were written; ``--set seed=-5`` ended in numpy's traceback."""
    out = tmp_path / "run"
    result = invoke("train", "--config", tiny_cfg_file, "--out", out, "--set", "augment.crop_size=100000")
    assert_clean_failure(
        result, "augment.crop_size 100000 is larger than every training image", "64x64, WxH", "at most 64"
    )
    assert not out.exists() or sorted(p.name for p in out.iterdir()) == []
    result = invoke("train", "--config", tiny_cfg_file, "--out", out, "--set", "seed=-5")
    assert_clean_failure(result, "seed: Input should be greater than or equal to 0 (got -5)")
    assert (
        invoke("train", "--config", tiny_cfg_file, "--out", tmp_path / "ok", "--set", "augment.crop_size=64").exit_code
        == 0
    )


@pytest.mark.parametrize("key, value", [("history", None), ("history", "garbage"), ("best", None)])
def test_resume_from_a_checkpoint_without_its_record_is_one_message(trained, tiny_cfg_file, key, value):
    """A checkpoint whose history is None was a TypeError on --resume; resuming without the
    history would also have rewritten metrics.csv without the earlier epochs."""
    from unetseg.models.checkpoint import load_checkpoint, save_checkpoint

    last = trained / "checkpoints" / "last.pt"
    state = load_checkpoint(last)
    state[key] = value
    save_checkpoint(last, {k: v for k, v in state.items() if k != "format"})
    metrics = (trained / "metrics.csv").read_text()
    result = invoke("train", "--config", tiny_cfg_file, "--out", trained, "--resume", "--set", "train.epochs=3")
    assert_clean_failure(result, f"{last}: its", f"(key '{key}'), so the run cannot be continued")
    assert result.output.count("Error") == 1
    assert (trained / "metrics.csv").read_text() == metrics
