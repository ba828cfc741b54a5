"""Convolution blocks: the short (in-block) skips live here, the long ones in :mod:`.skips`.

A *stage* of the encoder or decoder is ``n`` blocks; the first one changes width (and, with
``stride=2``, resolution), the others keep both. Five families:

- ``plain``: conv-norm-act twice, as in Ronneberger et al. 2015 (U-Net).
- ``residual``: the same two convolutions plus a shortcut (He et al. 2015, "Deep Residual
  Learning"), ``act(branch + shortcut)``; the last norm's weight can start at zero so a
  deep stack starts as identity.
- ``preact``: norm-act-conv twice with a clean identity path (He et al. 2016, "Identity
  Mappings in Deep Residual Networks").
- ``highway``: ``T(x) H(x) + (1 - T(x)) x`` with a per-channel, per-pixel transform gate
  ``T`` whose bias starts negative, so the block starts close to identity (Srivastava et al.
  2015, "Training Very Deep Networks").
- ``dense``: every layer reads the concatenation of the block input and all earlier layers'
  outputs; a 1x1 transition returns to the level's width (Huang et al. 2017, "Densely
  Connected Convolutional Networks").

The shortcut options (zero padding or projection; stride or average pooling) are in
:mod:`.shortcuts`, the norm/activation factories and the looks-linear init in
:mod:`.layers`. Every block takes the same arguments; ``drop_path`` is stochastic depth on
the residual branch (residual-type blocks only), ``crelu_in`` names the input channels that
come from a CReLU (see :mod:`.layers`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from unetseg.config.base import did_you_mean
from unetseg.models.layers import (
    ConvNormAct,
    Slice,
    act_factor,
    conv3x3,
    crelu_map,
    make_act,
    make_norm,
    reads_crelu,
    width_before_act,
)
from unetseg.models.shortcuts import SHORTCUT_DOWNSAMPLES, SHORTCUTS, DropPath, make_resample, make_shortcut

HIGHWAY_GATE_BIAS = -3.0  # sigmoid(-3) ~ 0.05: 95% of the input is carried at init
DENSE_LAYERS = 2  # conv layers per dense block (plus the 1x1 transition)


@dataclass(frozen=True)
class BlockOptions:
    """Options shared by the blocks of a network (README, "The model").

    ``shortcut``: ``projection`` (He et al. option B) or ``zero_pad`` (option A) where the
    width changes; ``shortcut_downsample``: ``stride`` or ``avgpool`` where the resolution
    halves (also how a dense block's input joins its concatenation); ``zero_init_residual``:
    the last norm of a residual block's branch starts at zero.
    """

    shortcut: str = "projection"
    shortcut_downsample: str = "stride"
    zero_init_residual: bool = True

    def __post_init__(self) -> None:
        if self.shortcut not in SHORTCUTS:
            raise ValueError(f"unknown shortcut {self.shortcut!r}; choose from {', '.join(SHORTCUTS)}")
        if self.shortcut_downsample not in SHORTCUT_DOWNSAMPLES:
            raise ValueError(
                f"unknown shortcut_downsample {self.shortcut_downsample!r}; "
                f"choose from {', '.join(SHORTCUT_DOWNSAMPLES)}"
            )


DEFAULT_OPTIONS = BlockOptions()


def _no_drop_path(kind: str, drop_path: float) -> None:
    if drop_path:
        raise ValueError(f"stochastic depth needs a residual branch to drop; {kind} blocks have none")


class PlainBlock(nn.Module):
    """conv-norm-act x2 without shortcut (the original U-Net block)."""

    ENDS_WITH_ACT, PRE_ACTIVATED, DROPPABLE = True, False, False

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        norm: str,
        act: str,
        stride: int = 1,
        *,
        options: BlockOptions = DEFAULT_OPTIONS,
        drop_path: float = 0.0,
        crelu_in: Slice | None = None,
    ) -> None:
        super().__init__()
        _no_drop_path("plain", drop_path)
        self.conv1 = ConvNormAct(in_ch, out_ch, norm, act, stride)
        self.conv2 = ConvNormAct(out_ch, out_ch, norm, act)
        reads_crelu(self.conv1[0], crelu_in)
        reads_crelu(self.conv2[0], crelu_map(out_ch, act))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(self.conv1(x))


class ResidualBlock(nn.Module):
    """Basic residual block: act(norm(conv(act(norm(conv(x))))) + shortcut(x)).

    Under CReLU the sum (branch and shortcut) has half the width and the final CReLU
    restores it; the identity shortcut then reads the previous block's sum back exactly.
    """

    ENDS_WITH_ACT, PRE_ACTIVATED, DROPPABLE = True, False, True

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        norm: str,
        act: str,
        stride: int = 1,
        *,
        options: BlockOptions = DEFAULT_OPTIONS,
        drop_path: float = 0.0,
        crelu_in: Slice | None = None,
    ) -> None:
        super().__init__()
        inner = width_before_act(out_ch, act)
        self.conv1 = ConvNormAct(in_ch, out_ch, norm, act, stride)
        reads_crelu(self.conv1[0], crelu_in)
        self.conv2 = reads_crelu(conv3x3(out_ch, inner, bias=norm == "none"), crelu_map(out_ch, act))
        self.norm2 = make_norm(norm, inner)
        whole = act == "crelu" and crelu_in == (0, in_ch)
        self.shortcut = make_shortcut(
            in_ch,
            inner,
            stride,
            options.shortcut,
            options.shortcut_downsample,
            norm,
            demirror=whole,
            crelu_in=(crelu_in,),
        )
        self.act = make_act(act)
        self.drop_path = DropPath(drop_path)
        if options.zero_init_residual and isinstance(self.norm2, (nn.BatchNorm2d, nn.GroupNorm, nn.InstanceNorm2d)):
            nn.init.zeros_(self.norm2.weight)  # start as the shortcut alone (timm's zero_init_last)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.drop_path(self.norm2(self.conv2(self.conv1(x)))) + self.shortcut(x))


class PreActBlock(nn.Module):
    """Pre-activation residual block: x + conv(act(norm(conv(act(norm(x)))))).

    Its branch ends with a convolution, not a norm, so ``zero_init_residual`` does not apply.
    """

    ENDS_WITH_ACT, PRE_ACTIVATED, DROPPABLE = False, True, True

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        norm: str,
        act: str,
        stride: int = 1,
        *,
        options: BlockOptions = DEFAULT_OPTIONS,
        drop_path: float = 0.0,
        crelu_in: Slice | None = None,
    ) -> None:
        super().__init__()
        f = act_factor(act)
        self.norm1 = make_norm(norm, in_ch)
        # Not in place: with norm 'none' act1 sees the block's input itself, which is also the
        # identity shortcut and the encoder feature that the long skip hands to the decoder.
        self.act1 = make_act(act, inplace=False)
        self.conv1 = reads_crelu(conv3x3(in_ch * f, out_ch, stride), crelu_in, crelu_map(in_ch * f, act))
        self.norm2 = make_norm(norm, out_ch)
        self.act2 = make_act(act)
        self.conv2 = reads_crelu(conv3x3(out_ch * f, out_ch), crelu_map(out_ch * f, act))
        # A projection sees the pre-activated input, as in He et al. 2016 (fig. 2 of v3); the
        # zero-padding shortcut keeps the raw input (no parameters, a clean identity).
        self.project = options.shortcut == "projection" and (in_ch != out_ch or stride != 1)
        if self.project:
            self.shortcut = make_shortcut(
                in_ch * f,
                out_ch,
                stride,
                "projection",
                options.shortcut_downsample,
                None,
                crelu_in=(crelu_in, crelu_map(in_ch * f, act)),
            )
        else:
            self.shortcut = make_shortcut(in_ch, out_ch, stride, "zero_pad", options.shortcut_downsample, None)
        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pre = self.act1(self.norm1(x))
        shortcut = self.shortcut(pre if self.project else x)
        return self.drop_path(self.conv2(self.act2(self.norm2(self.conv1(pre))))) + shortcut


class HighwayBlock(nn.Module):
    """Highway block: ``y = T H(x) + (1 - T) S(x)`` with ``T = sigmoid(W_T x + b_T)``.

    ``H`` is the plain block's conv-norm-act x2, ``S`` the shortcut (identity unless width or
    resolution change), ``W_T`` a 1x1 convolution and ``b_T`` a per-channel bias that starts
    at ``HIGHWAY_GATE_BIAS``. Computed as ``S + T (H - S)``: a closed gate returns ``S``
    exactly, and stochastic depth drops the term ``T (H - S)``.
    """

    ENDS_WITH_ACT, PRE_ACTIVATED, DROPPABLE = False, False, True

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        norm: str,
        act: str,
        stride: int = 1,
        *,
        options: BlockOptions = DEFAULT_OPTIONS,
        drop_path: float = 0.0,
        crelu_in: Slice | None = None,
    ) -> None:
        super().__init__()
        self.conv1 = ConvNormAct(in_ch, out_ch, norm, act, stride)
        self.conv2 = ConvNormAct(out_ch, out_ch, norm, act)
        reads_crelu(self.conv1[0], crelu_in)
        reads_crelu(self.conv2[0], crelu_map(out_ch, act))
        self.gate = nn.Conv2d(in_ch, out_ch, kernel_size=1, stride=stride, bias=False)
        self.gate_bias = nn.Parameter(torch.full((out_ch,), HIGHWAY_GATE_BIAS))
        self.shortcut = make_shortcut(
            in_ch, out_ch, stride, options.shortcut, options.shortcut_downsample, norm, crelu_in=(crelu_in,)
        )
        self.drop_path = DropPath(drop_path)

    def transform_gate(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.gate(x) + self.gate_bias.view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        carry = self.shortcut(x)
        return carry + self.drop_path(self.transform_gate(x) * (self.conv2(self.conv1(x)) - carry))


class DenseLayer(nn.Sequential):
    """norm-act-conv3x3 producing ``growth`` channels (DenseNet's composite function)."""

    def __init__(
        self, in_ch: int, growth: int, norm: str, act: str, stride: int = 1, crelu_in: Slice | None = None
    ) -> None:
        f = act_factor(act)
        conv = reads_crelu(conv3x3(in_ch * f, growth, stride), crelu_in, crelu_map(in_ch * f, act))
        super().__init__(make_norm(norm, in_ch), make_act(act, inplace=False), conv)


class DenseBlock(nn.Module):
    """``DENSE_LAYERS`` layers of growth ``out / 2``, each reading ``cat(x, y_1, ..., y_{k-1})``,
    then a norm-act-1x1 transition to ``out`` channels.

    With ``stride=2`` the first layer's convolution is strided and the block input joins the
    concatenation through the parameter-free ``shortcut_downsample``. Dense blocks take no
    stochastic depth: the transition mixes every channel, so no path of the block survives
    as an identity if the block were dropped.
    """

    ENDS_WITH_ACT, PRE_ACTIVATED, DROPPABLE = False, True, False

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        norm: str,
        act: str,
        stride: int = 1,
        *,
        options: BlockOptions = DEFAULT_OPTIONS,
        drop_path: float = 0.0,
        crelu_in: Slice | None = None,
    ) -> None:
        super().__init__()
        _no_drop_path("dense", drop_path)
        growth = max(1, out_ch // 2)
        self.input_down = make_resample(stride, options.shortcut_downsample)
        self.layers = nn.ModuleList(
            DenseLayer(in_ch + i * growth, growth, norm, act, stride if i == 0 else 1, crelu_in)
            for i in range(DENSE_LAYERS)
        )
        width = (in_ch + DENSE_LAYERS * growth) * act_factor(act)
        self.transition = nn.Sequential(
            make_norm(norm, in_ch + DENSE_LAYERS * growth),
            make_act(act),
            reads_crelu(nn.Conv2d(width, out_ch, kernel_size=1, bias=False), crelu_in, crelu_map(width, act)),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = [self.input_down(x)]
        for i, layer in enumerate(self.layers):
            features.append(layer(x if i == 0 else torch.cat(features, dim=1)))
        return self.transition(torch.cat(features, dim=1))


BLOCKS: dict[str, type[nn.Module]] = {
    "plain": PlainBlock,
    "residual": ResidualBlock,
    "preact": PreActBlock,
    "highway": HighwayBlock,
    "dense": DenseBlock,
}
RESIDUAL_TYPE = tuple(name for name, cls in BLOCKS.items() if cls.DROPPABLE)


def block_class(name: str) -> type[nn.Module]:
    """The block class for a name; a ValueError with a close match for a typo."""
    if name not in BLOCKS:
        raise ValueError(f"unknown block {name!r}; choose from {', '.join(BLOCKS)}" + did_you_mean(name, BLOCKS))
    return BLOCKS[name]


def crelu_output(block: str, act: str, width: int) -> Slice | None:
    """``(0, width)`` when a block of this type hands on a CReLU output (it ends with ``act``)."""
    return crelu_map(width, act) if block_class(block).ENDS_WITH_ACT else None


def make_stage(
    block: str,
    in_ch: int,
    out_ch: int,
    n_blocks: int,
    norm: str,
    act: str,
    stride: int = 1,
    *,
    options: BlockOptions = DEFAULT_OPTIONS,
    drop_paths: list[float] | None = None,
    crelu_in: Slice | None = None,
) -> nn.Sequential:
    """``n_blocks`` blocks of one type; only the first changes width and stride.

    ``drop_paths``: stochastic-depth probability of each block (default: none dropped);
    ``crelu_in``: input channels of the first block that come from a CReLU.
    """
    cls = block_class(block)
    drop_paths = list(drop_paths) if drop_paths is not None else [0.0] * n_blocks
    if len(drop_paths) != n_blocks:
        raise ValueError(f"need one drop probability per block: {n_blocks}, got {len(drop_paths)}")
    layers = []
    for j, p in enumerate(drop_paths):
        first = j == 0
        layers.append(
            cls(
                in_ch if first else out_ch,
                out_ch,
                norm,
                act,
                stride if first else 1,
                options=options,
                drop_path=p,
                crelu_in=crelu_in,
            )
        )
        crelu_in = crelu_output(block, act, out_ch)
    return nn.Sequential(*layers)
