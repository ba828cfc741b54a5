"""The validated run configuration.

Every YAML file in ``configs/`` is parsed into :class:`Config`. The schema is strict: an
unknown key, a value of the wrong type or a value out of range is reported as one
:class:`ConfigError` naming the dotted key (``model.depht: unknown key, did you mean
'depth'?``), so a typo never silently falls back to a default. The same schema travels
inside every checkpoint, so a checkpoint alone rebuilds its model and its data pipeline.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import yaml
from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, ValidationError, field_validator, model_validator

SkipMode = Literal["concat", "add", "none", "gated", "attention"]
BlockType = Literal["plain", "residual", "preact", "highway", "dense"]
NormType = Literal["batch", "instance", "group", "none"]
ActType = Literal["relu", "leaky_relu", "gelu", "silu", "elu", "prelu", "crelu"]

SKIP_MODES: tuple[str, ...] = SkipMode.__args__  # type: ignore[attr-defined]
BLOCK_TYPES: tuple[str, ...] = BlockType.__args__  # type: ignore[attr-defined]
RESIDUAL_BLOCKS = ("residual", "preact", "highway")  # blocks with a branch that stochastic depth can drop


class ConfigError(ValueError):
    """A configuration that cannot be used; the message names the file and the key."""


class Strict(BaseModel):
    """Base of every config section: unknown keys are errors, assignments are re-validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


# --------------------------------------------------------------------------- model


class UNetConfig(Strict):
    """unetseg's own U-Net (see :mod:`unetseg.models.unet`).

    Levels are counted from the full-resolution one (level 0) to the bottleneck
    (level ``depth - 1``); a per-level ``skips`` list has ``depth - 1`` entries, shallowest
    first.
    """

    arch: Literal["unet"] = "unet"
    depth: int = Field(5, ge=2, le=8, description="number of resolution levels, bottleneck included")
    base_width: int = Field(64, ge=1, description="channels of level 0")
    width_growth: float = Field(2.0, gt=0, description="width of level i = base_width * width_growth**i")
    max_width: int | None = Field(None, ge=1, description="cap on any level's width")
    encoder: str = Field("plain", description="plain | residual | preact | highway | dense | smp:<encoder name>")
    encoder_weights: str | None = Field(None, description="pretrained weights of an smp: encoder (e.g. imagenet)")
    blocks_per_level: int = Field(1, ge=1, le=16, description="encoder blocks stacked at each level")
    decoder_block: BlockType = "plain"
    decoder_widths: list[int] | None = Field(None, description="decoder width per level 0..depth-2")
    skips: SkipMode | list[SkipMode] = "concat"
    norm: NormType = "batch"
    act: ActType = "relu"
    downsample: Literal["maxpool", "conv"] = "maxpool"
    upsample: Literal["transpose", "bilinear", "nearest"] = "transpose"
    dropout: float = Field(0.0, ge=0.0, lt=1.0, description="Dropout2d at the end of the contracting path")
    shortcut: Literal["projection", "zero_pad"] = Field(
        "projection", description="encoder shortcut where the width changes: 1x1 projection (B) or zero padding (A)"
    )
    shortcut_downsample: Literal["stride", "avgpool"] = Field(
        "stride", description="encoder shortcut where the resolution halves: stride-2 subsampling or 2x2 average"
    )
    stochastic_depth: float = Field(
        0.0, ge=0.0, lt=1.0, description="drop probability of the deepest encoder block (linear in depth); 0 = off"
    )
    zero_init_residual: bool = Field(True, description="residual blocks start with their branch's last norm at zero")
    init: Literal["default", "looks_linear"] = Field("default", description="looks_linear needs act crelu")

    @model_validator(mode="after")
    def _check_levels(self) -> "UNetConfig":
        if isinstance(self.skips, list) and len(self.skips) != self.depth - 1:
            raise ValueError(
                f"skips lists one mode per level with a skip: expected {self.depth - 1} entries "
                f"for depth {self.depth}, got {len(self.skips)}"
            )
        if self.decoder_widths is not None and len(self.decoder_widths) != self.depth - 1:
            raise ValueError(
                f"decoder_widths needs {self.depth - 1} entries for depth {self.depth}, got {len(self.decoder_widths)}"
            )
        if self.encoder not in BLOCK_TYPES and not (self.encoder.startswith("smp:") and len(self.encoder) > 4):
            hint = difflib.get_close_matches(self.encoder, BLOCK_TYPES, n=1)
            raise ValueError(
                f"encoder {self.encoder!r} is not one of {', '.join(BLOCK_TYPES)} or 'smp:<name>'"
                + (f"; did you mean {hint[0]!r}?" if hint else "")
            )
        if self.init == "looks_linear" and (self.act != "crelu" or self.encoder.startswith("smp:")):
            raise ValueError("init 'looks_linear' needs act 'crelu' and one of unetseg's own encoders")
        if self.stochastic_depth > 0 and self.encoder not in RESIDUAL_BLOCKS:
            raise ValueError(
                f"stochastic_depth needs a residual-type encoder ({', '.join(RESIDUAL_BLOCKS)}), got {self.encoder!r}"
            )
        return self

    def skip_modes(self) -> list[str]:
        """One skip mode per level 0..depth-2."""
        return list(self.skips) if isinstance(self.skips, list) else [self.skips] * (self.depth - 1)


class SmpUnetConfig(Strict):
    """Reference model: ``segmentation_models_pytorch.Unet``."""

    arch: Literal["smp_unet"]
    encoder: str = "resnet34"
    encoder_depth: int = Field(5, ge=3, le=5)
    encoder_weights: str | None = None
    decoder_channels: list[int] = [256, 128, 64, 32, 16]

    @model_validator(mode="after")
    def _check(self) -> "SmpUnetConfig":
        if len(self.decoder_channels) != self.encoder_depth:
            raise ValueError(f"decoder_channels needs {self.encoder_depth} entries (one per encoder stage)")
        return self


class MonaiBasicUNetConfig(Strict):
    """Reference model: MONAI ``BasicUNet`` (2D)."""

    arch: Literal["monai_basicunet"]
    features: list[int] = Field([32, 32, 64, 128, 256, 32], min_length=6, max_length=6)
    dropout: float = Field(0.0, ge=0.0, lt=1.0)


class MonaiUNetConfig(Strict):
    """Reference model: MONAI ``UNet`` (2D, residual units, strided convolutions)."""

    arch: Literal["monai_unet"]
    channels: list[int] = [16, 32, 64, 128, 256]
    strides: list[int] = [2, 2, 2, 2]
    num_res_units: int = Field(2, ge=0)
    norm: Literal["batch", "instance"] = "instance"

    @model_validator(mode="after")
    def _check(self) -> "MonaiUNetConfig":
        if len(self.strides) != len(self.channels) - 1:
            raise ValueError("strides needs one entry fewer than channels")
        return self


def _arch_of(value: Any) -> str:
    if isinstance(value, dict):
        return value.get("arch", "unet")
    return getattr(value, "arch", "unet")


ModelConfig = Annotated[
    Union[
        Annotated[UNetConfig, Tag("unet")],
        Annotated[SmpUnetConfig, Tag("smp_unet")],
        Annotated[MonaiBasicUNetConfig, Tag("monai_basicunet")],
        Annotated[MonaiUNetConfig, Tag("monai_unet")],
    ],
    Discriminator(_arch_of),
]


# --------------------------------------------------------------------------- data


class SplitConfig(Strict):
    """How the labelled pairs are divided into training and validation.

    ``block``: the naturally sorted pairs are cut into ``folds`` contiguous blocks and block
    ``fold`` is validation (neighbouring EM slices must not sit on both sides of a split).
    ``names``: the stems in ``val_names`` are validation. ``folders``: validation pairs come
    from ``val_images``/``val_masks``.
    """

    mode: Literal["block", "names", "folders"] = "block"
    folds: int = Field(5, ge=2)
    fold: int = -1
    val_names: list[str] = []
    val_images: Path | None = None
    val_masks: Path | None = None

    @model_validator(mode="after")
    def _check(self) -> "SplitConfig":
        if not -self.folds <= self.fold < self.folds:
            raise ValueError(f"fold must lie in [-{self.folds}, {self.folds - 1}], got {self.fold}")
        if self.mode == "names" and not self.val_names:
            raise ValueError("mode 'names' needs val_names")
        if self.mode == "folders" and (self.val_images is None or self.val_masks is None):
            raise ValueError("mode 'folders' needs val_images and val_masks")
        return self


class DataConfig(Strict):
    """Where the image/mask pairs are and how their values are read.

    Relative paths are taken from the directory the command runs in.
    """

    images: Path
    masks: Path
    channels: Literal[1, 3] = Field(1, description="images are converted to this many channels")
    label_map: dict[int, int] | None = Field(
        None, description="raw mask value -> class index; default: 0 -> 0, any other value -> 1"
    )
    normalize: Literal["dtype", "minmax", "zscore", "percentile", "window"] = Field(
        "dtype", description="percentile: clip + z-score (MR); window: fixed CT window to [0, 1]; volumes: whole-volume statistics"
    )
    percentile: tuple[float, float] = Field((0.5, 99.5), description="normalize 'percentile': lower and upper clip percentiles")
    window: tuple[float, float] | None = Field(None, description="normalize 'window': [center, width], e.g. [40, 400] (CT soft tissue)")
    slice_axis: int = Field(2, ge=0, le=2, description="3D volumes are cut into 2D slices along this axis (2: a NIfTI's last)")
    split: SplitConfig = SplitConfig()
    cache: bool = Field(True, description="keep decoded images in memory")

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
    def _check(self) -> "DataConfig":
        if self.label_map is not None:
            classes = sorted(set(self.label_map.values()))
            if classes != list(range(len(classes))) or len(classes) < 2:
                raise ValueError(f"label_map must map onto classes 0..K-1 with K >= 2, got classes {classes}")
        if self.normalize == "window" and self.window is None:
            raise ValueError("normalize 'window' needs window: [center, width], e.g. [40, 400] for CT soft tissue")
        return self

    @property
    def num_classes(self) -> int:
        return 2 if self.label_map is None else max(self.label_map.values()) + 1

    @property
    def out_channels(self) -> int:
        """One logit for a binary task (sigmoid), one per class otherwise (softmax)."""
        return 1 if self.num_classes == 2 else self.num_classes


class ElasticConfig(Strict):
    """Elastic deformation as in the U-Net paper (smooth random displacement field)."""

    p: float = Field(0.0, ge=0.0, le=1.0)
    alpha: float = Field(1000.0, ge=0.0, description="displacement scale (1000 with sigma 25: about 3-7 px)")
    sigma: float = Field(25.0, gt=0.0, description="smoothness of the displacement field in pixels")


class AugmentConfig(Strict):
    """Training augmentation (albumentations); validation and inference use none."""

    crop_size: int | None = Field(256, ge=8, description="random square crop; None = whole image")
    hflip: float = Field(0.5, ge=0.0, le=1.0)
    vflip: float = Field(0.5, ge=0.0, le=1.0)
    rot90: float = Field(0.5, ge=0.0, le=1.0)
    elastic: ElasticConfig = ElasticConfig()
    brightness_contrast: float = Field(0.0, ge=0.0, le=1.0, description="probability")
    brightness_limit: float = Field(0.2, ge=0.0)
    contrast_limit: float = Field(0.2, ge=0.0)


# --------------------------------------------------------------------------- training


class LossConfig(Strict):
    """MONAI Dice-family losses or plain cross-entropy; sigmoid for binary, softmax otherwise."""

    name: Literal["dice", "dice_ce", "dice_focal", "bce", "ce"] = "dice_ce"
    lambda_dice: float = Field(1.0, ge=0.0)
    lambda_ce: float = Field(1.0, ge=0.0, description="weight of the CE / focal term")


class TrainConfig(Strict):
    epochs: int = Field(50, ge=1)
    samples_per_epoch: int | None = Field(None, ge=1, description="random crops per epoch; default: one per image")
    batch_size: int = Field(4, ge=1)
    optimizer: Literal["adamw", "sgd"] = "adamw"
    lr: float = Field(1e-3, gt=0.0)
    weight_decay: float = Field(1e-4, ge=0.0)
    momentum: float = Field(0.99, ge=0.0, lt=1.0, description="SGD only")
    scheduler: Literal["cosine", "plateau", "none"] = "cosine"
    warmup_epochs: int = Field(0, ge=0)
    loss: LossConfig = LossConfig()
    grad_clip: float | None = Field(None, gt=0.0)
    amp: Literal["auto", "off", "bf16", "fp16"] = Field("auto", description="auto: bf16 on CUDA, off on CPU")
    channels_last: bool = False
    compile: bool = False
    device: str = Field("auto", description="auto | cpu | cuda | cuda:N")
    threads: int | None = Field(None, ge=1, description="CPU threads for torch; default: torch's choice")
    num_workers: int = Field(0, ge=0)
    val_every: int = Field(1, ge=1)
    monitor: Literal["dice", "iou", "pixel_error", "rand_error", "vi"] = "dice"
    max_time_s: float | None = Field(None, gt=0.0, description="stop training after this wall-clock budget")
    deterministic: bool = False
    progress: bool = True
    level_stats: bool = Field(
        False, description="log per-level gradient norms and relative update sizes each epoch (grad_enc0, update_dec1, ...)"
    )


class InferenceConfig(Strict):
    """Full-image prediction, used by validation, ``predict`` and ``evaluate`` alike."""

    mode: Literal["auto", "whole", "sliding"] = Field(
        "auto", description="auto: whole image if it fits in roi_size**2 pixels, else sliding window"
    )
    roi_size: int = Field(512, ge=16)
    overlap: float = Field(0.25, ge=0.0, lt=1.0)
    sw_batch_size: int = Field(4, ge=1)
    blend: Literal["gaussian", "constant"] = "gaussian"
    tta: Literal["none", "flips", "d4"] = "none"
    threshold: float = Field(0.5, gt=0.0, lt=1.0, description="binary tasks only")


class EvalConfig(Strict):
    regions: Literal["none", "background", "foreground"] = Field(
        "none",
        description="connected components of which class define the regions for Rand error / VI "
        "(ISBI: 'background', the cell interiors between membranes)",
    )


class Config(Strict):
    name: str = "run"
    seed: int = 0
    output_dir: Path = Path("runs/run")
    data: DataConfig
    model: ModelConfig = UNetConfig()
    augment: AugmentConfig = AugmentConfig()
    train: TrainConfig = TrainConfig()
    inference: InferenceConfig = InferenceConfig()
    eval: EvalConfig = EvalConfig()


# --------------------------------------------------------------------------- loading


def set_dotted(tree: dict[str, Any], dotted: str, value: Any) -> None:
    """Set ``a.b.c`` in a nested dict, creating sections on the way."""
    node = tree
    parts = dotted.split(".")
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"--set {dotted}: {part!r} is not a section")
        node = child
    node[parts[-1]] = value


def apply_overrides(tree: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``key.sub=value`` strings; values are parsed as YAML (``3``, ``true``, ``[a, b]``)."""
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set expects key=value, got {item!r}")
        key, raw = item.split("=", 1)
        set_dotted(tree, key.strip(), yaml.safe_load(raw))
    return tree


def _known_keys(model: type[BaseModel] | None) -> list[str]:
    return list(model.model_fields) if model is not None else []


def _section_model(loc: tuple[Any, ...], arch: str, root: type[BaseModel]) -> type[BaseModel] | None:
    """The schema class that holds the key at ``loc``, for 'did you mean' hints."""
    model: type[BaseModel] | None = root
    for part in loc[:-1]:
        if model is None or not isinstance(part, str):
            return None
        if part in ("unet", "smp_unet", "monai_basicunet", "monai_unet"):
            continue
        annotation = model.model_fields[part].annotation if part in model.model_fields else None
        if part == "model":
            model = {"unet": UNetConfig, "smp_unet": SmpUnetConfig}.get(arch) or {
                "monai_basicunet": MonaiBasicUNetConfig,
                "monai_unet": MonaiUNetConfig,
            }.get(arch, UNetConfig)
        elif isinstance(annotation, type) and issubclass(annotation, BaseModel):
            model = annotation
        else:
            return None
    return model


def format_validation_error(
    err: ValidationError, source: str, tree: dict[str, Any], root: type[BaseModel] | None = None, what: str = "configuration"
) -> str:
    """One readable line per problem, each naming the dotted key."""
    root = root or Config
    arch = _arch_of(tree.get("model", {}))
    lines = []
    for problem in err.errors():
        loc = tuple(p for p in problem["loc"] if p not in ("unet", "smp_unet", "monai_basicunet", "monai_unet"))
        key = ".".join(str(p) for p in loc) or "(top level)"
        if problem["type"] == "extra_forbidden":
            hint = difflib.get_close_matches(str(loc[-1]), _known_keys(_section_model(problem["loc"], arch, root)), n=1)
            msg = "unknown key" + (f", did you mean {hint[0]!r}?" if hint else "")
        elif problem["type"] == "missing":
            msg = "required key is missing"
        else:
            msg = problem["msg"].removeprefix("Value error, ")
            if "input" in problem and problem["type"] not in ("model_type",):
                msg += f" (got {problem['input']!r})"
        lines.append(f"{key}: {msg}")
    return f"invalid {what} in {source}:\n  " + "\n  ".join(lines)


def config_from_dict(tree: dict[str, Any], source: str = "<config>") -> Config:
    try:
        return Config.model_validate(tree)
    except ValidationError as err:
        raise ConfigError(format_validation_error(err, source, tree)) from None


def load_config(path: str | Path, overrides: list[str] | None = None) -> Config:
    """Read a YAML config, apply ``--set`` overrides, validate."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as err:
        raise ConfigError(f"cannot read config {path}: {err.strerror}") from None
    try:
        tree = yaml.safe_load(text) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{path} is not valid YAML: {err}") from None
    if not isinstance(tree, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections")
    apply_overrides(tree, overrides or [])
    return config_from_dict(tree, str(path))


def dump_config(cfg: Config) -> dict[str, Any]:
    """A plain, YAML/JSON-safe dict that :func:`config_from_dict` reads back unchanged."""
    return cfg.model_dump(mode="json")
