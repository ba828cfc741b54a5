"""The one place where a long (encoder -> decoder) skip connection is merged.

Each decoder level owns one :class:`SkipMerge`. It receives the upsampled decoder tensor and
the encoder feature of the same resolution and returns what the level's conv block sees:

- ``concat``: ``cat([up, skip])`` (Ronneberger et al. 2015); the block sees
  ``up + skip`` channels.
- ``add``: ``up + proj(skip)`` with a 1x1 projection only when the widths differ
  (as in LinkNet / FCN-style summation); the block sees ``up`` channels.
- ``none``: the encoder feature is ignored; the block sees ``up`` channels.
- ``gated``: ``cat([up, sigmoid(g) * skip])`` with a learnable gate ``g`` per channel that
  starts open (sigmoid(4) = 0.98); the trained gates show which levels the network keeps.
- ``attention``: ``cat([up, alpha * skip])`` with the additive attention gate of Oktay et al.
  2018 ("Attention U-Net"): ``alpha = sigmoid(psi(relu(W_x skip + W_g up)))``, one weight per
  pixel, gated by the decoder's own (upsampled, coarser) signal.

``out_channels`` is computed here once, so switching a level's mode changes the decoder's
widths (and parameter count), not just which tensor is dropped.

A trained model's skips can be knocked out at test time without retraining:
``merge.knockout = "zero"`` feeds zeros instead of the encoder feature, ``"mean"`` its
per-channel spatial mean (keeping its overall level but removing all spatial detail).
"""

from __future__ import annotations

import difflib

import torch
from torch import nn

from unetseg.config import SKIP_MODES

GATE_INIT = 4.0  # sigmoid(4) ~ 0.98: gates start open, training decides what to close
KNOCKOUTS = (None, "zero", "mean")


class AttentionGate(nn.Module):
    """Additive attention (Oktay et al. 2018): a spatial weight in (0, 1) for the skip."""

    def __init__(self, up_channels: int, skip_channels: int) -> None:
        super().__init__()
        inter = max(skip_channels // 2, 1)
        self.w_skip = nn.Conv2d(skip_channels, inter, kernel_size=1, bias=False)
        self.w_up = nn.Conv2d(up_channels, inter, kernel_size=1)
        self.psi = nn.Conv2d(inter, 1, kernel_size=1)

    def forward(self, up: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.psi(torch.relu(self.w_skip(skip) + self.w_up(up))))


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
        self.knockout: str | None = None
        self.proj: nn.Module | None = None
        if mode == "add" and skip_channels != up_channels:
            self.proj = nn.Conv2d(skip_channels, up_channels, kernel_size=1, bias=False)
        self.gate = nn.Parameter(torch.full((skip_channels,), GATE_INIT)) if mode == "gated" else None
        self.attention = AttentionGate(up_channels, skip_channels) if mode == "attention" else None
        self.out_channels = up_channels if mode in ("add", "none") else up_channels + skip_channels

    @property
    def uses_skip(self) -> bool:
        return self.mode != "none"

    def gate_values(self) -> torch.Tensor | None:
        """The per-channel gate in (0, 1) of a ``gated`` skip (None for other modes)."""
        return None if self.gate is None else torch.sigmoid(self.gate.detach())

    def _knocked_out(self, skip: torch.Tensor) -> torch.Tensor:
        if self.knockout == "zero":
            return torch.zeros_like(skip)
        if self.knockout == "mean":
            return skip.mean(dim=(2, 3), keepdim=True).expand_as(skip)
        if self.knockout is not None:
            raise ValueError(f"knockout must be one of {KNOCKOUTS}, got {self.knockout!r}")
        return skip

    def forward(self, up: torch.Tensor, skip: torch.Tensor | None) -> torch.Tensor:
        if self.mode == "none":
            return up
        if skip is None:
            raise ValueError(f"skip mode {self.mode!r} needs the encoder feature, got None")
        skip = self._knocked_out(skip)
        if self.mode == "add":
            return up + (self.proj(skip) if self.proj is not None else skip)
        if self.gate is not None:
            skip = skip * torch.sigmoid(self.gate).view(1, -1, 1, 1)
        elif self.attention is not None:
            skip = skip * self.attention(up, skip)
        return torch.cat([up, skip], dim=1)

    def extra_repr(self) -> str:
        return f"mode={self.mode!r}, out_channels={self.out_channels}"
