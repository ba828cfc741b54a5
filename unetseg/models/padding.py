"""Any input size: pad to the network's multiple, crop the output back.

Padding goes to the bottom and right edges only, so cropping is a plain slice and the
top-left pixels stay aligned with the input. Reflection keeps membrane-like texture going
at the border; images smaller than the pad fall back to edge replication.

An input no larger than one multiple each way (a 1x1 or 2x2 image, a 64x64 crop for a
network whose multiple is 64) would reach the deepest level as a single pixel, which
instance norm (and batch norm in training) cannot normalise: "Expected more than 1 spatial
element". Such inputs are padded to two multiples each way, so the deepest level is 2x2.

While the model is traced or exported (TorchScript, ONNX, ``torch.export``) the padding is
branch-free: Python ``if``s on the traced size would be frozen at the example's size, so an
ONNX model exported at 256x256 would skip the padding at 333x500 and fail inside the decoder.
An exported graph therefore always pads by reflection (a zero-width pad is a no-op), which
needs height and width of at least the network's multiple.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _exporting() -> bool:
    is_exporting = getattr(torch.compiler, "is_exporting", lambda: False)
    return torch.jit.is_tracing() or is_exporting()


def padded_size(h: int, w: int, multiple: int) -> tuple[int, int]:
    """The (height, width) a network with this multiple runs an ``h`` x ``w`` input at."""
    ph, pw = h + (-h) % multiple, w + (-w) % multiple
    if ph == pw == multiple > 1:  # one pixel at the deepest level: give it 2x2
        return 2 * multiple, 2 * multiple
    return ph, pw


def pad_to_multiple(x: torch.Tensor, multiple: int) -> torch.Tensor:
    """Pad the last two dims of an NCHW tensor up to a multiple of ``multiple`` (two multiples
    for an input of at most one multiple each way, see :func:`padded_size`)."""
    h, w = x.shape[-2:]
    if _exporting():
        return F.pad(x, (0, (-w) % multiple, 0, (-h) % multiple), mode="reflect")
    th, tw = padded_size(h, w, multiple)
    ph, pw = th - h, tw - w
    if ph == 0 and pw == 0:
        return x
    mode = "reflect" if ph < h and pw < w else "replicate"
    return F.pad(x, (0, pw, 0, ph), mode=mode)


class SizeAgnostic(nn.Module):
    """Wrap a network that needs sizes divisible by ``multiple`` so any size works."""

    def __init__(self, net: nn.Module, multiple: int) -> None:
        super().__init__()
        self.net = net
        self.multiple = multiple

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        return self.net(pad_to_multiple(x, self.multiple))[..., :h, :w]
