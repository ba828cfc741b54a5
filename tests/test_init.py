"""``unetseg init``: the fingerprint's reading of walls, lines and blobs; the planned choices
and their reasons; the anchors matching the shipped configs; ISBI and the nuclei planned near
their hand-tuned configs; and a tiny dataset in each layout going through init, train and
predict with no hand edits."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import tifffile
import yaml
from cli_helpers import assert_clean_failure, invoke
from conftest import REPO, blob_pair, write_pairs
from layout_helpers import csv_manifest, lines_pairs, msd, nnunet_2d, nnunet_3d, walls_pairs
from test_volumes import save_nifti

from unetseg.config import DataConfig, load_config
from unetseg.data.layouts import detect_data, split_data
from unetseg.planning import Machine, plan_dataset
from unetseg.planning.anchors import BLOBS, THIN

CPU = Machine("cpu", cores=2, memory_gb=16.0, processor="test CPU", native_bf16=False)
GPU = Machine(
    "cuda", cores=8, memory_gb=64.0, processor="test CPU", native_bf16=False, gpu="test GPU", gpu_memory_gb=80.0
)


def plan_of(data: DataConfig, machine: Machine = CPU, budget: float = 300.0):
    plan, fp = plan_dataset(data, budget, machine)
    return plan.config(), plan, fp


# --------------------------------------------------------------------------- the structure decides


def test_thin_walls_drawn_as_zero_become_the_foreground_with_border_weights(tmp_path):
    cfg, plan, _ = plan_of(DataConfig(images=walls_pairs(tmp_path)[0], masks=tmp_path / "masks"))
    assert cfg.data.label_map == {0: 1, 255: 0}
    assert cfg.train.loss.border_weight is not None and cfg.train.loss.border_weight.objects == "background"
    assert cfg.eval.regions == "background"
    assert (cfg.augment.crop_size, cfg.model.stem_stride, cfg.model.depth, cfg.model.deep_supervision) == (64, 4, 3, 1)
    assert "thin walls" in plan.reasons["data.label_map"] and "ISBI" in plan.reasons["data.label_map"]


def test_thin_lines_get_the_thin_recipe_without_border_weights(tmp_path):
    images, masks = lines_pairs(tmp_path)
    cfg, _, fp = plan_of(DataConfig(images=images, masks=masks))
    assert fp.nonzero.kind == "lines"
    assert cfg.data.label_map is None and cfg.train.loss.border_weight is None
    assert cfg.eval.regions == "none" and cfg.model.norm == "instance" and cfg.train.ema == 0.998
    assert (cfg.augment.crop_size, cfg.model.stem_stride, cfg.model.depth) == (128, 4, 4)


def test_blobs_get_the_nuclei_recipe(tmp_path):
    cfg, plan, _ = plan_of(DataConfig(images=write_pairs(tmp_path)[0], masks=tmp_path / "masks"))
    # level 0 at 1/2 (the panel's change), depth 6 cut for 64-pixel crops: 4 levels leave the bottleneck 4 x 4
    assert (cfg.model.depth, cfg.model.base_width, cfg.model.stem_stride, cfg.model.head) == (4, 8, 2, "shuffle")
    assert "planning panel" in plan.reasons["model.stem_stride"]
    # instance norm (the panel's change; nuclei_cpu.yaml has batch norm), with its measurement
    assert cfg.model.norm == "instance" and "0.908 against 0.842" in plan.reasons["model.norm"]
    assert cfg.train.loss.border_weight is None and cfg.eval.regions == "foreground"
    assert cfg.train.batch_size == 32 and cfg.train.samples_per_epoch == 32 * BLOBS.steps_per_epoch
    assert cfg.train.schedule_by == "time" and cfg.train.max_time_s == 300.0
    assert "nuclei_cpu" in plan.reasons["model"]


def test_every_planned_value_has_a_reason_and_the_yaml_reads_back(tmp_path):
    images, masks = walls_pairs(tmp_path)
    plan, _ = plan_dataset(DataConfig(images=images, masks=masks), 120, CPU, name="w", output_dir=str(tmp_path / "run"))
    assert all(plan.reasons.get(key) for key in plan.values), [k for k in plan.values if not plan.reasons.get(k)]
    path = tmp_path / "plan.yaml"
    path.write_text(plan.render())
    assert load_config(path) == plan.config()
    text = path.read_text()
    assert text.startswith("# Planned by `unetseg init`") and "# the U-Net paper's border weights" in text
    # rule 17: flips at prediction on every kind, with the panel's numbers as the reason
    assert plan.values["inference.tta"] == "flips" and "higher on all 12 runs" in plan.reasons["inference.tta"]


# --------------------------------------------------------------------------- data choices


def _one_lesion_photos(root: Path, n: int = 4, size: tuple[int, int] = (600, 800)) -> tuple[Path, Path]:
    """Colour photographs, each with one large dark round lesion on skin-coloured noise."""
    rng = np.random.default_rng(1)
    images, masks = root / "images", root / "masks"
    images.mkdir(parents=True)
    masks.mkdir()
    h, w = size
    for i in range(n):
        mask = np.zeros((h, w), np.uint8)
        cv2.ellipse(mask, (w // 2 + 30 * i, h // 2), (200, 150), 10 * i, 0, 360, 255, -1)
        skin = np.array([150, 170, 220], np.float64) + rng.normal(0, 12, (h, w, 3))
        image = np.where(mask[..., None] > 0, skin * 0.45, skin)
        assert cv2.imwrite(str(images / f"p{i}.jpg"), np.clip(image, 0, 255).astype(np.uint8))
        assert cv2.imwrite(str(masks / f"p{i}.png"), mask)
    return images, masks


def test_one_framed_object_per_photograph_brings_every_image_to_one_shorter_side(tmp_path):
    images, masks = _one_lesion_photos(tmp_path)
    cfg, plan, fp = plan_of(DataConfig(images=images, masks=masks))
    assert fp.nonzero.kind == "blobs" and fp.nonzero.extent > 2 * BLOBS.extent
    # one lesion spanning half the frame: the framing sets its size, so each image goes to the shorter
    # side that brings the median 800 x 600 frame's longer side to one 256 crop: 192
    assert cfg.data.short_side == 192 and cfg.data.scale == 1.0
    assert "one object per image" in plan.reasons["data.short_side"]
    # the crop holds the median frame (256 x 192 at that shorter side) whole, at the recipe's batch
    assert cfg.augment.crop_size == 256 and "median frame 256x192 (WxH)" in plan.reasons["augment.crop_size"]
    assert cfg.train.batch_size == BLOBS.batch_size and "whole frames" in plan.reasons["train.batch_size"]
    assert cfg.augment.hue_saturation > 0 and cfg.augment.gamma > 0
    # a small set (rule 15): every image trains, so no post-processing can be chosen on validation
    assert cfg.data.split.mode == "none" and cfg.train.postprocess == "off"


def test_many_large_objects_per_image_shrink_every_image_by_one_factor(tmp_path):
    """Nuclei imaged at 4x (DSB x4): object size is the optics', not the framing's, so one factor."""
    rng = np.random.default_rng(2)
    images, masks = tmp_path / "images", tmp_path / "masks"
    images.mkdir()
    masks.mkdir()
    for i in range(4):
        mask = np.zeros((600, 800), np.uint8)
        for _ in range(8):
            cv2.circle(mask, (int(rng.integers(60, 740)), int(rng.integers(60, 540))), 40, 255, -1)
        image = np.where(mask > 0, 200, 40).astype(np.uint8) + rng.integers(0, 20, mask.shape, dtype=np.uint8)
        assert cv2.imwrite(str(images / f"n{i}.png"), image) and cv2.imwrite(str(masks / f"n{i}.png"), mask)
    cfg, plan, fp = plan_of(DataConfig(images=images, masks=masks))
    assert fp.nonzero.parts > 2 and fp.nonzero.extent > 2 * BLOBS.extent
    assert cfg.data.short_side is None
    # shrunk towards the recipe's object size, but never below one 256 crop on the smallest side (600 px)
    assert cfg.data.scale == pytest.approx(256 / 600, abs=1e-3)
    assert "no smaller than one 256 crop" in plan.reasons["data.scale"]


def test_small_objects_and_thin_lines_stay_at_full_resolution_and_grey_images_get_no_colour_jitter(tmp_path):
    cfg, plan, _ = plan_of(DataConfig(images=write_pairs(tmp_path / "b")[0], masks=tmp_path / "b" / "masks"))
    assert cfg.data.scale == 1.0 and "within 2x" in plan.reasons["data.scale"]
    assert cfg.augment.hue_saturation == 0.0 and cfg.augment.gamma == 0.0
    images, masks = lines_pairs(tmp_path / "l")
    cfg, plan, _ = plan_of(DataConfig(images=images, masks=masks))
    assert cfg.data.scale == 1.0 and "thin lines" in plan.reasons["data.scale"]


def test_colour_sixteen_bit_and_instance_masks(tmp_path):
    rng = np.random.default_rng(0)
    images, masks = tmp_path / "images", tmp_path / "masks"
    images.mkdir()
    masks.mkdir()
    for i in range(4):
        colour = rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)
        assert cv2.imwrite(str(images / f"c{i}.png"), colour)
        mask = np.zeros((64, 64), np.uint16)
        for k in range(12):  # twelve nuclei, each its own id
            cv2.circle(mask, (int(rng.integers(6, 58)), int(rng.integers(6, 58))), 4, 100 * i + k + 1, -1)
        assert cv2.imwrite(str(masks / f"c{i}.png"), mask)
    cfg, plan, _ = plan_of(DataConfig(images=images, masks=masks))
    assert cfg.data.channels == 3 and "colour" in plan.reasons["data.channels"]
    assert cfg.data.label_map is None and "instance ids" in plan.reasons["data.label_map"]
    dim = tmp_path / "dim"
    (dim / "images").mkdir(parents=True)
    (dim / "masks").mkdir()
    for i in range(4):
        image, mask = blob_pair(rng)
        tifffile.imwrite(dim / "images" / f"d{i}.tif", image.astype(np.uint16) * 16)  # 12-bit values in 16-bit files
        assert cv2.imwrite(str(dim / "masks" / f"d{i}.png"), mask)
    cfg, plan, _ = plan_of(DataConfig(images=dim / "images", masks=dim / "masks"))
    assert cfg.data.normalize == "percentile" and "uint16 images using only" in plan.reasons["data.normalize"]


def test_ct_volumes_get_a_window_and_anisotropic_ones_slice_across_the_coarse_axis(tmp_path):
    affine = np.diag([0.7, 0.7, 5.0, 1.0])
    rng = np.random.default_rng(0)
    for i in range(3):
        body = np.full((40, 48, 6), -1000, np.int16)
        body[8:32, 8:40] = 40 + rng.integers(-20, 20, (24, 32, 6))
        mask = np.zeros((40, 48, 6), np.uint8)
        mask[14:24, 14:26] = 1
        body[mask > 0] = 120
        save_nifti(tmp_path / "images" / f"ct{i}.nii.gz", body, affine)
        save_nifti(tmp_path / "masks" / f"ct{i}.nii.gz", mask, affine)
    cfg, plan, _ = plan_of(DataConfig(images=tmp_path / "images", masks=tmp_path / "masks"))
    assert cfg.data.normalize == "window" and cfg.data.window[0] == pytest.approx(120, abs=1)
    assert cfg.data.slice_axis == 2 and "coarse axis 2" in plan.reasons["data.slice_axis"]
    assert cfg.data.split.mode == "cases" and cfg.data.split.folds == 3
    train, val = split_data(cfg.data)
    assert {s.image.name for s in val} == {"ct2.nii.gz"} and len(train) == 12


def test_gpu_plans_the_gpu_network_and_loader(tmp_path):
    cfg, _, _ = plan_of(DataConfig(images=write_pairs(tmp_path)[0], masks=tmp_path / "masks"), GPU)
    assert cfg.model.base_width == 32 and cfg.train.amp == "auto" and cfg.train.channels_last
    assert cfg.model.norm == "instance"  # the panel's rule 16 holds on any device
    assert cfg.train.num_workers == 4 and cfg.train.threads is None


# --------------------------------------------------------------------------- the anchors


@pytest.mark.parametrize("recipe, path", [(THIN, "configs/isbi_cpu.yaml"), (BLOBS, "configs/nuclei_cpu.yaml")])
def test_recipes_are_the_shipped_hand_tuned_configs(recipe, path):
    assert recipe.anchor == path
    shipped = yaml.safe_load((REPO / path).read_text())
    assert {k: shipped["model"][k] for k in recipe.model} == recipe.model
    assert shipped["train"]["batch_size"] == recipe.batch_size and shipped["train"]["lr"] == recipe.lr
    assert shipped["train"]["samples_per_epoch"] == recipe.batch_size * recipe.steps_per_epoch
    assert {k: shipped["train"][k] for k in recipe.train} == recipe.train
    assert {k: shipped["augment"][k] for k in recipe.augment} == recipe.augment


def _same(planned, shipped, keys):
    return {k: (getattr(planned, k), getattr(shipped, k)) for k in keys if getattr(planned, k) != getattr(shipped, k)}


def test_isbi_plans_near_isbi_cpu(isbi):
    cfg, _, _ = plan_of(detect_data(isbi / "train"), CPU, 480)
    shipped = load_config(REPO / "configs" / "isbi_cpu.yaml")
    assert cfg.model == shipped.model
    assert _same(cfg.data, shipped.data, ["channels", "label_map", "normalize"]) == {}
    assert _same(cfg.augment, shipped.augment, ["crop_size", "affine", "elastic"]) == {}
    assert (
        _same(
            cfg.train,
            shipped.train,
            [
                "batch_size",
                "samples_per_epoch",
                "lr",
                "weight_decay",
                "ema",
                "loss",
                "schedule_by",
                "max_time_s",
                "amp",
                "threads",
            ],
        )
        == {}
    )
    assert cfg.eval == shipped.eval
    # 30 slices, a small set (rule 15): every slice trains; the hand-tuned config validates on 25-29
    planned_train, planned_val = split_data(cfg.data)
    assert len(planned_train) == 30 and planned_val == [] and cfg.train.postprocess == "off"


def test_nuclei_plans_near_nuclei_cpu():
    root = REPO / "data" / "dsb2018_nuclei" / "train"
    if not root.is_dir():
        pytest.skip("nuclei data not present")
    cfg, _, fp = plan_of(detect_data(root), CPU, 570)
    assert round(fp.nonzero.extent) == BLOBS.extent  # the blob recipe's object size is measured here
    assert cfg.data.scale == 1.0
    shipped = load_config(REPO / "configs" / "nuclei_cpu.yaml")
    # the hand-tuned network with the planning panel's measured changes (level 0 at 1/2), nothing else
    assert cfg.model == shipped.model.model_copy(update=BLOBS.panel_model) and cfg.eval == shipped.eval
    assert _same(cfg.data, shipped.data, ["channels", "label_map", "normalize", "split"]) == {}
    assert _same(cfg.augment, shipped.augment, ["crop_size", "affine"]) == {}
    # nuclei_cpu's brightness and contrast jitter, off: the panel's screen nobc (rule 8)
    assert shipped.augment.brightness_contrast == 0.5 and cfg.augment.brightness_contrast == 0.0
    assert (
        _same(cfg.train, shipped.train, ["batch_size", "samples_per_epoch", "lr", "loss", "val_every", "max_time_s"])
        == {}
    )
    assert (cfg.inference.mode, cfg.inference.roi_size, cfg.inference.tta) == ("auto", 512, "flips")


# --------------------------------------------------------------------------- the command, end to end


def _init_train_predict(tmp_path: Path, data: Path, inputs: Path, channels: int) -> list[str]:
    out = tmp_path / "plan.yaml"
    result = invoke("init", data, "--out", out, "--budget", "2", "--output-dir", tmp_path / "run")
    assert result.exit_code == 0, result.output
    assert f"{channels} channel(s)" in result.output
    trained = invoke("train", "--config", out)
    assert trained.exit_code == 0, trained.output
    predicted = invoke(
        "predict", inputs, "--checkpoint", tmp_path / "run" / "checkpoints" / "best.pt", "--out", tmp_path / "pred"
    )
    assert predicted.exit_code == 0, predicted.output
    return sorted(p.name for p in (tmp_path / "pred").iterdir())


def test_nnunet_2d_dataset_through_init_train_predict(tmp_path):
    root = nnunet_2d(tmp_path)
    assert _init_train_predict(tmp_path, root, root / "imagesTs", 2) == ["test_000.png", "test_001.png"]


def test_nnunet_volumes_through_init_train_predict(tmp_path):
    root = nnunet_3d(tmp_path)
    assert _init_train_predict(tmp_path, root, root / "imagesTs", 1) == ["ts_000.nii.gz"]


def test_msd_dataset_through_init_train_predict(tmp_path):
    root = msd(tmp_path)
    assert _init_train_predict(tmp_path, root, root / "imagesTr" / "blob_002.nii.gz", 2) == ["blob_002.nii.gz"]


def test_csv_manifest_through_init_train_predict(tmp_path):
    manifest = csv_manifest(tmp_path / "set")
    assert _init_train_predict(tmp_path, manifest, tmp_path / "set" / "test", 1) == ["unseen.png"]


def test_init_errors_are_one_message(tmp_path):
    root = nnunet_2d(tmp_path)
    (root / "labelsTr" / "case_000.png").rename(root / "labelsTr" / "orphan.png")
    assert_clean_failure(
        invoke("init", root, "--out", tmp_path / "p.yaml"), "no label case_000.png", "unetseg data check"
    )
    assert_clean_failure(
        invoke("init", root, "--out", tmp_path / "p.yaml", "--budget", "soon"), "expected a positive duration"
    )
    (tmp_path / "p.yaml").write_text("mine")
    assert_clean_failure(invoke("init", root, "--out", tmp_path / "p.yaml"), "is already there; pass --overwrite")
    assert (tmp_path / "p.yaml").read_text() == "mine"


def test_the_written_config_works_from_any_folder(tmp_path, monkeypatch):
    """Probe #12: init run with relative paths wrote them relative to the folder it ran in, so
    the config broke when used from elsewhere. Its paths are absolute now."""
    work = tmp_path / "project"
    write_pairs(work / "data", n=4)
    monkeypatch.chdir(work)
    result = invoke("init", "data", "--out", "configs/plan.yaml")
    assert result.exit_code == 0, result.output
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    cfg = load_config(work / "configs" / "plan.yaml")
    assert cfg.data.images == work / "data" / "images" and cfg.data.masks == work / "data" / "masks"
    assert Path(cfg.output_dir) == work / "runs" / cfg.name
    checked = invoke("data", "check", "--config", work / "configs" / "plan.yaml")
    assert checked.exit_code == 0, checked.output


def test_one_image_is_planned_to_train_without_validation(tmp_path):
    """Probe #10: one image was planned into 2 folds its own data check rejected; a set that
    small now trains on every image (rule 15), which data check accepts."""
    write_pairs(tmp_path / "data", n=1)
    out = tmp_path / "plan.yaml"
    assert invoke("init", tmp_path / "data", "--out", out).exit_code == 0
    assert load_config(out).data.split.mode == "none"
    checked = invoke("data", "check", "--config", out)
    assert checked.exit_code == 0 and "0 error(s)" in checked.output, checked.output


def _bad_dataset(tmp_path: Path, case: str) -> Path:
    """The probe's datasets (#35, #10) that init planned and its own data check rejected."""
    if case == "empty masks":
        _, masks = write_pairs(tmp_path / "data", n=4)
        for mask in masks.iterdir():
            cv2.imwrite(str(mask), np.zeros((64, 64), np.uint8))
        return tmp_path / "data"
    if case == "colour-coded masks":
        _, masks = write_pairs(tmp_path / "data", n=4)
        for mask in masks.iterdir():
            grey = cv2.imread(str(mask), cv2.IMREAD_UNCHANGED)
            coded = np.zeros((*grey.shape, 3), np.uint8)
            coded[grey > 0] = (0, 0, 255)  # red objects, as annotation tools export them
            cv2.imwrite(str(mask), coded)
        return tmp_path / "data"
    dataset = nnunet_2d(tmp_path, channels=1)  # labels 0/1 in the files
    meta = dataset / "dataset.json"
    meta.write_text(meta.read_text().replace('"blob": 1', '"blob": 300'))
    return dataset


@pytest.mark.parametrize(
    "case, words",
    [
        ("empty masks", "none of the 4 masks read has a foreground pixel"),
        ("colour-coded masks", "colour mask with differing channels"),
        ("nnU-Net labels that are not the mask values", "mask values [1] are not in data.label_map"),
    ],
)
def test_init_refuses_what_its_own_data_check_would_reject(tmp_path, case, words):
    """Probe #10: init wrote a config that its own `data check` rejects (folds 2 of 1 image, a
    label map for values the masks do not hold) or that trains to "dice 1.0000" (no foreground).
    It now refuses in data check's words and writes nothing."""
    data = _bad_dataset(tmp_path, case)
    out = tmp_path / "plan.yaml"
    result = invoke("init", data, "--out", out)
    assert_clean_failure(result, "no config written: data check would reject this dataset")
    assert words in " ".join(result.output.split()), result.output
    assert not out.exists()


@pytest.mark.parametrize("dangling", [False, True])
def test_init_never_writes_through_a_link_at_out(tmp_path, dangling):
    """Probe #2: `init --out` onto a symlink wrote (or, dangling, created) the link's target."""
    write_pairs(tmp_path / "data", n=4)
    target = tmp_path / "elsewhere" / "target.yaml"
    target.parent.mkdir()
    if not dangling:
        target.write_text("keep: me\n")
    link = tmp_path / "plan.yaml"
    link.symlink_to(target)
    refused = invoke("init", tmp_path / "data", "--out", link)
    assert_clean_failure(refused, "a symbolic link is already there; pass --overwrite")
    replaced = invoke("init", tmp_path / "data", "--out", link, "--overwrite")
    assert replaced.exit_code == 0, replaced.output
    assert not link.is_symlink() and "data:" in link.read_text()
    assert (target.read_text() == "keep: me\n") if not dangling else not target.exists()


def test_a_minority_of_colour_images_gets_no_colour_jitter(tmp_path):
    """Rule 7: in a mostly grey set (DSB: 15 % stained tissue) the colour of the few colour
    images tells what they are; hue jitter is for sets that are colour by nature."""
    images, masks = write_pairs(tmp_path / "d", n=4)
    grey = cv2.imread(str(images / "img_0.png"), cv2.IMREAD_GRAYSCALE)
    tinted = np.dstack([grey, (grey * 0.6).astype(np.uint8), grey])  # one stained-looking image
    cv2.imwrite(str(images / "img_0.png"), tinted)
    cfg, plan, fp = plan_of(DataConfig(images=images, masks=masks))
    assert fp.colour == 1 and cfg.data.channels == 3
    assert cfg.augment.hue_saturation == 0 and cfg.augment.gamma == 0
    assert "no colour jitter: 1 of 4" in plan.reasons["augment"]
