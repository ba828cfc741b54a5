"""The hand-tuned configs the planner starts from, one per kind of structure.

A plan is not searched for: training runs are minutes each, so the planner reuses what was
measured. ``configs/isbi_cpu.yaml`` was tuned on thin walls (ISBI 2012 membranes: Dice 0.814
in 8 minutes on 2 CPU cores, README "Results") and ``configs/nuclei_cpu.yaml`` on blobs
(DSB 2018 nuclei: Dice 0.829 on the test images in 7 minutes). A dataset's structure picks the
recipe (:mod:`unetseg.planning.shapes`), and the fingerprint then adapts its crop, depth,
batch, channels and budget. ``tests/test_init.py`` checks these values against the shipped
configs, so the two cannot drift apart. ``nuclei.yaml`` lends the blob network on a GPU.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Recipe:
    anchor: str  # the shipped config it comes from
    result: str  # what the anchor measured, for the plan's comments
    model: dict[str, Any]
    steps_per_epoch: int
    batch_size: int  # at 256 x 256 crops
    lr: float
    train: dict[str, Any] = field(default_factory=dict)  # further train.* values of the anchor
    augment: dict[str, Any] = field(default_factory=dict)
    extent: float | None = None  # the fingerprint's object extent (px) on the anchor's own training images
    # what the planner changes in the anchor's network on a CPU, each change measured on the planning
    # panel (docs/your_data.md, "The rules"), and why
    panel_model: dict[str, Any] = field(default_factory=dict)
    panel_why: dict[str, str] = field(default_factory=dict)  # model key -> the measurement behind it


# The planning panel's seed-0 screen of the blob network with level 0 at 1/2 resolution (960 CPU s,
# one thread; benchmarks/results/planning_panel): ~3.3x the crops of the full-resolution network.
PANEL_STEM2 = (
    "level 0 at 1/2 resolution (space to depth) with a sub-pixel head, as MONAI's UNet strides its first "
    "convolution: on the planning panel 3.3-3.6x the crops of the full-resolution network in the same CPU "
    "time, Dice 0.783 against 0.767 on MoNuSeg, 0.850 against 0.847 on the DSB nuclei x4 (seed 0)"
)
# The same panel's screen of instance against batch norm in that network (seed 0).
PANEL_INSTANCE_NORM = (
    "instance norm (nnU-Net's and MONAI's default): each image is normalised by its own statistics, so the "
    "rare kinds of a mixed set are not pushed through running statistics of the common kind; on the planning "
    "panel Dice 0.908 against 0.842 on the DSB nuclei (bright-field images 0.82 against 0.17, H&E 0.87 "
    "against 0.59), 0.901 against 0.869 on the DSB nuclei x4, 0.806 against 0.800 on MoNuSeg, at the same crops "
    "per second (seed 0)"
)

# The panel's prediction-only screen planned:tta: the stored planned checkpoints predicting the test
# images with and without their flips (every seed then in; validation in training predicts once).
PANEL_TTA = (
    "the image and its three flips predicted and averaged (nnU-Net mirrors at inference too): on the planning "
    "panel higher on all 12 runs, CHASE vessels 0.7876 against 0.7835 (3 seeds), DSB nuclei 0.907 against 0.905 "
    "(3), DSB x4 0.904 against 0.901 (1), MoNuSeg 0.807 against 0.804 (3), ISBI 0.816 against 0.814 (2); d4 (8 views) was no "
    "better on CHASE. Prediction takes up to 3x as long; predict --tta none skips it"
)

# The panel's screen planned:nobc on the DSB nuclei, the panel set whose brightness spreads most
# (27 % of the range; with DSB x4 the only ones the old rule 8 gave the jitter).
PANEL_NO_BRIGHTNESS = (
    "no random brightness and contrast, whatever the spread: on the planning panel the DSB nuclei (mixed "
    "stains, means spread by 27 %) scored 0.912 without it against 0.907 with it (3 seeds, higher on each; "
    "+0.006 [+0.0004, +0.013]), and the same images at 4x 0.913 against 0.907 (+0.006 [+0.002, +0.012]); "
    "the jitter's CPU time cost 16 % of the crops; instance norm already "
    "takes out most of a shift in brightness"
)

# The panel's screen planned:frame on the synthetic lesion photographs (framed blobs).
PANEL_FRAME = (
    "on the planning panel's lesion photographs (320 x 256 frames) Dice 0.962 against 0.956 with 256 crops "
    "(3 seeds; higher on 27 of 40 test images, validation Dice 0.97-0.98 against 0.93-0.96) on 40 % fewer crops"
)

# The panel's screen planned:long256 on the lesion photographs: the frame at 256 x 205 instead of 320 x 256.
PANEL_FRAME_SIZE = (
    "on the planning panel's lesion photographs (971 x 778 median) Dice 0.966 at 256 x 205 over 5 seeds, level with a "
    "plain MONAI loop's 0.964 where 320 x 256 had been behind it (0.960 against 0.964 on 2 seeds), and on its polyp "
    "frames (1119 x 778) 0.962 at 256 x 178 against 0.925 at 368 x 256 (3 seeds): "
    "the smaller frame trains more crops in the budget"
)

THIN = Recipe(
    anchor="configs/isbi_cpu.yaml",
    result="ISBI 2012 membranes: Dice 0.814, adapted Rand error 0.076 after 8 minutes on 2 CPU cores",
    model={
        "arch": "unet",
        "stem_stride": 4,
        "depth": 5,
        "base_width": 32,
        "encoder": "residual",
        "downsample": "conv",
        "skips": "concat",
        "norm": "instance",
        "upsample": "transpose",
        "head": "shuffle",
        "deep_supervision": 3,
    },
    steps_per_epoch=13,
    batch_size=8,
    lr=0.003,
    train={"weight_decay": 0.05, "ema": 0.998},
    augment={"affine": {"p": 0.5}},
)

BLOBS = Recipe(
    anchor="configs/nuclei_cpu.yaml",
    result="DSB 2018 nuclei: Dice 0.829 on the 101 test images after 7 minutes on 2 CPU cores",
    model={"arch": "unet", "depth": 6, "base_width": 8, "encoder": "residual", "downsample": "conv", "skips": "concat"},
    steps_per_epoch=30,
    batch_size=4,
    lr=0.002,
    extent=19.0,  # `unetseg init data/dsb2018_nuclei/train`: "blobs (width 11 px, parts of 19 px)"
    panel_model={"stem_stride": 2, "head": "shuffle", "norm": "instance"},
    panel_why={"stem_stride": PANEL_STEM2, "norm": PANEL_INSTANCE_NORM},
)

# configs/nuclei.yaml, the GPU config for the same blobs: wider, one level fewer.
BLOBS_GPU_MODEL = {
    "arch": "unet",
    "depth": 5,
    "base_width": 32,
    "encoder": "residual",
    "downsample": "conv",
    "skips": "concat",
}

VAL_EVERY = 10  # both anchors validate every 10 epochs
WARMUP_EPOCHS = 1  # both anchors warm up for one epoch
