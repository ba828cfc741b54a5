"""Encoders: each returns one feature map per level, full resolution first.

``UNetEncoder`` stacks unetseg's own blocks (plain / residual / preact / highway / dense,
see :mod:`.blocks`); ``SmpEncoder``
adapts any segmentation-models-pytorch encoder to the same contract, so the decoder and the
skip merges never need to know which one they are fed by.
"""

from __future__ import annotations

import torch
from torch import nn

from unetseg.config.base import did_you_mean
from unetseg.config.rules import check_init
from unetseg.models.blocks import DEFAULT_OPTIONS, RESIDUAL_TYPE, BlockOptions, block_class, crelu_output, make_stage
from unetseg.models.layers import Slice, conv3x3, looks_linear_


class EncoderStage(nn.Module):
    """One level: an optional down-sampling layer, then the level's blocks."""

    def __init__(self, down: nn.Module, blocks: nn.Sequential) -> None:
        super().__init__()
        self.down = down
        self.blocks = blocks

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(self.down(x))


class UNetEncoder(nn.Module):
    """Contracting path. Level ``i`` has ``widths[i]`` channels at 1/2**i resolution.

    ``downsample='maxpool'`` halves the resolution with 2x2 max pooling (U-Net), ``'conv'``
    with a stride-2 first convolution (and a strided or average-pooled shortcut, see
    ``options``), which is cheaper and learns the down-sampling.

    ``stochastic_depth`` is the drop probability of the deepest block; block ``l`` of ``L``
    (counted over the whole encoder, shallowest first, from 1) is dropped with probability
    ``stochastic_depth * l / L`` in training (Huang et al. 2016's linear decay rule), never in
    evaluation. ``init='looks_linear'`` (with ``act='crelu'``) starts the encoder as a
    linear map, exactly so with ``downsample='conv'``: max pooling is not linear.
    """

    def __init__(
        self,
        in_channels: int,
        widths: list[int],
        block: str = "plain",
        blocks_per_level: int = 1,
        norm: str = "batch",
        act: str = "relu",
        downsample: str = "maxpool",
        dropout: float = 0.0,
        *,
        options: BlockOptions = DEFAULT_OPTIONS,
        stochastic_depth: float = 0.0,
        init: str = "default",
    ) -> None:
        super().__init__()
        cls = block_class(block)
        check_init(init, act)
        if stochastic_depth and not cls.DROPPABLE:
            raise ValueError(
                f"stochastic_depth needs a residual-type encoder ({', '.join(RESIDUAL_TYPE)}); "
                f"{block!r} has no branch to drop"
            )
        total = len(widths) * blocks_per_level
        drops = [stochastic_depth * (i + 1) / total for i in range(total)]
        stages = []
        prev, crelu_in = in_channels, None
        for level, width in enumerate(widths):
            stride = 2 if level > 0 and downsample == "conv" else 1
            down: nn.Module = nn.MaxPool2d(2) if level > 0 and downsample == "maxpool" else nn.Identity()
            if level == 0 and cls.PRE_ACTIVATED:
                # A pre-activation block would normalise and rectify the raw image; give it a conv stem.
                down, prev = conv3x3(in_channels, width, bias=True), width
            level_drops = drops[level * blocks_per_level : (level + 1) * blocks_per_level]
            blocks = make_stage(
                block,
                prev,
                width,
                blocks_per_level,
                norm,
                act,
                stride,
                options=options,
                drop_paths=level_drops,
                crelu_in=crelu_in,
            )
            stages.append(EncoderStage(down, blocks))
            prev, crelu_in = width, crelu_output(block, act, width)
        self.stages = nn.ModuleList(stages)
        self.dropout = nn.Dropout2d(dropout) if dropout > 0 else nn.Identity()
        self.out_channels = list(widths)
        self.reduction = 2 ** (len(widths) - 1)
        # Which level features are CReLU outputs (the decoder's looks-linear init needs it).
        self.crelu_features: list[Slice | None] = [crelu_output(block, act, w) for w in widths]
        if init == "looks_linear":
            looks_linear_(self)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        features = []
        for stage in self.stages:
            x = stage(x)
            features.append(x)
        features[-1] = self.dropout(features[-1])
        return features


def check_smp_encoder(name: str) -> None:
    """A ValueError with close matches for a name segmentation-models-pytorch does not know."""
    import segmentation_models_pytorch as smp

    known = list(smp.encoders.encoders)
    if name not in known:
        raise ValueError(f"unknown smp encoder {name!r}" + did_you_mean(name, known, n=3))


class SmpEncoder(nn.Module):
    """A segmentation-models-pytorch encoder with ``levels - 1`` down-sampling stages.

    smp's level 0 is the input image itself (its identity stage), so a level-0 skip from an
    smp encoder carries the raw image, which is cheap and keeps pixel-exact detail.
    """

    def __init__(
        self, name: str, in_channels: int, levels: int, weights: str | None = None, dropout: float = 0.0
    ) -> None:
        super().__init__()
        import segmentation_models_pytorch as smp

        check_smp_encoder(name)
        if levels - 1 > 5:
            raise ValueError(f"smp encoders have at most 5 down-sampling stages (depth <= 6), got depth {levels}")
        try:
            self.body = smp.encoders.get_encoder(name, in_channels=in_channels, depth=levels - 1, weights=weights)
        except (KeyError, OSError, RuntimeError) as err:
            raise ValueError(f"cannot build smp encoder {name!r} with weights={weights!r}: {err}") from err
        self.dropout = nn.Dropout2d(dropout) if dropout > 0 else nn.Identity()
        self.out_channels = list(self.body.out_channels)
        self.crelu_features: list[Slice | None] = [None] * len(self.out_channels)
        self.reduction = 2 ** (levels - 1)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        features = list(self.body(x))
        features[-1] = self.dropout(features[-1])
        return features
