"""The working resolution (data.scale), colour augmentation, post-processing chosen on the
validation images, and the CPU-time budget: hand-worked values, and the commands end to end."""

from __future__ import annotations

import json
import time

import cv2
import numpy as np
import pytest
import torch
import yaml
from cli_helpers import invoke
from conftest import write_yaml
from torch import nn

from unetseg.config import ConfigError, InferenceConfig, PostprocessConfig, TrainConfig, config_from_dict
from unetseg.data import build_train_transform
from unetseg.data.scaling import Resolution, rescale_image, rescale_mask, restore_size, shrink_input, working_size
from unetseg.inference.postprocess import apply_postprocess, choose_postprocess
from unetseg.inference.predictor import Predictor
from unetseg.models.checkpoint import load_checkpoint
from unetseg.training.optim import BudgetClock, budget_now

# --------------------------------------------------------------------------- scaling


def test_working_size_rounds_and_keeps_a_pixel():
    assert working_size(1000, 750, 0.25) == (250, 188)
    assert working_size(3, 3, 0.1) == (1, 1)


def test_mask_takes_the_class_covering_most_of_each_pixel():
    # 4x4 -> 2x2: the top-left block is 3/4 class 1, the top-right 1/4, the bottom row all 0 and all 2.
    mask = np.array([[1, 1, 1, 0], [1, 0, 0, 0], [0, 0, 2, 2], [0, 0, 2, 2]])
    assert rescale_mask(mask, 0.5).tolist() == [[1, 0], [0, 2]]
    assert rescale_mask(mask, 1.0) is mask
    # Classes that skip an index (0 and 3, none between) and a label image of another dtype.
    gappy = np.where(mask == 2, 3, 0).astype(np.uint8)
    assert rescale_mask(gappy, 0.5).tolist() == [[0, 0], [0, 3]] and rescale_mask(gappy, 0.5).dtype == np.uint8


def test_dtype_scaling_is_the_textbook_formula():
    from unetseg.data.io import prepare_image

    rng = np.random.default_rng(0)
    for dtype in (np.uint8, np.uint16):
        raw = rng.integers(0, np.iinfo(dtype).max, size=(5, 7, 3), endpoint=True).astype(dtype)
        expected = raw.astype(np.float32) / np.float32(np.iinfo(dtype).max)
        assert np.array_equal(prepare_image(raw, 3, "dtype"), expected)
    signed = np.array([[-128, 127]], dtype=np.int8)
    assert prepare_image(signed, 1, "dtype")[..., 0].tolist() == [[0.0, 1.0]]


def test_image_is_area_averaged():
    image = np.arange(16, dtype=np.float32).reshape(4, 4, 1)
    small = rescale_image(image, 0.5)
    assert small.shape == (2, 2, 1)
    assert small[0, 0, 0] == pytest.approx((0 + 1 + 4 + 5) / 4)


class Brightness(nn.Module):
    """A 'model' whose logit is the first channel's brightness around 0.5, at any size."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x[:, :1] - 0.5) * 20


def test_predictor_at_a_working_scale_answers_at_the_image_size():
    yy, xx = np.mgrid[:96, :120]
    disk = ((yy - 48) ** 2 + (xx - 60) ** 2 <= 30**2).astype(np.float32)
    image = torch.from_numpy(disk[None])
    seen: list[tuple[int, int]] = []

    class Spy(Brightness):
        def forward(self, x):
            seen.append(tuple(x.shape[-2:]))
            return super().forward(x)

    predictor = Predictor(Spy(), InferenceConfig(mode="whole"), 2, resolution=Resolution(0.25))
    probs = predictor.probabilities(image)
    assert seen == [(24, 30)]  # the network saw the shrunk image
    assert probs.shape == (2, 96, 120)  # and the answer is at the image's own size
    pred = predictor.classes(probs).astype(bool)
    iou = (pred & (disk > 0)).sum() / (pred | (disk > 0)).sum()
    assert iou > 0.95


def test_shrink_and_restore_round_trip_shapes():
    image = torch.rand(3, 50, 70)
    small = shrink_input(image, 0.5)
    assert small.shape == (3, 25, 35)
    assert restore_size(small[None], (50, 70)).shape == (1, 3, 50, 70)


def test_training_set_is_shrunk_and_scored_sets_are_not(tiny_cfg_dict):
    from unetseg.training.datasets import build_datasets

    tiny_cfg_dict["data"]["scale"] = 0.5
    train_ds, val_ds = build_datasets(config_from_dict(tiny_cfg_dict, "t"))
    image, mask = train_ds.load(0)
    assert image.shape[:2] == mask.shape == (32, 32)
    assert val_ds.load(0)[0].shape[:2] == (64, 64)


def test_short_side_brings_every_image_to_one_frame_size(tiny_cfg_dict, tmp_path):
    """Photographs framed on one object: an image twice the pixels is shrunk twice as much, so the
    object spans the same pixels in both; the network sees each at the short side, the answer
    comes back at each image's own size."""
    from unetseg.data import SegmentationDataset
    from unetseg.data.io import Sample

    assert Resolution(short_side=256).factor(600, 800) == pytest.approx(256 / 600)
    assert Resolution(short_side=256).factor(1200, 900) == pytest.approx(256 / 900)
    assert Resolution(scale=0.5).factor(600, 800) == 0.5
    images, masks = tmp_path / "images", tmp_path / "masks"
    images.mkdir()
    masks.mkdir()
    for name, (h, w) in {"small": (60, 80), "large": (150, 200)}.items():
        yy, xx = np.mgrid[:h, :w]
        disk = ((yy - h / 2) ** 2 + (xx - w / 2) ** 2 <= (h / 3) ** 2).astype(np.uint8) * 255
        assert cv2.imwrite(str(images / f"{name}.png"), disk) and cv2.imwrite(str(masks / f"{name}.png"), disk)
    data = {**tiny_cfg_dict["data"], "images": str(images), "masks": str(masks), "short_side": 30}
    cfg = config_from_dict({**tiny_cfg_dict, "data": data}, "t")
    samples = [Sample(n, images / f"{n}.png", masks / f"{n}.png") for n in ("small", "large")]
    train_ds = SegmentationDataset(samples, cfg.data, resolution=Resolution.of(cfg.data))
    for index in range(2):
        image, mask = train_ds.load(index)
        assert image.shape[:2] == mask.shape == (30, 40)
        assert 0.23 < mask.mean() < 0.29  # the disk covers the same share (pi / 12) at both sizes
    seen: list[tuple[int, int]] = []

    class Spy(Brightness):
        def forward(self, x):
            seen.append(tuple(x.shape[-2:]))
            return super().forward(x)

    predictor = Predictor(Spy(), InferenceConfig(mode="whole"), 2, resolution=Resolution.of(cfg.data))
    for h, w in ((60, 80), (150, 200)):
        assert predictor.probabilities(torch.rand(1, h, w)).shape == (2, h, w)
    assert seen == [(30, 40), (30, 40)]
    with pytest.raises(ConfigError, match="scale and short_side"):
        config_from_dict({**tiny_cfg_dict, "data": {**data, "scale": 0.5}}, "t")


# --------------------------------------------------------------------------- colour augmentation


def test_colour_steps_change_colours_and_keep_the_crop(tiny_cfg_dict):
    cfg = config_from_dict(
        {
            **tiny_cfg_dict,
            "data": {**tiny_cfg_dict["data"], "channels": 3},
            "augment": {"crop_size": 32, "hue_saturation": 1.0, "gamma": 1.0, "stain": 1.0},
        },
        "t",
    )
    transform = build_train_transform(cfg.augment, seed=1)
    names = [type(step).__name__ for step in transform.transforms]
    assert names[-3:] == ["HueSaturationValue", "RandomGamma", "HEStain"]
    rng = np.random.default_rng(0)
    image = rng.uniform(0.2, 0.8, (64, 64, 3)).astype(np.float32)
    out = transform(image=image, mask=np.zeros((64, 64), np.uint8))["image"]
    assert out.shape == (32, 32, 3) and out.dtype == np.float32
    crop_only = build_train_transform(cfg.augment.model_copy(update={"hue_saturation": 0, "gamma": 0, "stain": 0}), 1)
    assert not np.allclose(out, crop_only(image=image, mask=np.zeros((64, 64), np.uint8))["image"])


@pytest.mark.parametrize(
    ("augment", "data", "words"),
    [
        ({"stain": 0.5}, {"channels": 1}, "augment.stain shifts colours: it needs data.channels 3"),
        ({"hue_saturation": 0.5}, {"channels": 1}, "augment.hue_saturation"),
        ({"gamma": 0.5}, {"normalize": "zscore"}, "augment.gamma needs intensities in [0, 1]"),
    ],
)
def test_colour_steps_refused_where_they_cannot_work(tiny_cfg_dict, augment, data, words):
    tree = {**tiny_cfg_dict, "augment": augment, "data": {**tiny_cfg_dict["data"], **data}}
    with pytest.raises(ConfigError, match=words.replace("[", r"\[").replace("]", r"\]")):
        config_from_dict(tree, "t")


# --------------------------------------------------------------------------- post-processing


def test_fill_holes_keep_largest_and_min_size_by_hand():
    classes = np.zeros((10, 10), np.int64)
    classes[1:6, 1:6] = 1
    classes[3, 3] = 0  # a hole
    classes[8, 8] = 1  # a speck of 1 px
    classes[7:9, 1:3] = 1  # a 4 px component
    filled = apply_postprocess(classes, PostprocessConfig(fill_holes=True))
    assert filled[3, 3] == 1 and filled.sum() == classes.sum() + 1
    largest = apply_postprocess(classes, PostprocessConfig(keep_largest=True))
    assert largest.sum() == 24 and largest[8, 8] == 0 and largest[7, 1] == 0
    sized = apply_postprocess(classes, PostprocessConfig(min_size=2))
    assert sized[8, 8] == 0 and sized[7, 1] == 1 and sized.sum() == classes.sum() - 1
    assert apply_postprocess(classes, PostprocessConfig()) is classes


def test_the_choice_keeps_only_steps_that_raise_dice():
    rng = np.random.default_rng(0)
    targets, predictions = [], []
    for _ in range(4):  # one object per image, predicted with a hole and stray specks
        target = np.zeros((40, 40), np.int64)
        target[10:30, 10:30] = 1
        pred = target.copy()
        pred[18:22, 18:22] = 0
        for y, x in rng.integers(0, 40, (3, 2)):
            if not target[y, x]:
                pred[y, x] = 1
        targets.append(target)
        predictions.append(pred)
    choice = choose_postprocess(predictions, targets, 2, log=lambda _: None)
    assert choice.config.fill_holes and choice.config.keep_largest
    assert [t["step"] for t in choice.tried][:2] == ["fill holes", "keep the largest component"]
    assert all(t["kept"] is False for t in choice.tried[2:])  # sizes are not tried after keep-largest
    # Perfect predictions: nothing can raise Dice, so nothing is kept.
    none = choose_postprocess(targets, targets, 2, log=lambda _: None)
    assert not none.config.active and not any(t["kept"] for t in none.tried)


def test_train_chooses_writes_and_predict_applies_or_skips(tiny_cfg_dict, tmp_path):
    tiny_cfg_dict["train"]["postprocess"] = "choose"
    tiny_cfg_dict["inference"]["tta"] = "flips"
    config = write_yaml(tmp_path / "pp.yaml", tiny_cfg_dict)
    result = invoke("train", "--config", config)
    assert result.exit_code == 0, result.output
    assert "post-processing:" in result.output
    run = tmp_path / "run"
    record = json.loads((run / "postprocessing.json").read_text())
    state = load_checkpoint(run / "checkpoints" / "best.pt")
    assert state["config"]["inference"]["postprocess"] == record["chosen"]
    assert [t["step"] for t in record["tried"]][:2] == ["fill holes", "keep the largest component"]
    # chosen on the predictions `predict` makes (the config's TTA), not validation's plainer ones
    assert record["predicted_with"] == {"tta": "flips", "mode": "whole"}
    images = tiny_cfg_dict["data"]["images"]
    for flag, out in (([], "pp"), (["--no-postprocess"], "raw")):
        result = invoke(
            "predict", images, "--checkpoint", run / "checkpoints" / "best.pt", "--out", tmp_path / out, *flag
        )
        assert result.exit_code == 0, result.output
    assert len(list((tmp_path / "raw").glob("*.png"))) == 6


def test_postprocess_chooses_again_for_a_run_trained_without_a_choice(tiny_cfg_dict, tmp_path):
    """``unetseg postprocess`` (nnU-Net's determine_postprocessing): a run trained with
    ``postprocess: off`` gets its choice afterwards, in best.pt and beside the run; a run
    without a validation split is refused, naming why, and its checkpoint is left as it was."""
    tiny_cfg_dict["train"]["postprocess"] = "off"
    result = invoke("train", "--config", write_yaml(tmp_path / "off.yaml", tiny_cfg_dict))
    assert result.exit_code == 0, result.output
    run = tmp_path / "run"
    assert not (run / "postprocessing.json").exists()
    result = invoke("postprocess", "--checkpoint", run, "--device", "cpu")
    assert result.exit_code == 0, result.output
    assert (
        "on the 2 validation images (once each, as predict will)" in result.output
        and "post-processing:" in result.output
    )
    record = json.loads((run / "postprocessing.json").read_text())
    assert load_checkpoint(run / "checkpoints" / "best.pt")["config"]["inference"]["postprocess"] == record["chosen"]
    assert record["predicted_with"]["tta"] == tiny_cfg_dict["inference"].get("tta", "none")

    tiny_cfg_dict["data"]["split"] = {"mode": "none"}
    tiny_cfg_dict["output_dir"] = str(tmp_path / "nosplit")
    result = invoke("train", "--config", write_yaml(tmp_path / "nosplit.yaml", tiny_cfg_dict))
    assert result.exit_code == 0, result.output
    best = tmp_path / "nosplit" / "checkpoints" / "best.pt"
    before = best.read_bytes()
    result = invoke("postprocess", "--checkpoint", best, "--device", "cpu")
    assert result.exit_code != 0 and "without a validation split (data.split)" in result.output
    assert best.read_bytes() == before and not (tmp_path / "nosplit" / "postprocessing.json").exists()


# --------------------------------------------------------------------------- the CPU-time budget


def test_cpu_clock_counts_process_time_per_thread(monkeypatch):
    monkeypatch.setattr(time, "process_time", lambda: 10.0)
    now = budget_now(TrainConfig(budget_clock="cpu", threads=2, max_time_s=5))
    assert now() == 5.0
    assert budget_now(TrainConfig()) is time.perf_counter
    ticks = iter([0.0, 1.0, 3.0, 9.0])
    clock = BudgetClock(6.0, lambda: next(ticks))
    clock.start()
    assert clock.fraction() == pytest.approx(2 / 6) and clock.fraction() == 1.0


def test_a_cpu_budget_ends_the_run(tiny_cfg_dict, tmp_path):
    tiny_cfg_dict["train"].update(epochs=1000, max_time_s=1.0, budget_clock="cpu", val_every=1000)
    config = write_yaml(tmp_path / "cpu.yaml", tiny_cfg_dict)
    result = invoke("train", "--config", config)
    assert result.exit_code == 0, result.output
    assert "time budget of 1 s reached" in result.output
    assert yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())["train"]["budget_clock"] == "cpu"
