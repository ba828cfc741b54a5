"""The U-Net: wiring only (encoder -> decoder -> 1x1 head), with any input size."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from unetseg.config.rules import RULE_KEYS, check_unet, is_smp, per_level_skips
from unetseg.models.blocks import BlockOptions
from unetseg.models.decoder import UNetDecoder
from unetseg.models.encoder import SmpEncoder, UNetEncoder
from unetseg.models.layers import act_factor, crelu_map, looks_linear_, make_act, reads_crelu
from unetseg.models.padding import pad_to_multiple
from unetseg.models.skips import SkipMerge


def level_widths(depth: int, base_width: int, growth: float, max_width: int | None = None) -> list[int]:
    """Width of every level: ``base_width * growth**i``, rounded, capped at ``max_width``."""
    widths = [max(1, round(base_width * growth**i)) for i in range(depth)]
    return [min(w, max_width) for w in widths] if max_width else widths


def default_decoder_widths(encoder: str, encoder_widths: list[int]) -> list[int]:
    """Decoder width per level 0..depth-2 when none is given: the encoder's own, or 16, 32, 64, ...
    behind an smp encoder (whose widths, up to 2048, would make a decoder larger than the net)."""
    if is_smp(encoder):
        return [16 * 2**i for i in range(len(encoder_widths) - 1)]
    return encoder_widths[:-1]


def _head(in_channels: int, out_channels: int, stride: int, kind: str) -> nn.Module:
    """Logits at full resolution from the last decoder level (at ``1/stride`` of it)."""
    if kind not in ("transpose", "shuffle"):
        raise ValueError(f"head must be 'transpose' or 'shuffle', got {kind!r}")
    if stride == 1:
        return nn.Conv2d(in_channels, out_channels, kernel_size=1)
    if kind == "transpose":
        return nn.ConvTranspose2d(in_channels, out_channels, 2 * stride, stride, stride // 2)
    return nn.Sequential(nn.Conv2d(in_channels, out_channels * stride**2, 3, padding=1), nn.PixelShuffle(stride))


def _build_encoder(args: dict[str, Any]) -> nn.Module:
    """The contracting path :class:`UNet`'s options describe: unetseg's own, or an smp encoder."""
    if is_smp(args["encoder"]):
        return SmpEncoder(
            args["encoder"][4:], args["in_channels"], args["depth"], args["encoder_weights"], args["dropout"]
        )
    return UNetEncoder(
        args["in_channels"] * args["stem_stride"] ** 2,
        level_widths(args["depth"], args["base_width"], args["width_growth"], args["max_width"]),
        args["encoder"],
        args["blocks_per_level"],
        args["norm"],
        args["act"],
        args["downsample"],
        args["dropout"],
        options=_block_options(args),
        stochastic_depth=args["stochastic_depth"],
        init=args["init"],
    )


def _build_decoder(args: dict[str, Any], encoder: nn.Module) -> UNetDecoder:
    """The expanding path, one :class:`SkipMerge` per level, over ``encoder``'s features."""
    widths = level_widths(args["depth"], args["base_width"], args["width_growth"], args["max_width"])
    return UNetDecoder(
        encoder.out_channels,
        args["decoder_widths"] or default_decoder_widths(args["encoder"], widths),
        per_level_skips(args["skips"], args["depth"]),
        args["decoder_block"],
        args["norm"],
        args["act"],
        args["upsample"],
        options=_block_options(args),
        encoder_crelu=encoder.crelu_features,
        init=args["init"],
    )


def _block_options(args: dict[str, Any]) -> BlockOptions:
    return BlockOptions(args["shortcut"], args["shortcut_downsample"], args["zero_init_residual"])


class FullResolutionRefinement(nn.Module):
    """A last stage at full resolution that also sees the image itself.

    With ``stem_stride`` > 1 every level works at ``1/stem_stride`` or coarser, and the head
    only spreads each cell's features over its ``stride x stride`` pixels: where exactly a
    one-pixel membrane runs inside a cell must already be encoded in the cell's channels. Here
    the head returns ``width`` channels per pixel instead of logits; a concatenated skip from
    the input (U-Net's level 0 with no encoder block, so nearly free) adds the raw intensities,
    and a 3x3 and a 1x1 convolution at full resolution produce the logits.
    """

    def __init__(self, width: int, image_channels: int, out_channels: int, act: str) -> None:
        super().__init__()
        wide = width * act_factor(act)
        self.act_in = make_act(act)
        self.skip = SkipMerge("concat", wide, image_channels)
        self.conv = reads_crelu(nn.Conv2d(self.skip.out_channels, width, 3, padding=1), crelu_map(wide, act))
        self.act = make_act(act)
        self.out = reads_crelu(nn.Conv2d(wide, out_channels, 1), crelu_map(wide, act))

    def forward(self, features: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        return self.out(self.act(self.conv(self.skip(self.act_in(features), image))))


class UNet(nn.Module):
    """2D U-Net with configurable long skips and encoder blocks (Ronneberger et al. 2015; the
    skip ablation follows Drozdzal et al. 2016).

    The arguments are the keys of the config's ``model`` section (:class:`unetseg.config.model.UNetConfig`), checked
    by the same rules (:func:`unetseg.config.rules.check_unet`); docs/model.md says what each
    does. Levels count from full resolution (level 0) to the bottleneck; ``skips`` is one mode
    or one per level, level 0 first. Any input size works: it is padded to the network's
    multiple and the logits are cropped back.

    Example:
        >>> net = UNet(1, 1, depth=4, base_width=8, skips=["concat", "add", "none"])
        >>> net(torch.zeros(1, 1, 333, 500)).shape
        torch.Size([1, 1, 333, 500])
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        depth: int = 5,
        base_width: int = 64,
        width_growth: float = 2.0,
        max_width: int | None = None,
        encoder: str = "plain",
        encoder_weights: str | None = None,
        blocks_per_level: int = 1,
        decoder_block: str = "plain",
        decoder_widths: list[int] | None = None,
        skips: str | list[str] = "concat",
        norm: str = "batch",
        act: str = "relu",
        downsample: str = "maxpool",
        upsample: str = "transpose",
        dropout: float = 0.0,
        shortcut: str = "projection",
        shortcut_downsample: str = "stride",
        stochastic_depth: float = 0.0,
        zero_init_residual: bool = True,
        init: str = "default",
        stem_stride: int = 1,
        head: str = "transpose",
        refine_width: int = 0,
        deep_supervision: int = 0,
    ) -> None:
        super().__init__()
        args = dict(locals())  # every option by name, for the shared rules and the builders below
        check_unet(**{key: args[key] for key in RULE_KEYS})
        self.stem = nn.PixelUnshuffle(stem_stride) if stem_stride > 1 else nn.Identity()
        self.encoder = _build_encoder(args)
        self.decoder = _build_decoder(args, self.encoder)
        self.head = _head(self.decoder.out_channels, refine_width or out_channels, stem_stride, head)
        reads_crelu(self.head[0] if isinstance(self.head, nn.Sequential) else self.head, self.decoder.crelu_output)
        self.refine = FullResolutionRefinement(refine_width, in_channels, out_channels, act) if refine_width else None
        self.aux_heads = nn.ModuleList(
            nn.Conv2d(self.decoder.widths[level], out_channels, 1) for level in range(1, deep_supervision + 1)
        )
        if init == "looks_linear":
            looks_linear_(self.head)
            if self.refine is not None:
                looks_linear_(self.refine)
        self.multiple = self.encoder.reduction * stem_stride

    @property
    def skip_modes(self) -> list[str]:
        return [merge.mode for merge in self.decoder.skips]

    def forward(self, x: torch.Tensor, deep_supervision: bool = False) -> torch.Tensor | list[torch.Tensor]:
        """Logits ``(B, out_channels, H, W)``; with ``deep_supervision=True``, a list of them:
        the main logits first, then one per auxiliary head from decoder level 1 down."""
        h, w = x.shape[-2:]
        x = pad_to_multiple(x, self.multiple)
        if deep_supervision and not self.aux_heads:
            raise ValueError("this UNet has no deep-supervision heads: build it with deep_supervision >= 1")
        levels = self.decoder.levels(self.encoder(self.stem(x)), 1 + len(self.aux_heads) if deep_supervision else 1)
        out = self.head(levels[0])
        if self.refine is not None:
            out = self.refine(out, x)
        if not deep_supervision:
            return out[..., :h, :w]
        aux = [
            F.interpolate(head(levels[i + 1]), size=x.shape[-2:], mode="bilinear")
            for i, head in enumerate(self.aux_heads)
        ]
        return [logits[..., :h, :w] for logits in (out, *aux)]
