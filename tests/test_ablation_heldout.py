"""The ablation measured on a held-out set (``evaluate:``): the spec section and its errors,
scoring inside a region of interest against Dice computed by hand, and a grid measured and
reported on the held-out images."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from conftest import write_pairs, write_yaml
from torch import nn

from unetseg.ablation import build_report, run_ablation, stored_results
from unetseg.ablation.measure import scored_set
from unetseg.ablation.runner import measured_with
from unetseg.ablation.spec import EvaluateSpec, load_spec, shown
from unetseg.config import ConfigError, InferenceConfig, config_from_dict
from unetseg.data import DataError
from unetseg.inference.evaluation import measure
from unetseg.inference.predictor import Predictor


@pytest.fixture
def spec_tree(tiny_cfg_file: Path, tmp_path: Path) -> dict:
    held = write_pairs(tmp_path / "held", n=2, seed=5)[0].parent
    return {
        "base": str(tiny_cfg_file),
        "output_dir": str(tmp_path / "abl"),
        "seeds": [0],
        "budget": {"epochs": 1, "samples_per_epoch": 4},
        "variants": [{"name": "concat", "set": {}}, {"name": "none", "set": {"model.skips": "none"}}],
        "report": {"crop_size": 32},
        "evaluate": {"images": str(held / "images"), "masks": str(held / "masks")},
    }


@pytest.mark.parametrize(
    "evaluate, message",
    [
        ({"rois": "x"}, "evaluate.rois: unknown key, did you mean 'roi'?"),
        ({"masks": None}, "evaluate.masks: required key is missing"),
        ({"masks": "nowhere"}, "evaluate.masks: {spec_dir}/nowhere: no such folder"),
        ({"roi": "held/images/img_0.png"}, "evaluate.roi: {spec_dir}/held/images/img_0.png: a file, not a folder"),
    ],
)
def test_the_evaluate_section_is_validated_with_the_file_and_key(spec_tree, tmp_path, evaluate, message):
    spec_tree["evaluate"] = {k: v for k, v in {**spec_tree["evaluate"], **evaluate}.items() if v is not None}
    path = write_yaml(tmp_path / "ablation.yaml", spec_tree)
    with pytest.raises(ConfigError) as err:
        load_spec(path)
    assert str(path) in str(err.value) and message.format(spec_dir=tmp_path) in str(err.value)


def test_held_out_folders_are_found_beside_the_spec_and_refused_with_folds(spec_tree, tmp_path):
    spec_tree["evaluate"] = {"images": "held/images", "masks": "held/masks"}  # relative to the spec file
    spec = load_spec(write_yaml(tmp_path / "ablation.yaml", spec_tree))
    assert spec.evaluate is not None and spec.evaluate.images == tmp_path / "held" / "images"
    assert spec.scored_on == f"the held-out images in {shown(tmp_path / 'held' / 'images')}"
    assert measured_with(spec)["evaluate"]["masks"] == str(tmp_path / "held" / "masks")
    without = load_spec(write_yaml(tmp_path / "plain.yaml", {**spec_tree, "evaluate": None}))
    assert "evaluate" not in measured_with(without)  # grids measured before held-out sets keep their results
    with pytest.raises(ConfigError, match="folds and evaluate"):
        load_spec(write_yaml(tmp_path / "folds.yaml", {**spec_tree, "folds": 2}))


class Threshold(nn.Module):
    """A "model" that predicts foreground where the image is bright: the image is the prediction."""

    multiple = 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x[:, :1] - 0.5) * 20


def _write(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), array)


def test_scoring_inside_the_region_of_interest_is_the_dice_of_its_pixels(tiny_cfg_dict, tmp_path):
    truth = np.zeros((6, 8), np.uint8)
    truth[0:2, 0:2] = 255  # 4 px inside the field of view
    truth[5, 7] = 255  # 1 px outside it (missed)
    pred = truth.copy()
    pred[5, 7] = 0
    pred[0:2, 6:8] = 255  # 4 false positives outside the field of view
    pred[4, 0] = 255  # 1 false positive inside
    fov = np.zeros((6, 8), np.uint8)
    fov[:, :5] = 255  # columns 0-4
    _write(tmp_path / "test" / "images" / "eye_1.png", pred)
    _write(tmp_path / "test" / "masks" / "eye_1_mask.png", truth)  # paired by name as training pairs
    _write(tmp_path / "test" / "fov" / "eye_1.png", fov)
    cfg = config_from_dict(tiny_cfg_dict)
    evaluate = EvaluateSpec(images=tmp_path / "test" / "images", masks=tmp_path / "test" / "masks")
    predictor = Predictor(Threshold(), InferenceConfig(mode="whole"), 2)
    # whole image: prediction 9 px, truth 5 px, overlap 4: 2 * 4 / (9 + 5)
    dataset, roi = scored_set(cfg, evaluate)
    assert roi is None and measure(predictor, dataset, "none").mean["dice"] == pytest.approx(8 / 14)
    # inside: prediction 5 px, truth 4 px, overlap 4: 2 * 4 / (5 + 4)
    dataset, roi = scored_set(cfg, evaluate.model_copy(update={"roi": tmp_path / "test" / "fov"}))
    inside = measure(predictor, dataset, "none", pred_dir=tmp_path / "pred", roi=roi)
    assert inside.mean["dice"] == pytest.approx(8 / 9)
    assert inside.rows[0]["name"] == "eye_1" and inside.mean["thin_recall"] == pytest.approx(1.0)
    kept = cv2.imread(str(tmp_path / "pred" / "eye_1.png"), cv2.IMREAD_UNCHANGED)
    assert kept.sum() == 5 and not kept[:, 5:].any()  # the prediction kept is the one scored
    (tmp_path / "test" / "fov" / "eye_1.png").rename(tmp_path / "test" / "fov" / "other.png")
    with pytest.raises(DataError, match=r"1 image\(s\) in .* have no mask in .*fov: eye_1.png"):
        scored_set(cfg, evaluate.model_copy(update={"roi": tmp_path / "test" / "fov"}))


def test_a_grid_is_measured_and_reported_on_the_held_out_images(spec_tree, tmp_path):
    held = Path(spec_tree["evaluate"]["images"]).parent
    for name in ("img_0", "img_1"):  # a field of view: the left half of each image
        fov = np.zeros((64, 64), np.uint8)
        fov[:, :32] = 255
        _write(held / "fov" / f"{name}.png", fov)
    spec_tree["evaluate"]["roi"] = str(held / "fov")
    spec_tree["variants"] = spec_tree["variants"][:1]
    path = write_yaml(tmp_path / "ablation.yaml", spec_tree)
    spec, results = run_ablation(path, log=lambda _: None)
    assert [row["name"] for row in results[0]["images"]] == ["img_0", "img_1"]  # not the validation block
    assert results[0]["measured_with"]["evaluate"]["roi"] == str(held / "fov")
    stored = tmp_path / "abl" / "results" / "concat" / "seed0"
    assert not cv2.imread(str(stored / "pred" / "img_0.png"), cv2.IMREAD_UNCHANGED)[:, 32:].any()
    report = build_report(spec, results, tmp_path / "report")
    text = report["md"].read_text()
    assert "measured with its final weights on the held-out images in" in text and "thin recall" in text
    assert "Held-out image img_" in text
    # data that may not be shown: the windows of images and truth are left out, the numbers stay
    hidden = build_report(
        spec.model_copy(update={"report": spec.report.model_copy(update={"images": False})}),
        results,
        tmp_path / "hidden",
    )
    hidden_text = hidden["md"].read_text()
    assert "Held-out image img_" not in hidden_text and "report.images: false" in hidden_text
    assert "thin recall" in hidden_text
    # measured on other images: listed as missing, not reported as if measured on these
    result = json.loads((stored / "result.json").read_text())
    result["measured_with"].pop("evaluate")
    (stored / "result.json").write_text(json.dumps(result))
    found, missing = stored_results(load_spec(path))
    assert found == [] and missing == [f"concat seed 0: measured on other images than {spec.scored_on}"]


def test_a_report_shows_paths_in_and_beside_the_working_folder_relative(tmp_path, monkeypatch):
    repo = tmp_path / "a" / "repo"
    repo.mkdir(parents=True)
    monkeypatch.chdir(repo)
    assert shown(repo / "docs" / "base.yaml") == str(Path("docs") / "base.yaml")
    assert shown(tmp_path / "a" / "shared" / "panel") == str(Path("..") / "shared" / "panel")
    assert shown(tmp_path / "elsewhere") == str(tmp_path / "elsewhere")  # two levels up: kept whole
    assert shown("configs/nuclei_cpu.yaml") == "configs/nuclei_cpu.yaml"
