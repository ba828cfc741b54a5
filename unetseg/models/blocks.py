"""Convolution blocks: the short (in-block) skips live here, the long ones in :mod:`.skips`.

A *stage* of the encoder or decoder is ``n`` blocks; the first one changes width (and, with
``stride=2``, resolution), the others keep both. Three families:

- ``plain``: conv-norm-act twice, as in Ronneberger et al. 2015 (U-Net).
- ``residual``: the same two convolutions plus an identity shortcut (He et al. 2015,
  "Deep Residual Learning"); a 1x1 projection only where width or stride change
  (option B), and the last norm's weight starts at zero so a deep stack starts as identity.
- ``preact``: norm-act-conv twice with a clean identity path (He et al. 2016,
  "Identity Mappings in Deep Residual Networks").
"""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch import nn

_ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "relu": lambda: nn.ReLU(inplace=True),
    "leaky_relu": lambda: nn.LeakyReLU(0.01, inplace=True),
    "gelu": nn.GELU,
    "silu": lambda: nn.SiLU(inplace=True),
    "elu": lambda: nn.ELU(inplace=True),
    "prelu": nn.PReLU,
}


def make_act(name: str) -> nn.Module:
    """Activation by name (config values are validated, this guards direct API use)."""
    if name not in _ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; choose from {', '.join(_ACTIVATIONS)}")
    return _ACTIVATIONS[name]()


def make_norm(name: str, channels: int) -> nn.Module:
    """Normalisation by name; group norm uses up to 32 groups that divide ``channels``."""
    if name == "batch":
        return nn.BatchNorm2d(channels)
    if name == "instance":
        # affine=True: the block's zero-init of the last norm needs a weight to set.
        return nn.InstanceNorm2d(channels, affine=True)
    if name == "group":
        return nn.GroupNorm(math.gcd(32, channels), channels)
    if name == "none":
        return nn.Identity()
    raise ValueError(f"unknown normalisation {name!r}; choose from batch, instance, group, none")


def conv3x3(in_ch: int, out_ch: int, stride: int = 1, bias: bool = False) -> nn.Conv2d:
    return nn.Conv2d(in_ch, out_ch, kernel_size=3, stride=stride, padding=1, bias=bias)


class ConvNormAct(nn.Sequential):
    """3x3 convolution, normalisation, activation (bias only when there is no norm)."""

    def __init__(self, in_ch: int, out_ch: int, norm: str, act: str, stride: int = 1) -> None:
        super().__init__(conv3x3(in_ch, out_ch, stride, bias=norm == "none"), make_norm(norm, out_ch), make_act(act))


class PlainBlock(nn.Module):
    """conv-norm-act x2 without shortcut (the original U-Net block)."""

    def __init__(self, in_ch: int, out_ch: int, norm: str, act: str, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = ConvNormAct(in_ch, out_ch, norm, act, stride)
        self.conv2 = ConvNormAct(out_ch, out_ch, norm, act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(self.conv1(x))


def _shortcut(in_ch: int, out_ch: int, stride: int, norm: str) -> nn.Module:
    """Identity where shapes allow it, else a strided 1x1 projection (He et al. 2015, option B)."""
    if in_ch == out_ch and stride == 1:
        return nn.Identity()
    return nn.Sequential(
        nn.Conv2d(in_ch, out_ch, kernel_size=1, stride=stride, bias=norm == "none"), make_norm(norm, out_ch)
    )


class ResidualBlock(nn.Module):
    """Basic residual block: act(norm(conv(act(norm(conv(x))))) + shortcut(x))."""

    def __init__(self, in_ch: int, out_ch: int, norm: str, act: str, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = ConvNormAct(in_ch, out_ch, norm, act, stride)
        self.conv2 = conv3x3(out_ch, out_ch, bias=norm == "none")
        self.norm2 = make_norm(norm, out_ch)
        self.shortcut = _shortcut(in_ch, out_ch, stride, norm)
        self.act = make_act(act)
        if isinstance(self.norm2, (nn.BatchNorm2d, nn.GroupNorm, nn.InstanceNorm2d)):
            nn.init.zeros_(self.norm2.weight)  # start as the shortcut alone (timm's zero_init_last)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.norm2(self.conv2(self.conv1(x))) + self.shortcut(x))


class PreActBlock(nn.Module):
    """Pre-activation residual block: x + conv(act(norm(conv(act(norm(x))))))."""

    def __init__(self, in_ch: int, out_ch: int, norm: str, act: str, stride: int = 1) -> None:
        super().__init__()
        self.norm1 = make_norm(norm, in_ch)
        self.act1 = make_act(act)
        if hasattr(self.act1, "inplace"):
            # With norm 'none' act1 sees the block's input itself: in place it would rectify the
            # identity shortcut and the encoder feature that the long skip hands to the decoder.
            self.act1.inplace = False
        self.conv1 = conv3x3(in_ch, out_ch, stride)
        self.norm2 = make_norm(norm, out_ch)
        self.act2 = make_act(act)
        self.conv2 = conv3x3(out_ch, out_ch)
        # The projection sees the pre-activated input, as in He et al. 2016 (fig. 2 of v3).
        self.shortcut = (
            nn.Identity()
            if in_ch == out_ch and stride == 1
            else nn.Conv2d(in_ch, out_ch, kernel_size=1, stride=stride, bias=False)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pre = self.act1(self.norm1(x))
        shortcut = x if isinstance(self.shortcut, nn.Identity) else self.shortcut(pre)
        return self.conv2(self.act2(self.norm2(self.conv1(pre)))) + shortcut


BLOCKS: dict[str, type[nn.Module]] = {"plain": PlainBlock, "residual": ResidualBlock, "preact": PreActBlock}


def make_stage(
    block: str, in_ch: int, out_ch: int, n_blocks: int, norm: str, act: str, stride: int = 1
) -> nn.Sequential:
    """``n_blocks`` blocks of one type; only the first changes width and stride."""
    if block not in BLOCKS:
        raise ValueError(f"unknown block {block!r}; choose from {', '.join(BLOCKS)}")
    cls = BLOCKS[block]
    layers = [cls(in_ch, out_ch, norm, act, stride)]
    layers += [cls(out_ch, out_ch, norm, act) for _ in range(n_blocks - 1)]
    return nn.Sequential(*layers)
