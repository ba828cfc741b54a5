"""The dataset check: every kind of problem in generated folders, the table and exit code of
``unetseg data check``, and ``unetseg train`` stopping on an error before any output."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import tifffile
from cli_helpers import assert_clean_failure, invoke
from conftest import write_pairs, write_yaml

from unetseg.config import DataConfig
from unetseg.data.check import check_dataset


def broken_dataset(root: Path) -> tuple[Path, Path]:
    """Six generated pairs, then one problem of each kind."""
    images, masks = write_pairs(root, n=8)
    cv2.imwrite(str(images / "lonely.png"), np.full((64, 64), 9, np.uint8))  # no mask (and constant)
    cv2.imwrite(str(masks / "ghost.png"), np.zeros((64, 64), np.uint8))  # no image
    cv2.imwrite(str(masks / "img_1.png"), np.zeros((32, 48), np.uint8))  # size mismatch
    three = cv2.imread(str(masks / "img_2.png"), cv2.IMREAD_UNCHANGED)
    three[:8, :8] = 128
    cv2.imwrite(str(masks / "img_2.png"), three)  # 0, 128, 255
    (images / "img_3.png").unlink()
    nan = np.random.default_rng(0).random((64, 64)).astype(np.float32)
    nan[3, 4] = np.nan
    tifffile.imwrite(images / "img_3.tif", nan)  # NaN, and float32 among uint8
    grey = cv2.imread(str(images / "img_4.png"), cv2.IMREAD_UNCHANGED)
    cv2.imwrite(str(images / "img_4.png"), np.dstack([grey, grey, grey]))  # 3 channels among 1
    cv2.imwrite(str(masks / "img_5.png"), np.zeros((64, 64), np.uint8))  # empty
    (images / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    cv2.imwrite(str(masks / "broken.png"), np.zeros((64, 64), np.uint8))  # unreadable image
    colour = np.zeros((64, 64, 3), np.uint8)
    colour[..., 2] = 255
    cv2.imwrite(str(masks / "img_6.png"), colour)  # colour mask
    return images, masks


def kinds(report) -> set[tuple[str, str, str]]:
    return {(p.severity, p.kind, Path(p.path).name) for p in report.problems}


def test_every_kind_of_problem_is_found(tmp_path):
    images, masks = broken_dataset(tmp_path)
    report = check_dataset(DataConfig(images=images, masks=masks, label_map={0: 0, 255: 1}))
    found = kinds(report)
    expected = {
        ("error", "no mask", "lonely.png"),
        ("warning", "constant image", "lonely.png"),
        ("warning", "no image", "ghost.png"),
        ("error", "size mismatch", "img_1.png"),
        ("error", "labels", "img_2.png"),
        ("error", "non-finite", "img_3.tif"),
        ("warning", "dtype", "img_3.tif"),
        ("warning", "channels", "img_4.png"),
        ("warning", "empty mask", "img_5.png"),
        ("error", "unreadable", "broken.png"),
        ("error", "labels", "img_6.png"),
    }
    assert expected <= found, expected - found
    assert not {k for k in found if k[2] in ("img_0.png", "img_7.png")}  # the good pairs are clean
    assert report.fatal and len(report.errors) == 6
    detail = {p.kind + Path(p.path).name: p.detail for p in report.problems}
    assert "[128]" in detail["labelsimg_2.png"] and "48x32" in detail["size mismatchimg_1.png"]
    stats = {s.name: s for s in report.stats}
    assert stats["img_4"].channels == 3 and stats["img_3"].dtype == "float32"
    assert stats["lonely"].min == stats["lonely"].max == 9 and stats["lonely"].mask is None
    assert stats["img_5"].class_pixels == [64 * 64, 0]
    freqs = report.class_frequencies()
    assert sum(freqs) == pytest.approx(1.0) and 0 < freqs[1] < 0.5


def test_without_a_label_map_several_values_are_a_warning(tmp_path):
    images, masks = write_pairs(tmp_path, n=3)
    mask = cv2.imread(str(masks / "img_0.png"), cv2.IMREAD_UNCHANGED)
    mask[:4, :4] = 7
    cv2.imwrite(str(masks / "img_0.png"), mask)
    report = check_dataset(DataConfig(images=images, masks=masks, split={"folds": 3}))
    assert kinds(report) == {("warning", "labels", "img_0.png")} and not report.fatal
    assert "[7, 255]" in report.problems[0].detail


def test_split_and_missing_class_and_folders_mode(tmp_path):
    images, masks = write_pairs(tmp_path / "a", n=2)
    report = check_dataset(DataConfig(images=images, masks=masks, label_map={0: 0, 255: 1, 100: 2}))
    assert ("error", "split", "images") in kinds(report)  # 2 pairs cannot make 5 folds
    assert ("warning", "missing class", "masks") in kinds(report)
    val_images, val_masks = write_pairs(tmp_path / "val", n=2)
    (val_masks / "img_1.png").unlink()
    split = {"mode": "folders", "val_images": str(val_images), "val_masks": str(val_masks)}
    report = check_dataset(DataConfig(images=images, masks=masks, split=split))
    assert kinds(report) == {("error", "no mask", "img_1.png")}
    assert str(val_images) in report.problems[0].path
    missing = check_dataset(DataConfig(images=tmp_path / "nowhere", masks=masks))
    assert kinds(missing) == {("error", "folder", "nowhere")}


def test_data_check_command_table_json_and_exit_code(tmp_path):
    broken_dataset(tmp_path / "set")
    out = tmp_path / "check.json"
    result = invoke("data", "check", tmp_path / "set", "--json", out)
    assert result.exit_code == 1, result.output
    for fragment in (
        "5 error(s)",
        "severity",
        "no mask",
        "lonely.png",
        "size mismatch",
        "non-finite",
        "img_3.tif",
        "per image:",
        "class frequencies",
    ):
        assert fragment in result.output, fragment
    assert result.output.index("error ") < result.output.index("warning ")  # errors first
    data = json.loads(out.read_text())
    assert data["fatal"] and data["errors"] == 5 and len(data["per_image"]) == 9
    clean_images, clean_masks = write_pairs(tmp_path / "clean", n=5)
    ok = invoke("data", "check", "--images", clean_images, "--masks", clean_masks, "--brief")
    assert ok.exit_code == 0 and "no problems found" in ok.output and "per image" not in ok.output


def test_data_check_interface_errors(tmp_path, tiny_cfg_file):
    write_pairs(tmp_path / "set", n=5)
    assert invoke("data", "check").exit_code == 2
    assert invoke("data", "check", tmp_path / "set", "--config", tiny_cfg_file).exit_code == 2
    assert invoke("data", "check", "--images", tmp_path / "set" / "images").exit_code == 2
    (tmp_path / "set" / "labels").mkdir()
    both = invoke("data", "check", tmp_path / "set")
    assert both.exit_code == 2 and "masks, labels" in both.output
    configured = invoke("data", "check", "--config", tiny_cfg_file, "--set", "data.label_map={0: 0, 255: 1}")
    assert configured.exit_code == 0, configured.output


def test_train_stops_with_the_table_before_writing_anything(tmp_path, tiny_cfg_dict):
    images, masks = write_pairs(tmp_path / "bad", n=6)
    cv2.imwrite(str(masks / "img_2.png"), np.zeros((10, 10), np.uint8))
    cv2.imwrite(str(masks / "img_3.png"), np.zeros((64, 64), np.uint8))
    tiny_cfg_dict["data"].update(images=str(images), masks=str(masks))
    config = write_yaml(tmp_path / "bad.yaml", tiny_cfg_dict)
    result = invoke("train", "--config", config)
    assert_clean_failure(
        result, "1 error(s), 1 warning(s)", "size mismatch", "img_2.png", "empty mask", "unetseg data check"
    )
    assert not Path(tiny_cfg_dict["output_dir"]).exists()
    unchecked = invoke("train", "--config", config, "--no-check")
    assert_clean_failure(unchecked, "img_2.png")
    assert "severity" not in unchecked.output  # the trainer's own first error, not the table


# --------------------------------------------------------------------------- lossy masks


def _as_jpeg_masks(masks: Path, quality: int = 75) -> dict[str, np.ndarray]:
    """Each PNG mask re-saved as JPEG (the PNG removed); returns the true masks by stem."""
    truth = {}
    for png in sorted(masks.glob("*.png")):
        mask = cv2.imread(str(png), cv2.IMREAD_UNCHANGED)
        truth[png.stem] = mask
        assert cv2.imwrite(str(png.with_suffix(".jpg")), mask, [cv2.IMWRITE_JPEG_QUALITY, quality])
        png.unlink()
    return truth


@pytest.mark.parametrize("colour", [False, True])
def test_jpeg_masks_are_snapped_back_to_their_labels(tmp_path, colour):
    """A JPEG mask's halo (values between the labels along every edge) would become
    foreground; read, it is set to the nearer label, so foreground is what was drawn (a grey
    mask saved as a colour JPEG too, whose channels then differ slightly)."""
    from layout_helpers import lines_pairs

    from unetseg.data.io import read_mask, read_raw

    _, masks = lines_pairs(tmp_path, n=2)
    if colour:
        for png in masks.glob("*.png"):
            cv2.imwrite(str(png), cv2.cvtColor(cv2.imread(str(png), cv2.IMREAD_UNCHANGED), cv2.COLOR_GRAY2BGR))
    truth = _as_jpeg_masks(masks)
    for stem, mask in truth.items():
        mask = mask[..., 0] if mask.ndim == 3 else mask
        raw = read_raw(masks / f"{stem}.jpg")
        read = read_mask(masks / f"{stem}.jpg", None)
        halo = (raw[..., 0] if raw.ndim == 3 else raw) != 0
        assert np.mean(halo) > np.mean(mask != 0) * 1.3  # what the probe saw: the halo counted as foreground
        assert set(np.unique(read).tolist()) == {0, 1}
        assert np.mean(read != (mask != 0)) < 0.005  # within a few edge pixels of the truth


def test_data_check_and_init_name_jpeg_masks(tmp_path):
    from layout_helpers import lines_pairs

    images, masks = lines_pairs(tmp_path, n=4)
    _as_jpeg_masks(masks)
    report = check_dataset(DataConfig(images=images, masks=masks))
    lossy = [p for p in report.problems if p.kind == "lossy mask"]
    assert len(lossy) == 4 and all(p.severity == "warning" for p in lossy)
    assert "JPEG (lossy)" in lossy[0].detail and "[0, 255]" in lossy[0].detail and "PNG" in lossy[0].detail
    assert not [p for p in report.problems if p.kind == "labels"]  # no "values ... all become class 1"
    out = tmp_path / "plan.yaml"
    result = invoke("init", tmp_path, "--out", out)
    assert result.exit_code == 0, result.output
    assert "4 of the 4 masks measured are JPEG" in result.output
    text = out.read_text()
    assert "masks are JPEG (lossy)" in text and "thin lines" in text
    assert "mask values 0:" in text and text.split("mask values ")[1].split(";")[0].count(":") == 2
