"""Exponential moving average (EMA) of the weights, the copy that validation, checkpoints and
inference use when ``train.ema`` is set.

Why: on ISBI's 25 training slices the validation Dice of one run moves by ±0.005 from one
check to the next while the training loss barely changes; averaging the weights over the last
few hundred steps lands between those points (Polyak averaging; SWA, Izmailov et al. 2018)
at the cost of one fused lerp per step. The average lives in ``torch.optim.swa_utils``'s
``AveragedModel``; only the decay rule is ours: timm's warm-up ``min(decay, (1 + n) / (10 + n))``
so that the random initial weights do not linger in the average of a short run.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel


def ema_decay(decay: float, updates: int) -> float:
    """Decay of update number ``updates`` (0-based): low at first, ``decay`` after a few hundred."""
    return min(decay, (1.0 + updates) / (10.0 + updates))


class WeightAverage:
    """EMA of a model's parameters and buffers (instance or batch norm statistics alike).

    ``module`` is the averaged copy, in the model's class, for validation and saving.
    """

    def __init__(self, model: nn.Module, decay: float) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"EMA decay must lie in (0, 1), got {decay}")
        self.decay = decay

        @torch.no_grad()
        def update(averaged: list[torch.Tensor], current: list[torch.Tensor], num_averaged: torch.Tensor) -> None:
            weight = 1.0 - ema_decay(decay, int(num_averaged))
            floats = [(a, c) for a, c in zip(averaged, current) if a.is_floating_point()]
            if floats:
                torch._foreach_lerp_([a for a, _ in floats], [c for _, c in floats], weight)
            for a, c in zip(averaged, current):  # integer buffers (num_batches_tracked): the latest
                if not a.is_floating_point():
                    a.copy_(c)

        self.averaged = AveragedModel(model, multi_avg_fn=update, use_buffers=True)
        self.averaged.requires_grad_(False)

    @property
    def module(self) -> nn.Module:
        return self.averaged.module

    @property
    def updates(self) -> int:
        return int(self.averaged.n_averaged)

    def update(self, model: nn.Module) -> None:
        """Fold the model's current weights in (the first call copies them)."""
        self.averaged.update_parameters(model)

    def counters(self) -> dict[str, Any]:
        """What a checkpoint needs beside the averaged weights (saved as its ``model``)."""
        return {"decay": self.decay, "updates": self.updates}

    def restore(self, averaged_weights: dict[str, torch.Tensor], counters: dict[str, Any]) -> None:
        self.module.load_state_dict(averaged_weights)
        self.averaged.n_averaged.fill_(int(counters["updates"]))
