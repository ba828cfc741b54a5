"""Per-level training statistics: gradient and update magnitudes, and skip gate values.

The skip literature argues with them (vanishing gradients in deep plain encoders; gates
showing which skips a network keeps); logging them per epoch lets the reports measure it.
Gradients and updates are measured when ``train.level_stats`` is on (the cost is one norm per
level per step and one copy of the weights before each optimiser step); gate values of
``gated`` skips are always logged, as they cost nothing.
"""

from __future__ import annotations

import torch
from torch import nn


def _levels(model: nn.Module) -> dict[str, list[nn.Parameter]]:
    """Parameter groups named ``enc<i>`` (encoder stage i) and ``dec<i>`` (decoder level i)."""
    groups: dict[str, list[nn.Parameter]] = {}
    encoder, decoder = getattr(model, "encoder", None), getattr(model, "decoder", None)
    for i, stage in enumerate(getattr(encoder, "stages", [])):
        groups[f"enc{i}"] = [p for p in stage.parameters() if p.requires_grad]
    for i, block in enumerate(getattr(decoder, "blocks", [])):
        params = list(block.parameters()) + list(decoder.ups[i].parameters())
        groups[f"dec{i}"] = [p for p in params if p.requires_grad]
    return {k: v for k, v in groups.items() if v}


class LevelProbe:
    """Accumulates, per level, the gradient norm and the relative update ``|dw| / |w|`` over
    the steps of an epoch; :meth:`epoch_stats` returns their means and resets."""

    def __init__(self, model: nn.Module, gradients: bool = True) -> None:
        self.model = model
        self.groups = _levels(model) if gradients else {}
        self._before: dict[str, list[torch.Tensor]] = {}
        self._sums: dict[str, float] = {}
        self._steps = 0

    @staticmethod
    def _norm(tensors: list[torch.Tensor]) -> float:
        return float(torch.sqrt(sum((t.detach().float() ** 2).sum() for t in tensors)))

    def before_step(self) -> None:
        """Call after backward (and unscaling), before ``optimizer.step()``."""
        for name, params in self.groups.items():
            grads = [p.grad for p in params if p.grad is not None]
            if grads:
                self._sums[f"grad_{name}"] = self._sums.get(f"grad_{name}", 0.0) + self._norm(grads)
            self._before[name] = [p.detach().clone() for p in params]

    def after_step(self) -> None:
        for name, params in self.groups.items():
            before = self._before.pop(name, None)
            if before is None:
                continue
            delta = self._norm([p.detach() - b for p, b in zip(params, before)])
            self._sums[f"update_{name}"] = self._sums.get(f"update_{name}", 0.0) + delta / max(
                self._norm(before), 1e-12
            )
        self._steps += 1

    @staticmethod
    def wanted(model: nn.Module, level_stats: bool) -> bool:
        skips = getattr(getattr(model, "decoder", None), "skips", [])
        return level_stats or any(getattr(m, "gate_logit", None) is not None for m in skips)

    def epoch_stats(self) -> dict[str, float]:
        stats = {k: v / max(self._steps, 1) for k, v in self._sums.items()}
        for i, merge in enumerate(getattr(getattr(self.model, "decoder", None), "skips", [])):
            gate = merge.gate_values() if hasattr(merge, "gate_values") else None
            if gate is not None:
                stats[f"gate{i}"] = float(gate.mean())
                stats[f"gate_min{i}"] = float(gate.min())
        self._sums, self._steps = {}, 0
        return stats
