"""Model sections of the config: unetseg's U-Net and the reference models, chosen by ``arch``."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Discriminator, Field, Tag, model_validator

from unetseg.config.base import ActType, BlockType, NormType, SkipMode, Strict
from unetseg.config.rules import RULE_KEYS, check_unet, per_level_skips

# --------------------------------------------------------------------------- model


class UNetConfig(Strict):
    """unetseg's own U-Net (see :mod:`unetseg.models.unet`).

    Levels are counted from the full-resolution one (level 0) to the bottleneck
    (level ``depth - 1``); a per-level ``skips`` list has ``depth - 1`` entries, shallowest
    first.
    """

    arch: Literal["unet"] = Field("unet", description="which network the model section builds")
    depth: int = Field(5, ge=2, le=8, description="number of resolution levels, bottleneck included")
    base_width: int = Field(64, ge=1, description="channels of level 0")
    width_growth: float = Field(2.0, gt=0, description="width of level i = base_width * width_growth**i")
    max_width: int | None = Field(None, ge=1, description="cap on any level's width")
    encoder: str = Field("plain", description="plain | residual | preact | highway | dense | smp:<encoder name>")
    encoder_weights: str | None = Field(None, description="pretrained weights of an smp: encoder (e.g. imagenet)")
    blocks_per_level: int = Field(1, ge=1, le=16, description="encoder blocks stacked at each level")
    decoder_block: BlockType = Field("plain", description="decoder block type (any encoder block type)")
    decoder_widths: list[int] | None = Field(None, description="decoder width per level 0..depth-2")
    skips: SkipMode | list[SkipMode] = Field(
        "concat", description="long skip merge, one mode or one per level, level 0 (full resolution) first"
    )
    norm: NormType = Field("batch", description="normalisation layer")
    act: ActType = Field("relu", description="activation; crelu doubles the channels (widths must then be even)")
    downsample: Literal["maxpool", "conv"] = Field(
        "maxpool", description="maxpool (U-Net) or a stride-2 first convolution"
    )
    upsample: Literal["transpose", "bilinear", "nearest"] = Field(
        "transpose", description="2x2 up-convolution, or bilinear / nearest up-sampling + 1x1 conv"
    )
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
    stem_stride: Literal[1, 2, 4] = Field(
        1, description="resolution of level 0: 1 = full (U-Net); 2 or 4 = space-to-depth stem and an up-sampling head"
    )
    head: Literal["transpose", "shuffle"] = Field(
        "transpose", description="with stem_stride > 1: overlapping transposed conv, or 3x3 conv + pixel shuffle"
    )
    refine_width: int = Field(
        0,
        ge=0,
        description="with stem_stride > 1: width of a full-resolution stage after the head that also sees "
        "the image (a skip from the input); 0 = the head returns the logits",
    )
    deep_supervision: int = Field(
        0,
        ge=0,
        description="decoder levels below level 0 with an auxiliary logit head in training (nnU-Net); "
        "0 = off, at most depth - 2",
    )

    @model_validator(mode="after")
    def _check_rules(self) -> UNetConfig:
        check_unet(**{key: getattr(self, key) for key in RULE_KEYS})
        return self

    @property
    def skip_modes(self) -> list[str]:
        """One skip mode per level 0..depth-2."""
        return per_level_skips(self.skips, self.depth)


class SmpUnetConfig(Strict):
    """Reference model: ``segmentation_models_pytorch.Unet``."""

    arch: Literal["smp_unet"] = Field(description="which network the model section builds")
    encoder: str = Field("resnet34", description="any segmentation-models-pytorch encoder name")
    encoder_depth: int = Field(5, ge=3, le=5, description="encoder stages")
    encoder_weights: str | None = Field(None, description="pretrained encoder weights (e.g. imagenet); null = random")
    decoder_channels: list[int] = Field([256, 128, 64, 32, 16], description="decoder widths, one per encoder stage")

    @model_validator(mode="after")
    def _check(self) -> SmpUnetConfig:
        if len(self.decoder_channels) != self.encoder_depth:
            raise ValueError(f"decoder_channels needs {self.encoder_depth} entries (one per encoder stage)")
        return self


class MonaiBasicUNetConfig(Strict):
    """Reference model: MONAI ``BasicUNet`` (2D)."""

    arch: Literal["monai_basicunet"] = Field(description="which network the model section builds")
    features: list[int] = Field(
        [32, 32, 64, 128, 256, 32],
        min_length=6,
        max_length=6,
        description="widths of the 5 levels and the last decoder block",
    )
    dropout: float = Field(0.0, ge=0.0, lt=1.0, description="dropout probability")


class MonaiUNetConfig(Strict):
    """Reference model: MONAI ``UNet`` (2D, residual units, strided convolutions)."""

    arch: Literal["monai_unet"] = Field(description="which network the model section builds")
    channels: list[int] = Field([16, 32, 64, 128, 256], description="width of each level")
    strides: list[int] = Field(
        [2, 2, 2, 2], description="down-sampling stride between levels (one fewer than channels)"
    )
    num_res_units: int = Field(2, ge=0, description="residual units per level")
    norm: Literal["batch", "instance"] = Field("instance", description="normalisation layer")

    @model_validator(mode="after")
    def _check(self) -> MonaiUNetConfig:
        if len(self.strides) != len(self.channels) - 1:
            raise ValueError("strides needs one entry fewer than channels")
        return self


def _arch_of(value: Any) -> str:
    if isinstance(value, dict):
        return value.get("arch", "unet")
    return getattr(value, "arch", "unet")


ModelConfig = Annotated[
    Annotated[UNetConfig, Tag("unet")]
    | Annotated[SmpUnetConfig, Tag("smp_unet")]
    | Annotated[MonaiBasicUNetConfig, Tag("monai_basicunet")]
    | Annotated[MonaiUNetConfig, Tag("monai_unet")],
    Discriminator(_arch_of),
]
