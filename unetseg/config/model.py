"""Model sections of the config: unetseg's U-Net and the reference models, chosen by ``arch``."""

from __future__ import annotations

import difflib
from typing import Annotated, Any, Literal, Union

from pydantic import Discriminator, Field, Tag, model_validator

from unetseg.config.base import BLOCK_TYPES, RESIDUAL_BLOCKS, ActType, BlockType, NormType, SkipMode, Strict

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
    downsample: Literal["maxpool", "conv"] = Field("maxpool", description="maxpool (U-Net) or a stride-2 first convolution")
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
        0, ge=0, description="with stem_stride > 1: width of a full-resolution stage after the head that also sees "
        "the image (a skip from the input); 0 = the head returns the logits"
    )
    deep_supervision: int = Field(
        0, ge=0, description="decoder levels below level 0 with an auxiliary logit head in training (nnU-Net); "
        "0 = off, at most depth - 2"
    )

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
        if self.deep_supervision > self.depth - 2:
            raise ValueError(
                f"deep_supervision heads sit on decoder levels 1..{self.depth - 2} for depth {self.depth}, "
                f"so it can be at most {self.depth - 2}, got {self.deep_supervision}"
            )
        if self.refine_width and self.stem_stride == 1:
            raise ValueError("refine_width needs stem_stride 2 or 4: with stem_stride 1 the last level is at full resolution")
        if self.stem_stride > 1 and self.encoder.startswith("smp:"):
            raise ValueError("stem_stride applies to unetseg's own encoders; smp: encoders bring their own stem")
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

    arch: Literal["smp_unet"] = Field(description="which network the model section builds")
    encoder: str = Field("resnet34", description="any segmentation-models-pytorch encoder name")
    encoder_depth: int = Field(5, ge=3, le=5, description="encoder stages")
    encoder_weights: str | None = Field(None, description="pretrained encoder weights (e.g. imagenet); null = random")
    decoder_channels: list[int] = Field([256, 128, 64, 32, 16], description="decoder widths, one per encoder stage")

    @model_validator(mode="after")
    def _check(self) -> "SmpUnetConfig":
        if len(self.decoder_channels) != self.encoder_depth:
            raise ValueError(f"decoder_channels needs {self.encoder_depth} entries (one per encoder stage)")
        return self


class MonaiBasicUNetConfig(Strict):
    """Reference model: MONAI ``BasicUNet`` (2D)."""

    arch: Literal["monai_basicunet"] = Field(description="which network the model section builds")
    features: list[int] = Field(
        [32, 32, 64, 128, 256, 32], min_length=6, max_length=6, description="widths of the 5 levels and the last decoder block"
    )
    dropout: float = Field(0.0, ge=0.0, lt=1.0, description="dropout probability")


class MonaiUNetConfig(Strict):
    """Reference model: MONAI ``UNet`` (2D, residual units, strided convolutions)."""

    arch: Literal["monai_unet"] = Field(description="which network the model section builds")
    channels: list[int] = Field([16, 32, 64, 128, 256], description="width of each level")
    strides: list[int] = Field([2, 2, 2, 2], description="down-sampling stride between levels (one fewer than channels)")
    num_res_units: int = Field(2, ge=0, description="residual units per level")
    norm: Literal["batch", "instance"] = Field("instance", description="normalisation layer")

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
