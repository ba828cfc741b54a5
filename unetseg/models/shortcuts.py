"""Short skips: the path that carries a block's input around its branch, and stochastic depth.

Where a block keeps width and resolution its shortcut is the identity. Otherwise:

- width: ``zero_pad`` appends zero channels (He et al. 2015, "Deep Residual Learning",
  option A: no parameters, the identity on the old channels) or ``projection`` maps the
  input with a 1x1 convolution and a norm (option B);
- resolution halving: ``stride`` keeps every second pixel (for a projection, a stride-2 1x1
  convolution, which is the same thing followed by the channel mix), ``avgpool`` averages
  2x2 windows first (the "ResNet-D" shortcut of He et al. 2019, "Bag of Tricks"), so no
  pixel is ignored.

Under CReLU a plain or residual block hands on ``[relu(s), relu(-s)]``; the identity of the
next residual block reads ``s`` back as ``relu(s) - relu(-s)`` (:class:`Demirror`, exact and
parameter-free), so the residual stream keeps its width and stays an identity path (across a
2x2 max pool between levels it reads ``relu(max s) - relu(-min s)`` instead).

:class:`DropPath` is stochastic depth (Huang et al. 2016, "Deep Networks with Stochastic
Depth") applied to a residual branch.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from unetseg.models.layers import Slice, make_norm, reads_crelu

SHORTCUTS = ("projection", "zero_pad")
SHORTCUT_DOWNSAMPLES = ("stride", "avgpool")


class Subsample(nn.Module):
    """Every ``stride``-th pixel in both directions (the parameter-free strided identity)."""

    def __init__(self, stride: int) -> None:
        super().__init__()
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[..., :: self.stride, :: self.stride]

    def extra_repr(self) -> str:
        return f"stride={self.stride}"


def make_resample(stride: int, kind: str) -> nn.Module:
    """Parameter-free down-sampling to the size of a stride-``stride`` 3x3 convolution's output
    (``ceil(n / stride)``, odd sizes included)."""
    if kind not in SHORTCUT_DOWNSAMPLES:
        raise ValueError(f"unknown shortcut_downsample {kind!r}; choose from {', '.join(SHORTCUT_DOWNSAMPLES)}")
    if stride == 1:
        return nn.Identity()
    if kind == "stride":
        return Subsample(stride)
    return nn.AvgPool2d(stride, ceil_mode=True)  # ceil: the partial last window averages what it covers


class ZeroPad(nn.Module):
    """He et al. 2015 option A: resample, then append ``out - in`` zero channels."""

    def __init__(self, in_ch: int, out_ch: int, stride: int = 1, downsample: str = "stride") -> None:
        super().__init__()
        if out_ch < in_ch:
            raise ValueError(
                f"a zero-padding shortcut cannot narrow {in_ch} channels to {out_ch}; use shortcut 'projection'"
            )
        self.resample = make_resample(stride, downsample)
        self.extra = out_ch - in_ch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.pad(self.resample(x), (0, 0, 0, 0, 0, self.extra))

    def extra_repr(self) -> str:
        return f"extra_channels={self.extra}"


class Demirror(nn.Module):
    """``[a, b] -> a - b`` over the two channel halves: recovers ``h`` from ``[relu(h), relu(-h)]``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        half = x.shape[1] // 2
        return x[:, :half] - x[:, half:]


def make_shortcut(
    in_ch: int,
    out_ch: int,
    stride: int = 1,
    kind: str = "projection",
    downsample: str = "stride",
    norm: str | None = "batch",
    demirror: bool = False,
    crelu_in: Sequence[Slice | None] = (),
) -> nn.Module:
    """The shortcut from ``in_ch`` channels to ``out_ch`` at ``1/stride`` resolution.

    ``norm=None`` gives a bare projection (no norm, no bias), as a pre-activation block uses.
    ``demirror``: the input is a whole CReLU output, read back at half width first.
    ``crelu_in``: input channels of a projection that come from a CReLU (see :func:`reads_crelu`).
    """
    if kind not in SHORTCUTS:
        raise ValueError(f"unknown shortcut {kind!r}; choose from {', '.join(SHORTCUTS)}")
    head: list[nn.Module] = []
    if demirror:
        head, in_ch, crelu_in = [Demirror()], in_ch // 2, ()
    if in_ch == out_ch and stride == 1:
        body: list[nn.Module] = []
    elif kind == "zero_pad":
        body = [ZeroPad(in_ch, out_ch, stride, downsample)]
    else:
        pool = [make_resample(stride, downsample)] if stride > 1 and downsample == "avgpool" else []
        conv = nn.Conv2d(in_ch, out_ch, kernel_size=1, stride=1 if pool else stride, bias=norm == "none")
        body = pool + [reads_crelu(conv, *crelu_in)] + ([make_norm(norm, out_ch)] if norm is not None else [])
    layers = head + body
    if not layers:
        return nn.Identity()
    return layers[0] if len(layers) == 1 else nn.Sequential(*layers)


class DropPath(nn.Module):
    """Stochastic depth on a residual branch: in training each sample's branch is dropped
    (zeroed) with probability ``p`` and a kept one is scaled by ``1 / (1 - p)``; in evaluation
    every branch is kept and nothing is scaled, so the expected output is unchanged.

    Huang et al. 2016 drop a block for the whole mini-batch and scale at test time instead;
    here each sample draws its own depth (the "drop path" form of timm and ConvNeXt) and the
    branch is always computed, so every step runs the same graph (DDP ``static_graph``,
    ``torch.compile``) and evaluation is exactly the plain keep-all network.
    """

    def __init__(self, p: float = 0.0) -> None:
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"drop probability must lie in [0, 1), got {p}")
        self.p = p

    def forward(self, branch: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return branch
        keep = torch.rand((branch.shape[0],) + (1,) * (branch.dim() - 1), device=branch.device) >= self.p
        return branch * (keep.to(branch.dtype) / (1.0 - self.p))

    def extra_repr(self) -> str:
        return f"p={self.p:.4g}"
