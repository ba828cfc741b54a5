"""Data, augmentation, training, inference and evaluation sections, and the whole :class:`Config`."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from unetseg.config.base import Strict, check_output_dir
from unetseg.config.model import ModelConfig, UNetConfig

# --------------------------------------------------------------------------- data


class SplitConfig(Strict):
    """How the labelled pairs are divided into training and validation.

    ``block``: the naturally sorted pairs are cut into ``folds`` contiguous blocks and block
    ``fold`` is validation (neighbouring EM slices must not sit on both sides of a split).
    ``cases``: the same with whole cases (a volume, a TIFF stack, an nnU-Net case with its
    channel files) as the unit, so that no volume has slices on both sides.
    ``names``: the stems in ``val_names`` are validation. ``folders``: validation pairs come
    from ``val_images``/``val_masks``. ``file``: an nnU-Net ``splits_final.json`` (a list of
    ``{train: [...], val: [...]}`` case names per fold), entry ``fold``. ``manifest``: the
    ``split`` column of a CSV manifest (``data.layout: csv``). ``none``: every pair trains and
    none validates; the final weights are kept (a small set loses a sixth of its images to a
    validation block otherwise).
    """

    mode: Literal["block", "cases", "names", "folders", "file", "manifest", "none"] = Field(
        "block", description="how validation pairs are chosen (above)"
    )
    folds: int = Field(5, ge=2, description="block, cases: number of contiguous blocks")
    fold: int = Field(-1, description="block, cases: the block that validates (-1 = the last); file: the fold's entry")
    val_names: list[str] = Field([], description="names: stems of the validation pairs")
    val_images: Path | None = Field(None, description="folders: validation images")
    val_masks: Path | None = Field(None, description="folders: validation masks")
    file: Path | None = Field(None, description="mode 'file': nnU-Net's splits_final.json")

    @model_validator(mode="after")
    def _check(self) -> SplitConfig:
        if not -self.folds <= self.fold < self.folds and self.mode != "file":
            raise ValueError(f"fold must lie in [-{self.folds}, {self.folds - 1}], got {self.fold}")
        if self.mode == "names" and not self.val_names:
            raise ValueError("mode 'names' needs val_names")
        if self.mode == "folders" and (self.val_images is None or self.val_masks is None):
            raise ValueError("mode 'folders' needs val_images and val_masks")
        if self.mode == "file" and self.file is None:
            raise ValueError("mode 'file' needs file: the path of an nnU-Net splits_final.json")
        return self


Layout = Literal["folders", "nnunet", "msd", "csv"]
LAYOUT_ROOTS = {
    "nnunet": "the dataset folder holding dataset.json",
    "msd": "the dataset folder holding dataset.json",
    "csv": "the CSV manifest (image,mask[,split] per row)",
}


class DataConfig(Strict):
    """Where the image/mask pairs are and how their values are read.

    ``layout`` names how the pairs are stored, read in place: ``folders`` (``images`` and
    ``masks``, paired by name), ``nnunet`` (an nnU-Net v2 raw dataset: ``root/dataset.json``,
    ``imagesTr/<case>_0000``, ``labelsTr/<case>``), ``msd`` (a Medical Segmentation Decathlon
    dataset: ``root/dataset.json`` with its ``training`` list) or ``csv`` (``root`` is a CSV
    manifest). Relative paths are taken from the directory the command runs in.
    """

    layout: Layout = Field("folders", description="folders | nnunet | msd | csv")
    root: Path | None = Field(None, description="nnunet, msd: the dataset folder; csv: the manifest file")
    images: Path | None = Field(
        None,
        description="layout 'folders': folder of images; a 3D volume (NIfTI, or a DICOM series as a sub-folder) "
        "gives one sample per slice",
    )
    masks: Path | None = Field(
        None,
        description="layout 'folders': folder of masks, paired with the images by name (masks may carry "
        "_mask/_label... suffixes)",
    )
    channels: int = Field(
        1,
        ge=1,
        description="input channels: an ordinary image is converted to 1 or 3 (grey <-> colour); channels "
        "from separate files (nnU-Net _0000, _0001) or a volume's 4th axis must number exactly this",
    )
    label_map: dict[int, int] | None = Field(
        None, description="raw mask value -> class index; default: 0 -> 0, any other value -> 1"
    )
    normalize: Literal["dtype", "minmax", "zscore", "percentile", "window"] = Field(
        "dtype",
        description="dtype: divide by the dtype's range; minmax; zscore; percentile: clip + z-score (MR); "
        "window: fixed CT window to [0, 1]; volumes: whole-volume statistics",
    )
    percentile: tuple[float, float] = Field(
        (0.5, 99.5), description="normalize 'percentile': lower and upper clip percentiles"
    )
    window: tuple[float, float] | None = Field(
        None, description="normalize 'window': [center, width], e.g. [40, 400] (CT soft tissue)"
    )
    slice_axis: int = Field(
        2, ge=0, le=2, description="3D volumes are cut into 2D slices along this axis (2: a NIfTI's last)"
    )
    split: SplitConfig = SplitConfig()
    cache: bool = Field(
        True,
        description="keep decoded images in memory, up to half of the memory free when training starts; "
        "pairs beyond it are read from disk for every crop, and training says how many",
    )
    scale: float = Field(
        1.0,
        gt=0.0,
        le=1.0,
        description="working resolution: training images and masks are resized by this factor, and so is every "
        "image predict, evaluate and validation see, whose prediction is resized back to the image's own size "
        "(below 1 where objects are large: a crop then holds an object with its surroundings)",
    )
    short_side: int | None = Field(
        None,
        ge=16,
        description="working resolution per image instead of scale: every image is resized so its shorter side is "
        "this many pixels (photographs framed on one object: the framing, not the camera's pixel count, sets the "
        "object's size), and its prediction resized back",
    )

    @field_validator("percentile")
    @classmethod
    def _check_percentile(cls, value: tuple[float, float]) -> tuple[float, float]:
        if not 0.0 <= value[0] < value[1] <= 100.0:
            raise ValueError("percentile must be [low, high] with 0 <= low < high <= 100")
        return value

    @field_validator("window")
    @classmethod
    def _check_window(cls, value: tuple[float, float] | None) -> tuple[float, float] | None:
        if value is not None and value[1] <= 0:
            raise ValueError("window is [center, width] with a positive width")
        return value

    @model_validator(mode="after")
    def _check(self) -> DataConfig:
        if self.layout == "folders":
            if self.root is not None:
                raise ValueError("root belongs to layouts nnunet, msd and csv; layout 'folders' reads images and masks")
            if self.images is None or self.masks is None:
                raise ValueError(
                    "layout 'folders' needs images and masks (or set layout: nnunet | msd | csv with root)"
                )
        else:
            if self.root is None:
                raise ValueError(f"layout '{self.layout}' needs root: {LAYOUT_ROOTS[self.layout]}")
            if self.images is not None or self.masks is not None:
                raise ValueError(f"images and masks belong to layout 'folders'; layout '{self.layout}' reads root")
        if self.short_side is not None and self.scale != 1.0:
            raise ValueError("scale and short_side are two ways to set the working resolution: set one")
        if self.split.mode == "manifest" and self.layout != "csv":
            raise ValueError("split mode 'manifest' reads the split column of a CSV manifest: it needs layout 'csv'")
        if self.label_map is not None:
            classes = sorted(set(self.label_map.values()))
            if classes != list(range(len(classes))) or len(classes) < 2:
                raise ValueError(f"label_map must map onto classes 0..K-1 with K >= 2, got classes {classes}")
        if self.normalize == "window" and self.window is None:
            raise ValueError("normalize 'window' needs window: [center, width], e.g. [40, 400] for CT soft tissue")
        return self

    @property
    def source(self) -> Path:
        """What messages name as the data: the image folder, the dataset folder or the manifest."""
        source = self.images if self.layout == "folders" else self.root
        assert source is not None
        return source

    @property
    def num_classes(self) -> int:
        return 2 if self.label_map is None else max(self.label_map.values()) + 1

    @property
    def out_channels(self) -> int:
        """One logit for a binary task (sigmoid), one per class otherwise (softmax)."""
        return 1 if self.num_classes == 2 else self.num_classes


class ElasticConfig(Strict):
    """Elastic deformation as in the U-Net paper (smooth random displacement field)."""

    p: float = Field(0.0, ge=0.0, le=1.0, description="probability per crop (after the crop)")
    alpha: float = Field(1000.0, ge=0.0, description="displacement scale (1000 with sigma 25: about 3-7 px)")
    sigma: float = Field(25.0, gt=0.0, description="smoothness of the displacement field in pixels")


class AffineConfig(Strict):
    """Random rotation and zoom (nnU-Net's spatial augmentation). It warps the whole image
    before the crop, so a crop shows the corners a rotation leaves outside the image only at
    the image's border, and there filled by reflection."""

    p: float = Field(0.0, ge=0.0, le=1.0, description="probability per image (about 3 ms per 512x512 slice)")
    rotate: float = Field(180.0, ge=0.0, le=180.0, description="degrees: the angle is drawn from [-rotate, rotate]")
    scale: tuple[float, float] = Field((0.7, 1.4), description="zoom factor range (nnU-Net: 0.7-1.4)")

    @model_validator(mode="after")
    def _check_scale(self) -> AffineConfig:
        low, high = self.scale
        if not 0 < low <= high:
            raise ValueError(f"scale must be a range 0 < low <= high, got {list(self.scale)}")
        return self


class AugmentConfig(Strict):
    """Training augmentation (albumentations); validation and inference use none."""

    crop_size: int | None = Field(256, ge=8, description="random square crop; None = whole image")
    hflip: float = Field(0.5, ge=0.0, le=1.0, description="probability of a horizontal flip")
    vflip: float = Field(0.5, ge=0.0, le=1.0, description="probability of a vertical flip")
    rot90: float = Field(0.5, ge=0.0, le=1.0, description="probability of a random multiple of 90 degrees")
    elastic: ElasticConfig = ElasticConfig()
    affine: AffineConfig = AffineConfig()
    brightness_contrast: float = Field(
        0.0, ge=0.0, le=1.0, description="probability of a random brightness and contrast change"
    )
    brightness_limit: float = Field(
        0.2, ge=0.0, description="largest brightness change (albumentations' RandomBrightnessContrast)"
    )
    contrast_limit: float = Field(
        0.2, ge=0.0, description="largest contrast change (albumentations' RandomBrightnessContrast)"
    )
    hue_saturation: float = Field(
        0.0,
        ge=0.0,
        le=1.0,
        description="probability of a random hue, saturation and value shift (colour images: 3 channels)",
    )
    gamma: float = Field(
        0.0, ge=0.0, le=1.0, description="probability of a random gamma in 0.8-1.2 (intensities in [0, 1])"
    )
    stain: float = Field(
        0.0,
        ge=0.0,
        le=1.0,
        description="probability of an H&E stain jitter (albumentations' HEStain: stain vectors and "
        "intensities of a stained slide, 3 channels)",
    )


# --------------------------------------------------------------------------- training


class BorderWeightConfig(Strict):
    """U-Net border weights (Ronneberger et al. 2015, eq. 2) for the CE term of the loss."""

    w0: float = Field(10.0, gt=0.0, description="peak extra weight on a thin wall between two objects (1 + w0 in all)")
    sigma: float = Field(5.0, gt=0.0, description="pixels: how fast the extra weight decays with the wall's width")
    objects: Literal["background", "foreground"] = Field(
        "foreground",
        description="the connected components that are the objects: of the foreground classes (nuclei) "
        "or of the background (ISBI: the cells between membranes)",
    )


class LossConfig(Strict):
    """MONAI Dice-family losses or plain cross-entropy; sigmoid for binary, softmax otherwise."""

    name: Literal["dice", "dice_ce", "dice_focal", "bce", "ce"] = Field(
        "dice_ce", description="dice, dice_ce, dice_focal: MONAI's; bce, ce: cross-entropy alone"
    )
    lambda_dice: float = Field(1.0, ge=0.0, description="weight of the Dice term")
    lambda_ce: float = Field(1.0, ge=0.0, description="weight of the CE / focal term")
    batch_dice: bool = Field(
        False, description="one Dice over the whole batch (nnU-Net's batch Dice) instead of the mean of per-image Dice"
    )
    lambda_cldice: float = Field(
        0.0,
        ge=0.0,
        description="weight of MONAI's soft clDice term (topology: penalises breaks in thin structures); "
        "about 100 ms per 4x256^2 batch on 2 CPU cores, so meant for a GPU",
    )
    cldice_iters: int = Field(
        3, ge=1, le=50, description="soft-skeleton iterations: half the thickest structure, in pixels"
    )
    border_weight: BorderWeightConfig | None = Field(
        None,
        description="weight the CE term's pixels by their closeness to two objects (thin borders count more); "
        "computed once per training mask and augmented with it; null = off",
    )

    @model_validator(mode="after")
    def _check_border_weight(self) -> LossConfig:
        if self.border_weight is not None and self.name not in ("dice_ce", "bce", "ce"):
            raise ValueError(
                f"border_weight weights a cross-entropy term; loss '{self.name}' has none (use dice_ce, bce or ce)"
            )
        return self


class TrainConfig(Strict):
    """The training loop: optimiser, schedule, loss, precision, budget and logging."""

    epochs: int = Field(50, ge=1, description="epochs to train (max_time_s may end the run earlier)")
    samples_per_epoch: int | None = Field(None, ge=1, description="random crops per epoch; default: one per image")
    batch_size: int = Field(4, ge=1, description="crops per step (per process under DDP)")
    optimizer: Literal["adamw", "sgd"] = Field(
        "adamw", description="AdamW, or SGD with Nesterov momentum; both with fused kernels"
    )
    lr: float = Field(1e-3, gt=0.0, description="peak learning rate")
    weight_decay: float = Field(
        1e-4, ge=0.0, description="weight decay of the weight tensors (norms and biases get none)"
    )
    momentum: float = Field(0.99, ge=0.0, lt=1.0, description="SGD only")
    scheduler: Literal["cosine", "plateau", "none"] = Field(
        "cosine",
        description="cosine: per step, after warmup_epochs of linear warm-up; plateau: halve lr once the "
        "monitor has not improved for 5 validations; none: constant after the warm-up",
    )
    min_lr_ratio: float = Field(
        0.01,
        ge=0.0,
        le=1.0,
        description="cosine only: the rate it anneals to, as a fraction of lr (timm's min_lr, relative)",
    )
    warmup_epochs: int = Field(0, ge=0, description="epochs of linear warm-up of the learning rate")
    schedule_by: Literal["steps", "time"] = Field(
        "steps",
        description="lay the cosine out over epochs x steps, or over max_time_s of wall clock (time: a "
        "budgeted run ends annealed on any machine, at the price of step-exact reproducibility)",
    )
    loss: LossConfig = LossConfig()
    grad_clip: float | None = Field(None, gt=0.0, description="clip the gradient norm to this value; null = off")
    ema: float | None = Field(
        None,
        gt=0.0,
        lt=1.0,
        description="decay of an exponential moving average of the weights (e.g. 0.998), with a warm-up so the "
        "first steps do not linger; validation, checkpoints and so predict, evaluate and export use the average, "
        "the trained weights stay in the checkpoint for --resume; null = off",
    )
    amp: Literal["auto", "off", "bf16", "fp16"] = Field(
        "auto",
        description="auto: bf16 on CUDA (fp16 with loss scaling where the GPU lacks bf16), fp32 on a CPU; off: fp32; "
        "bf16 on a CPU: used where the CPU has native bf16 instructions (AVX512-BF16, AMX), else fp32, as the "
        "run's 'training ...' line says; fp16 on a CPU: fp32",
    )
    channels_last: bool = Field(False, description="channels-last memory format for the model and its inputs")
    compile: bool = Field(False, description="torch.compile the training step")
    device: str = Field("auto", description="auto | cpu | cuda | cuda:N")
    threads: int | None = Field(None, ge=1, description="CPU threads for torch; default: torch's choice")
    num_workers: int = Field(0, ge=0, description="data-loading worker processes; 0 = load in the training process")
    val_every: int = Field(1, ge=1, description="validate every this many epochs (and after the last)")
    monitor: Literal["dice", "iou", "pixel_error", "rand_error", "vi"] = Field(
        "dice", description="validation metric that picks best.pt (and drives the plateau scheduler)"
    )
    max_time_s: float | None = Field(None, gt=0.0, description="stop training after this wall-clock budget")
    budget_clock: Literal["wall", "cpu"] = Field(
        "wall",
        description="what max_time_s (and schedule_by: time) counts: wall-clock seconds, or the process's CPU "
        "seconds divided by train.threads, a budget that other load on a shared machine cannot eat into",
    )
    deterministic: bool = Field(False, description="deterministic algorithms, no cuDNN autotuning")
    progress: bool = Field(True, description="show a progress bar")
    level_stats: bool = Field(
        False,
        description="log per-level gradient norms and relative update sizes each epoch (grad_enc0, update_dec1, ...)",
    )
    postprocess: Literal["off", "choose"] = Field(
        "off",
        description="choose: after training, try nnU-Net's post-processing steps (fill holes, keep the largest "
        "component, drop small components) on the validation images, predicted as predict predicts (inference.tta), "
        "and keep in best.pt those that raised Dice; `unetseg postprocess` chooses again for a finished run",
    )

    @model_validator(mode="after")
    def _check_schedule(self) -> TrainConfig:
        if self.schedule_by == "time" and self.max_time_s is None:
            raise ValueError("schedule_by 'time' lays the schedule out over max_time_s: set train.max_time_s")
        return self


class PostprocessConfig(Strict):
    """nnU-Net's post-processing of predicted masks, per foreground class. ``unetseg train``
    chooses it on the validation images when ``train.postprocess`` is ``choose`` (``unetseg
    postprocess`` for a finished run): each step is kept only where it raised the validation Dice."""

    fill_holes: bool = Field(False, description="fill holes inside each foreground class's components")
    keep_largest: bool = Field(False, description="keep only the largest connected component of each class")
    min_size: int = Field(
        0, ge=0, description="remove components smaller than this many pixels (at the image's own size)"
    )

    @property
    def active(self) -> bool:
        return self.fill_holes or self.keep_largest or self.min_size > 0


class InferenceConfig(Strict):
    """Full-image prediction, used by validation, ``predict`` and ``evaluate`` alike."""

    mode: Literal["auto", "whole", "sliding"] = Field(
        "auto", description="auto: whole image if it fits in roi_size**2 pixels, else sliding window"
    )
    roi_size: int = Field(512, ge=16, description="side of the sliding window (MONAI's sliding-window inference)")
    overlap: float = Field(0.25, ge=0.0, lt=1.0, description="overlap of neighbouring windows")
    sw_batch_size: int = Field(4, ge=1, description="windows per forward pass")
    blend: Literal["gaussian", "constant"] = Field("gaussian", description="how overlapping windows are blended")
    tta: Literal["none", "flips", "d4"] = Field(
        "none",
        description="test-time augmentation of predict and evaluate (--tta); validation in training predicts once",
    )
    threshold: float = Field(0.5, gt=0.0, lt=1.0, description="binary tasks only")
    postprocess: PostprocessConfig = PostprocessConfig()


class EvalConfig(Strict):
    """Region measures of validation and ``evaluate``."""

    regions: Literal["none", "background", "foreground"] = Field(
        "none",
        description="connected components of which class define the regions for Rand error / VI "
        "(ISBI: 'background', the cell interiors between membranes; 'foreground' for blobs such as nuclei; "
        "none: no region measures)",
    )


class Config(Strict):
    """One run: the data, the model and how to train, predict with and evaluate it."""

    name: str = Field("run", description="name of the run")
    seed: int = Field(  # NumPy's seeds lie in [0, 2**32)
        0, ge=0, lt=2**32, description="seed of the weights' initialisation, the data order and the augmentation"
    )
    output_dir: Path = Field(
        Path("runs/run"),
        description="where train writes config.yaml, metrics.csv and checkpoints/ (train --out overrides it)",
    )
    data: DataConfig
    model: ModelConfig = UNetConfig()
    augment: AugmentConfig = AugmentConfig()
    train: TrainConfig = TrainConfig()
    inference: InferenceConfig = InferenceConfig()
    eval: EvalConfig = EvalConfig()

    _output_dir = field_validator("output_dir")(check_output_dir)

    @model_validator(mode="after")
    def _check_colour_augmentation(self) -> Config:
        """Colour jitter needs colours, and gamma needs intensities in [0, 1]: a grey or z-scored
        input would fail in the first step, or train on garbage."""
        aug, data = self.augment, self.data
        for key in ("hue_saturation", "stain"):
            if getattr(aug, key) > 0 and data.channels != 3:
                raise ValueError(f"augment.{key} shifts colours: it needs data.channels 3, got {data.channels}")
        if aug.gamma > 0 and data.normalize not in ("dtype", "minmax", "window"):
            raise ValueError(
                f"augment.gamma needs intensities in [0, 1] (data.normalize dtype, minmax or window), "
                f"got data.normalize {data.normalize!r}"
            )
        return self
