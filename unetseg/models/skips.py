"""The one place where a long (encoder -> decoder) skip connection is merged.

Each decoder level owns one :class:`SkipMerge`. It receives the upsampled decoder tensor and
the encoder feature of the same resolution and returns what the level's conv block sees:

- ``concat``: ``cat([up, skip])`` (Ronneberger et al. 2015); the block sees
  ``up + skip`` channels.
- ``add``: ``up + proj(skip)`` with a 1x1 projection only when the widths differ
  (as in LinkNet / FCN-style summation); the block sees ``up`` channels.
- ``none``: the encoder feature is ignored; the block sees ``up`` channels.

``out_channels`` is computed here once, so switching a level's mode changes the decoder's
widths (and parameter count), not just which tensor is dropped.
"""

from __future__ import annotations

import difflib

import torch
from torch import nn

from unetseg.config import SKIP_MODES


class SkipMerge(nn.Module):
    """Merge an encoder feature into the decoder at one level."""

    def __init__(self, mode: str, up_channels: int, skip_channels: int) -> None:
        super().__init__()
        if mode not in SKIP_MODES:
            hint = difflib.get_close_matches(mode, SKIP_MODES, n=1)
            raise ValueError(
                f"unknown skip mode {mode!r}; choose from {', '.join(SKIP_MODES)}"
                + (f" (did you mean {hint[0]!r}?)" if hint else "")
            )
        self.mode = mode
        self.proj: nn.Module | None = None
        if mode == "add" and skip_channels != up_channels:
            self.proj = nn.Conv2d(skip_channels, up_channels, kernel_size=1, bias=False)
        self.out_channels = up_channels + skip_channels if mode == "concat" else up_channels

    @property
    def uses_skip(self) -> bool:
        return self.mode != "none"

    def forward(self, up: torch.Tensor, skip: torch.Tensor | None) -> torch.Tensor:
        if self.mode == "none":
            return up
        if skip is None:
            raise ValueError(f"skip mode {self.mode!r} needs the encoder feature, got None")
        if self.mode == "concat":
            return torch.cat([up, skip], dim=1)
        return up + (self.proj(skip) if self.proj is not None else skip)

    def extra_repr(self) -> str:
        return f"mode={self.mode!r}, out_channels={self.out_channels}"
