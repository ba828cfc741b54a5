"""The one place where a long (encoder -> decoder) skip connection is merged.

Each decoder level owns one :class:`SkipMerge`. It receives the upsampled decoder tensor and
the encoder feature of the same resolution and returns what the level's conv block sees:

- ``concat``: ``cat([up, skip])`` (Ronneberger et al. 2015); the block sees
  ``up + skip`` channels.
- ``add``: ``up + proj(skip)`` with a 1x1 projection only when the widths differ
  (as in LinkNet / FCN-style summation); the block sees ``up`` channels.
- ``none``: the encoder feature is ignored; the block sees ``up`` channels.
- ``gated``: ``cat([up, 2 sigmoid(10 g) * skip])`` with a learnable ``g`` per channel that
  starts at 0: the gate is 1 (the level starts as plain ``concat``) where the sigmoid is
  steepest, and can close (towards 0) or amplify (towards 2). The trained gates show which
  levels the network keeps; see ``GATE_SLOPE`` for why the 10.
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

import torch
from torch import nn

from unetseg.config import SKIP_MODES
from unetseg.config.base import did_you_mean

# Gate = GATE_SCALE * sigmoid(GATE_SLOPE * g), g starting at 0: open (gate 1) at the sigmoid's
# steepest point. The earlier sigmoid(4) = 0.98 start sat in the flat tail and gates never moved.
# The slope matters under Adam, which moves every parameter by about lr per step whatever its
# gradient: a unit-slope logit needs ~1/lr steps to cross the sigmoid, while the convolution
# reading the skip can silence it sooner through its many weights. With slope 10 a gate on a
# noise-only skip closes within ~100 steps (tests/test_skips.py); so does a 10x learning rate on
# the gates, which this is, without a parameter group of its own.
GATE_SCALE = 2.0
GATE_SLOPE = 10.0
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
            raise ValueError(
                f"unknown skip mode {mode!r}; choose from {', '.join(SKIP_MODES)}" + did_you_mean(mode, SKIP_MODES)
            )
        self.mode = mode
        self.knockout: str | None = None
        self.proj: nn.Module | None = None
        if mode == "add" and skip_channels != up_channels:
            self.proj = nn.Conv2d(skip_channels, up_channels, kernel_size=1, bias=False)
        self.gate_logit = nn.Parameter(torch.zeros(skip_channels)) if mode == "gated" else None
        self.attention = AttentionGate(up_channels, skip_channels) if mode == "attention" else None
        self.out_channels = up_channels if mode in ("add", "none") else up_channels + skip_channels

    @property
    def uses_skip(self) -> bool:
        return self.mode != "none"

    def gate(self) -> torch.Tensor:
        """The per-channel multiplier in (0, GATE_SCALE) of a ``gated`` skip."""
        assert self.gate_logit is not None
        return GATE_SCALE * torch.sigmoid(GATE_SLOPE * self.gate_logit)

    def gate_values(self) -> torch.Tensor | None:
        """The per-channel gate of a ``gated`` skip, detached (None for other modes)."""
        return None if self.gate_logit is None else self.gate().detach()

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:
        # Checkpoints written before the reparametrisation hold ``gate`` (gate = sigmoid(gate));
        # convert it to the logit giving the same multiplier, so they predict as before.
        old = state_dict.pop(prefix + "gate", None)
        if old is not None and self.gate_logit is not None:
            value = torch.sigmoid(old.float()) / GATE_SCALE
            state_dict[prefix + "gate_logit"] = (torch.logit(value) / GATE_SLOPE).to(old.dtype)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

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
        if self.gate_logit is not None:
            skip = skip * self.gate().view(1, -1, 1, 1)
        elif self.attention is not None:
            skip = skip * self.attention(up, skip)
        return torch.cat([up, skip], dim=1)

    def extra_repr(self) -> str:
        return f"mode={self.mode!r}, out_channels={self.out_channels}"
