"""The U-Net: wiring only (encoder -> decoder -> 1x1 head), with any input size."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from unetseg.models.blocks import BlockOptions
from unetseg.models.decoder import UNetDecoder
from unetseg.models.encoder import SmpEncoder, UNetEncoder
from unetseg.models.layers import act_factor, check_init, crelu_map, looks_linear_, make_act, reads_crelu
from unetseg.models.padding import pad_to_multiple
from unetseg.models.skips import SkipMerge


def level_widths(depth: int, base_width: int, growth: float, max_width: int | None = None) -> list[int]:
    """Width of every level: ``base_width * growth**i``, rounded, capped at ``max_width``."""
    widths = [max(1, round(base_width * growth**i)) for i in range(depth)]
    return [min(w, max_width) for w in widths] if max_width else widths


def _head(in_channels: int, out_channels: int, stride: int, kind: str) -> nn.Module:
    """Logits at full resolution from the last decoder level (at ``1/stride`` of it)."""
    if kind not in ("transpose", "shuffle"):
        raise ValueError(f"head must be 'transpose' or 'shuffle', got {kind!r}")
    if stride == 1:
        return nn.Conv2d(in_channels, out_channels, kernel_size=1)
    if kind == "transpose":
        return nn.ConvTranspose2d(in_channels, out_channels, 2 * stride, stride, stride // 2)
    return nn.Sequential(nn.Conv2d(in_channels, out_channels * stride**2, 3, padding=1), nn.PixelShuffle(stride))


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
    """2D U-Net with configurable long skips and encoder blocks.

    Ronneberger et al. 2015, "U-Net: Convolutional Networks for Biomedical Image
    Segmentation"; the skip ablation follows Drozdzal et al. 2016, "The Importance of Skip
    Connections in Biomedical Image Segmentation".

    Args:
        in_channels: image channels.
        out_channels: logits (1 for a binary task, one per class otherwise).
        depth: resolution levels including the bottleneck (classic U-Net: 5).
        base_width, width_growth, max_width: encoder width of level i is
            ``min(base_width * width_growth**i, max_width)``.
        encoder: ``plain``, ``residual``, ``preact``, ``highway``, ``dense`` (see
            :mod:`unetseg.models.blocks`) or ``smp:<name>`` (any smp encoder).
        encoder_weights: pretrained weights for an smp encoder (None: random init).
        blocks_per_level: encoder blocks per level.
        decoder_block: block type of the decoder levels.
        decoder_widths: decoder width per level 0..depth-2 (default: the encoder's widths,
            or 16, 32, 64, ... for smp encoders).
        skips: one mode (``concat``/``add``/``none``) or a list, level 0 (full resolution) first.
        norm, act: normalisation and activation names.
        downsample: ``maxpool`` or ``conv`` (strided).
        upsample: ``transpose``, ``bilinear`` or ``nearest``.
        dropout: Dropout2d rate at the end of the contracting path.
        shortcut: where an encoder block changes width, ``projection`` (1x1 conv + norm,
            He et al. 2015 option B) or ``zero_pad`` (extra zero channels, option A).
        shortcut_downsample: where it halves the resolution, ``stride`` (keep every second
            pixel) or ``avgpool`` (2x2 average) before the projection or padding.
        stochastic_depth: drop probability of the deepest encoder block, linear in the block
            index (Huang et al. 2016); residual-type encoders only; never in evaluation.
        zero_init_residual: residual blocks start with the last norm of their branch at zero.
        stem_stride: 1 (level 0 at full resolution, as in the U-Net paper), 2 or 4: the image
            enters as ``stem_stride**2`` channels at ``1/stem_stride`` resolution (space to
            depth, lossless) and the head is a transposed convolution of stride
            ``stem_stride`` whose kernels (``2 * stem_stride`` wide) overlap, so neighbouring
            output pixels share evidence and no block pattern appears. On a CPU this is the
            lever that matters: a full-resolution level costs as much as all the others
            together, with too few channels to keep the matrix units busy.
        head: with ``stem_stride`` > 1, how the logits return to full resolution:
            ``transpose`` (the overlapping transposed convolution above) or ``shuffle`` (a 3x3
            convolution to ``stem_stride**2`` sub-pixels per class, then pixel shuffle; Shi et
            al. 2016). Both let a pixel see its neighbouring low-resolution cells (shuffle:
            3x3 of them, transpose: 2x2); shuffle is a dense convolution that the CPU's
            matrix kernels run about 1.7x as fast as a transposed convolution with one
            output channel per class.
        refine_width: with ``stem_stride`` > 1, 0 (the head returns the logits) or the width
            of a :class:`FullResolutionRefinement` after the head.
        deep_supervision: how many decoder levels below level 0 also get a 1x1 logit head
            (nnU-Net; Lee et al. 2015, "Deeply-Supervised Nets"). Their logits, upsampled
            bilinearly to full resolution, are returned beside the main ones when ``forward``
            is called with ``deep_supervision=True`` (training); a plain call returns the main
            logits only, so inference, export and the analyses never see them.
        init: ``default`` (PyTorch's) or ``looks_linear`` (with ``act='crelu'``, Balduzzi
            et al. 2017): the network starts as a linear map (exactly, with
            ``downsample='conv'`` and skips other than ``attention`` or an unprojected ``add``).

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
        check_init(init, act)
        if stem_stride not in (1, 2, 4):
            raise ValueError(f"stem_stride must be 1, 2 or 4, got {stem_stride}")
        self.stem = nn.PixelUnshuffle(stem_stride) if stem_stride > 1 else nn.Identity()
        in_channels *= stem_stride**2
        skip_modes = [skips] * (depth - 1) if isinstance(skips, str) else list(skips)
        options = BlockOptions(shortcut, shortcut_downsample, zero_init_residual)
        if encoder.startswith("smp:"):
            if init != "default" or stochastic_depth or stem_stride > 1:
                raise ValueError("init, stochastic_depth and stem_stride apply to unetseg's own encoders, not to smp: ones")
            self.encoder: nn.Module = SmpEncoder(encoder[4:], in_channels, depth, encoder_weights, dropout)
            default_decoder = [16 * 2**i for i in range(depth - 1)]
        else:
            widths = level_widths(depth, base_width, width_growth, max_width)
            self.encoder = UNetEncoder(
                in_channels, widths, encoder, blocks_per_level, norm, act, downsample, dropout,
                options=options, stochastic_depth=stochastic_depth, init=init,
            )
            default_decoder = widths[:-1]
        self.decoder = UNetDecoder(
            self.encoder.out_channels, decoder_widths or default_decoder, skip_modes, decoder_block, norm, act,
            upsample, options=options, encoder_crelu=self.encoder.crelu_features, init=init,
        )
        if refine_width and stem_stride == 1:
            raise ValueError("refine_width needs stem_stride 2 or 4: with stem_stride 1 the last level is at full resolution")
        self.head = _head(self.decoder.out_channels, refine_width or out_channels, stem_stride, head)
        reads_crelu(self.head[0] if isinstance(self.head, nn.Sequential) else self.head, self.decoder.crelu_output)
        self.refine = FullResolutionRefinement(refine_width, in_channels // stem_stride**2, out_channels, act) if refine_width else None
        if not 0 <= deep_supervision <= depth - 2:
            raise ValueError(f"deep_supervision must be 0..{depth - 2} (decoder levels below level 0), got {deep_supervision}")
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
        aux = [F.interpolate(head(levels[i + 1]), size=x.shape[-2:], mode="bilinear") for i, head in enumerate(self.aux_heads)]
        return [logits[..., :h, :w] for logits in (out, *aux)]
