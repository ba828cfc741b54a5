"""Encoders: each returns one feature map per level, full resolution first.

``UNetEncoder`` stacks unetseg's own blocks (plain / residual / preact); ``SmpEncoder``
adapts any segmentation-models-pytorch encoder to the same contract, so the decoder and the
skip merges never need to know which one they are fed by.
"""

from __future__ import annotations

import difflib

import torch
from torch import nn

from unetseg.models.blocks import conv3x3, make_stage


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
    with a stride-2 first convolution (and, for residual blocks, a strided projection
    shortcut), which is cheaper and learns the down-sampling.
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
    ) -> None:
        super().__init__()
        stages = []
        prev = in_channels
        for level, width in enumerate(widths):
            stride = 2 if level > 0 and downsample == "conv" else 1
            down: nn.Module = nn.MaxPool2d(2) if level > 0 and downsample == "maxpool" else nn.Identity()
            if level == 0 and block == "preact":
                # A pre-activation block would normalise and rectify the raw image; give it a conv stem.
                down, prev = conv3x3(in_channels, width, bias=True), width
            stages.append(EncoderStage(down, make_stage(block, prev, width, blocks_per_level, norm, act, stride)))
            prev = width
        self.stages = nn.ModuleList(stages)
        self.dropout = nn.Dropout2d(dropout) if dropout > 0 else nn.Identity()
        self.out_channels = list(widths)
        self.reduction = 2 ** (len(widths) - 1)

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
        hint = difflib.get_close_matches(name, known, n=3)
        raise ValueError(
            f"unknown smp encoder {name!r}" + (f"; did you mean {', '.join(map(repr, hint))}?" if hint else "")
        )


class SmpEncoder(nn.Module):
    """A segmentation-models-pytorch encoder with ``levels - 1`` down-sampling stages.

    smp's level 0 is the input image itself (its identity stage), so a level-0 skip from an
    smp encoder carries the raw image, which is cheap and keeps pixel-exact detail.
    """

    def __init__(self, name: str, in_channels: int, levels: int, weights: str | None = None, dropout: float = 0.0) -> None:
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
        self.reduction = 2 ** (levels - 1)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        features = list(self.body(x))
        features[-1] = self.dropout(features[-1])
        return features
