"""Expanding path: upsample, merge the level's long skip, convolve; deepest level first.

Every level's widths are fixed in ``__init__`` (smp's ``UnetDecoder`` habit): the block at
level ``i`` takes ``skips[i].out_channels`` inputs, which depends on that level's skip mode.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from unetseg.config.rules import check_init
from unetseg.models.blocks import DEFAULT_OPTIONS, BlockOptions, crelu_output, make_stage
from unetseg.models.layers import Slice, looks_linear_, reads_crelu
from unetseg.models.skips import SkipMerge


def make_upsample(kind: str, in_ch: int, out_ch: int) -> nn.Module:
    """2x upsampling that also sets the width: a 2x2 transposed conv ("up-convolution" of
    the U-Net paper) or interpolation followed by a 1x1 conv."""
    if kind == "transpose":
        return nn.ConvTranspose2d(in_ch, out_ch, kernel_size=2, stride=2)
    if kind in ("bilinear", "nearest"):
        return nn.Sequential(
            nn.Upsample(scale_factor=2, mode=kind, **({"align_corners": False} if kind == "bilinear" else {})),
            nn.Conv2d(in_ch, out_ch, kernel_size=1),
        )
    raise ValueError(f"unknown upsample {kind!r}; choose from transpose, bilinear, nearest")


class UNetDecoder(nn.Module):
    """Decoder for encoder features ``[f_0 (full res), ..., f_{L-1} (bottleneck)]``.

    ``widths[i]`` is the decoder width at level ``i`` (``L - 1`` entries); ``skip_modes[i]``
    the long skip at level ``i``. Modules are indexed by level, so ``decoder.skips.0`` is the
    full-resolution skip and ``decoder.blocks.3`` the level-3 block.

    ``options`` apply to the decoder's blocks too, except the shortcut: a decoder block
    narrows the merged width (``concat``), which zero padding cannot do, so it projects.
    ``encoder_crelu`` tells which encoder features are CReLU outputs, for the looks-linear
    init of the convolutions that read them (``init='looks_linear'``): the up-convolution,
    an ``add`` projection, or the skip's channels of the block after a ``concat``.
    """

    def __init__(
        self,
        encoder_channels: list[int],
        widths: list[int],
        skip_modes: list[str],
        block: str = "plain",
        norm: str = "batch",
        act: str = "relu",
        upsample: str = "transpose",
        *,
        options: BlockOptions = DEFAULT_OPTIONS,
        encoder_crelu: list[Slice | None] | None = None,
        init: str = "default",
    ) -> None:
        super().__init__()
        check_init(init, act)
        levels = len(encoder_channels)
        if len(widths) != levels - 1 or len(skip_modes) != levels - 1:
            raise ValueError(f"need {levels - 1} decoder widths and skip modes for {levels} encoder levels")
        encoder_crelu = encoder_crelu or [None] * levels
        options = BlockOptions(shortcut="projection", zero_init_residual=options.zero_init_residual)
        ups, skips, blocks = [], [], []
        for level in range(levels - 1):
            deepest = level + 1 == levels - 1
            below = encoder_channels[-1] if deepest else widths[level + 1]
            below_crelu = encoder_crelu[-1] if deepest else crelu_output(block, act, below)
            ups.append(make_upsample(upsample, below, widths[level]))
            reads_crelu(ups[-1] if isinstance(ups[-1], nn.ConvTranspose2d) else ups[-1][1], below_crelu)
            skips.append(SkipMerge(skip_modes[level], widths[level], encoder_channels[level]))
            block_crelu = None
            if encoder_crelu[level] is not None:
                if skips[-1].proj is not None:
                    reads_crelu(skips[-1].proj, encoder_crelu[level])
                elif skips[-1].out_channels > widths[level]:  # concat, gated, attention: cat([up, skip])
                    block_crelu = (widths[level], encoder_channels[level])
            blocks.append(
                make_stage(
                    block, skips[-1].out_channels, widths[level], 1, norm, act, options=options, crelu_in=block_crelu
                )
            )
        self.ups = nn.ModuleList(ups)
        self.skips = nn.ModuleList(skips)
        self.blocks = nn.ModuleList(blocks)
        self.widths = list(widths)
        self.out_channels = widths[0]
        self.crelu_output = crelu_output(block, act, widths[0])
        if init == "looks_linear":
            looks_linear_(self)

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        return self.levels(features, 1)[0]

    def levels(self, features: list[torch.Tensor], count: int) -> list[torch.Tensor]:
        """The outputs of decoder levels ``0..count-1``, level 0 (the finest) first: deep
        supervision reads the coarser ones. Only those are kept, so a plain forward frees each
        level's output once the next level has used it."""
        x = features[-1]
        outputs: list[torch.Tensor] = []
        for level in reversed(range(len(self.blocks))):
            skip = features[level]
            x = self.ups[level](x)
            if x.shape[-2:] != skip.shape[-2:]:  # encoders with uneven strides (some smp ones)
                x = F.interpolate(x, size=skip.shape[-2:], mode="nearest")
            x = self.blocks[level](self.skips[level](x, skip if self.skips[level].uses_skip else None))
            if level < count:
                outputs.append(x)
        return outputs[::-1]
