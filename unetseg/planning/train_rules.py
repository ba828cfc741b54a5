"""Planning the network, augmentation, training, inference and evaluation sections: the
anchor recipe of the structure's kind (:mod:`unetseg.planning.anchors`), fitted to the
images' size, the machine and the time budget.
"""

from __future__ import annotations

import math

from unetseg.planning.anchors import (
    BLOBS,
    BLOBS_GPU_MODEL,
    PANEL_FRAME,
    PANEL_NO_BRIGHTNESS,
    PANEL_TTA,
    THIN,
    VAL_EVERY,
    WARMUP_EPOCHS,
    Recipe,
)
from unetseg.planning.data_rules import Structure, working_scale
from unetseg.planning.fingerprint import Fingerprint
from unetseg.planning.hardware import Machine
from unetseg.planning.plan import Plan

CROP = 256  # both anchors (and the GPU configs) train on 256 x 256 crops
FRAME_CROP_MAX = 512  # a framed object's crop is its median frame's longer side, at most this
MIN_CROP = 16
MIN_LEVEL0 = 16  # a space-to-depth stem leaves level 0 at least 16 x 16 pixels of a crop
BOTTLENECK_PX = 4  # the deepest level keeps at least 4 x 4 pixels of a crop (isbi_cpu: 256 / 4 / 16)
MAX_BATCH = 32
ROI = 512  # images up to 512 x 512 are predicted in one pass, larger ones in windows of this size
MIN_WORKERS_CORES = 4
COLOUR_JITTER = 0.5
COLOUR_MAJORITY = 0.5  # colour jitter where at least this share of the measured images is in colour (rule 7)
GAMMA = 0.3


def recipe_for(structure: Structure) -> Recipe:
    return THIN if structure.kind in ("walls", "lines") else BLOBS


def _crop(plan: Plan, fp: Fingerprint) -> tuple[int, str]:
    """The training crop (the largest power of two within the median image at the working
    scale, at most the anchors' 256; for framed objects, rule 18's ``short_side``, the whole
    median frame) and why."""
    scale = working_scale(plan, fp)
    short_side = plan.get("data.short_side", None)
    if short_side:
        return _frame_crop(fp, short_side, scale)
    h, w = (round(v * scale) for v in fp.median_size)
    smallest = round(fp.min_side * scale)
    crop = max(MIN_CROP, min(CROP, 2 ** int(math.log2(max(min(h, w), 1)))))
    at = f" at scale {scale:g}" if scale != 1.0 else ""
    why = (
        f"median image {w}x{h} (WxH){at}, smallest side {smallest}: random {crop}x{crop} crops"
        + (", the anchors' size" if crop == CROP else ", the largest power of two within the median image")
        + ("; smaller images are padded by reflection" if smallest < crop else "")
    )
    return crop, why


def _frame_crop(fp: Fingerprint, short_side: int, scale: float) -> tuple[int, str]:
    """Rule 19's crop: the median frame's longer side, at most ``FRAME_CROP_MAX`` (the network
    pads a crop of any size to its own multiple, so the frame is neither cut nor shrunk)."""
    h, w = (round(v * scale) for v in fp.median_size)
    crop = min(FRAME_CROP_MAX, max(h, w))
    return crop, (
        f"median frame {w}x{h} (WxH) at a shorter side of {short_side}: random {crop}x{crop} crops hold it "
        f"whole (its shorter side padded by reflection), so training sees each object with all of its frame, "
        f"as prediction does; {PANEL_FRAME}"
    )


def _model(plan: Plan, recipe: Recipe, structure: Structure, machine: Machine, crop: int) -> None:
    blobs_on_gpu = recipe is BLOBS and machine.device == "cuda"
    # The GPU network takes the panel's normalisation too: what it fixed (rare kinds of image pushed
    # through running statistics of the common kind) is batch norm's, on any device.
    model = (
        {**BLOBS_GPU_MODEL, "norm": recipe.panel_model["norm"]}
        if blobs_on_gpu
        else {**recipe.model, **recipe.panel_model}
    )
    source = "configs/nuclei.yaml (the GPU config for blobs)" if blobs_on_gpu else recipe.anchor
    changed = "" if blobs_on_gpu or not recipe.panel_model else " with the planning panel's changes"
    plan.note("model", f"the network of {source}{changed} ({recipe.result}), here for {_kind_words(structure)}")
    stem = min(model.pop("stem_stride", 1), max(1, crop // MIN_LEVEL0))
    depth = max(2, min(model.pop("depth"), int(math.log2(crop / stem / BOTTLENECK_PX)) + 1))
    supervision = min(model.pop("deep_supervision", 0), depth - 2)
    head = model.pop("head", None)
    plan.set("model.arch", model.pop("arch"), "unetseg's U-Net")
    if stem > 1:
        plan.set(
            "model.stem_stride",
            stem,
            recipe.panel_why["stem_stride"]
            if "stem_stride" in recipe.panel_model and not blobs_on_gpu
            else f"level 0 at 1/{stem} resolution (space to depth, lossless) with a "
            "sub-pixel head back to full resolution: on a CPU the full-resolution levels cost the most",
        )
        if head:
            plan.set("model.head", head, "3x3 conv + pixel shuffle: ~1.7x faster on a CPU than a transposed conv")
    elif {**recipe.model, **recipe.panel_model}.get("stem_stride", 1) > 1 and not blobs_on_gpu:
        plan.set("model.stem_stride", 1, f"{crop}-pixel crops are too small to enter at lower resolution")
    plan.set(
        "model.depth",
        depth,
        f"{depth} levels: the bottleneck sees {crop // stem // 2 ** (depth - 1)} x "
        f"{crop // stem // 2 ** (depth - 1)} pixels of a {crop} crop",
    )
    for key, value in model.items():
        why = recipe.panel_why.get(key) if recipe.panel_model.get(key) == value else None
        plan.set(f"model.{key}", value, why or _MODEL_REASONS.get(key, ""))
    if supervision:
        plan.set(
            "model.deep_supervision",
            supervision,
            "auxiliary logit heads on decoder levels 1-3 in training "
            "(nnU-Net); with the affine augmentation they lifted isbi_cpu past its 0.81 Dice plateau",
        )


_MODEL_REASONS = {
    "base_width": "channels of level 0, doubling at each level",
    "encoder": "residual blocks (identity shortcuts train the deep levels from the start)",
    "downsample": "strided convolutions: learned down-sampling",
    "skips": "concatenated skips at every level (U-Net)",
    "norm": "instance norm: the same statistics on a 256 crop in training and on a whole image later",
    "upsample": "transposed convolutions",
}


def _kind_words(structure: Structure) -> str:
    shape = structure.shape
    if shape is None:
        return "blobs"
    measured = f"{shape.width:.0f} px wide, parts of {shape.extent:.0f} px"
    return {
        "walls": f"thin walls between regions: {measured}, {shape.regions:.0f} regions per image",
        "lines": f"thin lines and networks: {measured}, the rest one region",
        "blobs": f"blobs: {measured}, {shape.parts:.0f} per image",
    }[structure.kind]


def _augment(plan: Plan, recipe: Recipe, fp: Fingerprint) -> None:
    plan.set("augment.crop_size", *_crop(plan, fp))
    if "affine" in recipe.augment:
        plan.set(
            "augment.affine",
            recipe.augment["affine"],
            "nnU-Net's rotation by any angle and zoom 0.7-1.4 on half the crops (isbi_cpu)",
        )
    plan.set(
        "augment.brightness_contrast",
        0.0,
        f"the images' means spread by {100 * fp.mean_spread:.0f} % of the intensity range; {PANEL_NO_BRIGHTNESS}",
    )
    _colour(plan, fp)


def _colour(plan: Plan, fp: Fingerprint) -> None:
    """Colour jitter for colour photographs and stained slides: two cameras, two lamps or two
    staining batches shift hue, saturation and gamma, and a model trained on one drifts on the
    next. Grey images and modalities get no intensity jitter (rule 8: the panel measured none worth it)."""
    colour = fp.colour > 0 and fp.channels == 3 and not fp.multichannel
    if not colour:
        return
    if fp.colour < COLOUR_MAJORITY * fp.measured:
        plan.note(
            "augment",
            f"no colour jitter: {fp.colour} of {fp.measured} measured images are in colour, a minority whose colour "
            "tells what kind of image it is (planning panel, seed 0: the DSB nuclei x4 at 15 % colour 0.869 "
            "without it, 0.850 with it)",
        )
        return
    plan.set(
        "augment.hue_saturation",
        COLOUR_JITTER,
        f"{fp.colour} of {fp.measured} measured images are in colour: random hue, saturation and value shifts "
        "on half the crops (camera, illumination and stain vary between acquisitions; planning panel, seed 0: "
        "MoNuSeg 0.783 with them, 0.746 without)",
    )
    if plan.get("data.normalize") == "dtype":
        plan.set("augment.gamma", GAMMA, "random gamma 0.8-1.2 on a third of the crops (intensities are in [0, 1])")


def _batch(plan: Plan, recipe: Recipe, crop: int) -> tuple[int, str]:
    """The recipe's batch at 256 x 256, scaled to the same pixels per step at another crop; for
    whole frames (rule 19) the recipe's own, the batch the panel measured them at."""
    if plan.get("data.short_side", None) is not None:
        return recipe.batch_size, f"{recipe.anchor}'s {recipe.batch_size}, here of whole frames of {crop} x {crop}"
    batch = min(MAX_BATCH, max(1, round(recipe.batch_size * (CROP / crop) ** 2)))
    scaled = f", scaled to the same pixels per step at {crop} x {crop}" if batch != recipe.batch_size else ""
    return batch, f"{recipe.anchor}'s {recipe.batch_size} at 256 x 256{scaled}"


def _train(plan: Plan, recipe: Recipe, structure: Structure, machine: Machine, crop: int, budget_s: float) -> None:
    batch, why = _batch(plan, recipe, crop)
    plan.set("train.epochs", 1000, "an upper bound: the time budget ends the run")
    plan.set(
        "train.samples_per_epoch",
        batch * recipe.steps_per_epoch,
        f"{recipe.steps_per_epoch} steps per epoch ({recipe.anchor}), so validation comes every "
        f"{batch * recipe.steps_per_epoch * VAL_EVERY} crops",
    )
    plan.set("train.batch_size", batch, why)
    plan.set("train.lr", recipe.lr, f"AdamW at {recipe.anchor}'s rate")
    for key, value in recipe.train.items():
        plan.set(f"train.{key}", value, _TRAIN_REASONS[key])
    plan.set("train.scheduler", "cosine", "cosine annealing")
    plan.set(
        "train.schedule_by",
        "time",
        "laid out over the time budget, so the rate has annealed when the budget ends on any machine",
    )
    plan.set("train.warmup_epochs", WARMUP_EPOCHS, "one epoch of warm-up, as both anchors")
    plan.set(
        "train.loss.name",
        "dice_ce",
        "Dice + cross-entropy: Dice balances a small foreground, CE gives smooth gradients",
    )
    if structure.kind == "walls":
        assert structure.shape is not None
        plan.set(
            "train.loss.border_weight",
            {"w0": 10, "sigma": 5, "objects": "background"},
            f"the U-Net paper's border weights: a wall pixel between two regions counts up to 11x, since a "
            f"one-pixel gap merges two regions (isbi_cpu; walls here are {structure.shape.width:.0f} px wide)",
        )
    else:
        plan.set("train.loss.border_weight", None, f"none: {structure.kind} do not separate regions by thin walls")
    _device(plan, recipe, machine)
    if plan.get("data.split", {}).get("mode") == "none":
        plan.set("train.postprocess", "off", "no validation images to choose post-processing on")
    else:
        plan.set("train.val_every", VAL_EVERY, "validate every 10 epochs, as both anchors")
        plan.set("train.monitor", "dice", "keep the checkpoint with the best validation Dice")
        plan.set(
            "train.postprocess",
            "choose",
            "after training, fill holes / keep the largest component / drop small components are tried on the "
            "validation images, predicted as predict predicts them (test-time augmentation included), and kept in "
            "best.pt only where they raise Dice (nnU-Net); predict --no-postprocess skips them",
        )
    plan.set(
        "train.max_time_s", budget_s, f"the time budget: {_duration(budget_s)} of training (unetseg init --budget)"
    )


_TRAIN_REASONS = {
    "weight_decay": "AdamW's decoupled decay at 0.05 (isbi_cpu: fewer merges than 1e-4 in its races)",
    "ema": "validate and save an average of the last ~500 steps' weights: a steadier validation curve",
}


def _device(plan: Plan, recipe: Recipe, machine: Machine) -> None:
    if machine.device == "cuda":
        plan.set("train.amp", "auto", f"bf16 autocast on the GPU ({machine.gpu})")
        plan.set("train.channels_last", True, "channels-last tensors for the GPU's tensor cores")
        workers = min(4, max(0, machine.cores - 1)) if machine.cores >= MIN_WORKERS_CORES else 0
        plan.set("train.num_workers", workers, f"{workers} loader processes beside training on {machine.cores} cores")
        return
    plan.set("train.threads", machine.cores, f"this machine's {machine.cores} cores ({machine.processor})")
    if "stem_stride" in recipe.model:
        plan.set(
            "train.amp",
            "bf16",
            "bf16 autocast: ~1.4x the crops per second at the same scores (isbi_cpu); "
            + (
                "this CPU has bf16 instructions"
                if machine.native_bf16
                else "this CPU has no bf16 instructions, so it runs in fp32 here and in bf16 where they exist"
            ),
        )


def _duration(seconds: float) -> str:
    return f"{seconds / 60:g} minutes" if seconds >= 60 else f"{seconds:g} s"


def _inference_and_eval(plan: Plan, fp: Fingerprint, structure: Structure) -> None:
    fits = (
        "every measured image fits" if fp.max_pixels <= ROI * ROI else "the largest measured images go through windows"
    )
    plan.set(
        "inference.mode",
        "auto",
        f"a whole image in one pass when it fits in {ROI} x {ROI}, else sliding windows ({fits})",
    )
    plan.set("inference.roi_size", ROI, f"{ROI} x {ROI} windows, as both anchors predict whole 512 x 512 images")
    plan.set("inference.tta", "flips", PANEL_TTA)
    regions = {"walls": "background", "blobs": "foreground", "lines": "none"}[structure.kind]
    why = {
        "background": "Rand error and VI over the regions the walls separate (class 0's connected parts, as ISBI 2012)",
        "foreground": "Rand error and VI, object F1 over the connected foreground parts (the objects)",
        "none": "no region measures: lines and networks are one connected structure, not objects",
    }[regions]
    plan.set("eval.regions", regions, why)


def plan_training(plan: Plan, fp: Fingerprint, structure: Structure, machine: Machine, budget_s: float) -> None:
    """Fill the model, augment, train, inference and eval sections."""
    recipe = recipe_for(structure)
    crop, _ = _crop(plan, fp)
    _model(plan, recipe, structure, machine, crop)
    _augment(plan, recipe, fp)
    _train(plan, recipe, structure, machine, crop, budget_s)
    _inference_and_eval(plan, fp, structure)
