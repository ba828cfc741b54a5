"""Building pieces of the blocks: norm and activation factories, conv units, looks-linear init.

CReLU (Shang et al. 2016, "Understanding and Improving Convolutional Neural Networks via
Concatenated Rectified Linear Units") maps ``C`` channels to ``2C``: ``cat(relu(x), relu(-x))``.
Configured widths stay what they say: a unit that *ends* with a CReLU makes its convolution
produce half the width (:class:`ConvNormAct`), and a unit that *starts* with one (the
pre-activation blocks) lets its convolution read twice the width.

Looks-linear initialisation (Balduzzi et al. 2017, "The Shattered Gradients Problem: If
resnets are the answer, then what is the question?"): a convolution that reads a CReLU
output ``[relu(h), relu(-h)]`` gets weights ``[W, -W]`` on those channels, so it computes
``W relu(h) - W relu(-h) = W h``. Every CReLU is then transparent and a deep network starts
as a linear map, yet trains as a nonlinear one once the two halves drift apart. Which input
channels of a convolution come from a CReLU is recorded when the network is built
(:func:`reads_crelu`); :func:`looks_linear_` then initialises every convolution of a module.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

Slice = tuple[int, int]  # (first channel, number of channels)


class CReLU(nn.Module):
    """Concatenated ReLU: ``cat(relu(x), relu(-x))`` along channels (doubles the width)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([F.relu(x), F.relu(-x)], dim=1)


_ACTIVATIONS: dict[str, Callable[[bool], nn.Module]] = {
    "relu": lambda inplace: nn.ReLU(inplace=inplace),
    "leaky_relu": lambda inplace: nn.LeakyReLU(0.01, inplace=inplace),
    "gelu": lambda inplace: nn.GELU(),
    "silu": lambda inplace: nn.SiLU(inplace=inplace),
    "elu": lambda inplace: nn.ELU(inplace=inplace),
    "prelu": lambda inplace: nn.PReLU(),
    "crelu": lambda inplace: CReLU(),
}


def make_act(name: str, inplace: bool = True) -> nn.Module:
    """Activation by name (config values are validated, this guards direct API use).

    ``inplace=False`` where the activation may see a tensor someone else still holds (the
    input of a pre-activation unit is also the shortcut and, in the encoder, a long skip).
    """
    if name not in _ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; choose from {', '.join(_ACTIVATIONS)}")
    return _ACTIVATIONS[name](inplace)


def act_factor(name: str) -> int:
    """How many channels the activation returns per channel it reads (2 for CReLU)."""
    return 2 if name == "crelu" else 1


def width_before_act(width: int, act: str) -> int:
    """Channels a layer must produce so that ``act`` returns ``width`` of them."""
    factor = act_factor(act)
    if width % factor:
        raise ValueError(f"act {act!r} doubles the channels of the layer before it: width {width} must be even")
    return width // factor


def crelu_map(width: int, act: str) -> Slice | None:
    """``(0, width)`` when a ``width``-channel output of ``act`` is a CReLU output, else None."""
    return (0, width) if act == "crelu" else None


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
    """3x3 convolution, normalisation, activation (bias only when there is no norm).

    Returns ``out_ch`` channels for every activation: under CReLU the convolution and the
    norm work on ``out_ch / 2``.
    """

    def __init__(self, in_ch: int, out_ch: int, norm: str, act: str, stride: int = 1) -> None:
        inner = width_before_act(out_ch, act)
        super().__init__(conv3x3(in_ch, inner, stride, bias=norm == "none"), make_norm(norm, inner), make_act(act))


# --------------------------------------------------------------------------- looks-linear


def reads_crelu(conv: nn.Module, *channels: Slice | None) -> nn.Module:
    """Record that input ``channels`` (first, count) of ``conv`` come from a CReLU; returns ``conv``.

    Several slices are mirrored in the order given: a pre-activation unit whose input ``x``
    already holds a CReLU pair at ``(s, c)`` reads ``crelu(x)`` and names ``(s, c)`` (inside
    the ``relu(x)`` half), then ``(0, 2 * width)``. ``None`` entries are skipped. The record is
    a plain attribute (``conv.crelu_in``): it shapes the initialisation only and is not part
    of the state dict.
    """
    for item in channels:
        if item is None:
            continue
        start, count = item
        if count % 2 or start < 0 or start + count > conv.in_channels:
            raise ValueError(f"CReLU channels {item} do not fit the {conv.in_channels} inputs of {conv}")
        conv.crelu_in = getattr(conv, "crelu_in", ()) + (item,)
    return conv


def _looks_linear_conv(conv: nn.Conv2d | nn.ConvTranspose2d) -> None:
    dim = 0 if isinstance(conv, nn.ConvTranspose2d) else 1  # the input-channel axis of the weight
    pairs = getattr(conv, "crelu_in", ())
    taps = math.prod(conv.kernel_size)
    if isinstance(conv, nn.ConvTranspose2d):
        taps = max(1, taps // math.prod(conv.stride))  # weights that reach one output pixel
    # A mirrored pair is one input of the linear map; nested pairs lie inside an outer first half.
    fan_in = (conv.weight.shape[dim] - sum(count // 2 for _, count in pairs)) * taps
    with torch.no_grad():
        conv.weight.normal_(0.0, max(fan_in, 1) ** -0.5)  # gain 1: the network is linear at init
        for start, count in pairs:
            half = count // 2
            conv.weight.narrow(dim, start + half, half).copy_(-conv.weight.narrow(dim, start, half))
        if conv.bias is not None:
            conv.bias.zero_()


def looks_linear_(module: nn.Module) -> nn.Module:
    """Looks-linear initialisation of every convolution in ``module``, in place.

    Weights are drawn from N(0, 1/fan_in) (variance-preserving for a linear map; the two
    channels of a mirrored CReLU pair count once), the weights on the ``relu(-h)`` half of a
    CReLU input are set to minus those on the ``relu(h)`` half, and biases start at zero,
    so the map is linear rather than affine. Norms, gates and other parameters are kept.
    """
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            if m.groups != 1:
                raise ValueError(f"looks-linear init supports ungrouped convolutions only, got {m}")
            _looks_linear_conv(m)
    return module
