"""Optimiser and learning-rate schedule from the config."""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import torch
from torch import nn

from unetseg.config import TrainConfig


def build_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    # No weight decay on norms and biases (1-D parameters), as timm and nnU-Net-style recipes do.
    decay = [p for p in model.parameters() if p.requires_grad and p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.ndim <= 1]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    # The fused kernels update every tensor in one pass (CPU and CUDA): on a 2-core CPU the
    # foreach AdamW step of a 2-8 M parameter U-Net costs a tenth of the training step.
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=True, fused=True)
    return torch.optim.AdamW(groups, lr=cfg.lr, fused=True)


def budget_now(cfg: TrainConfig) -> Callable[[], float]:
    """The clock ``max_time_s`` is counted on: wall-clock seconds, or (``budget_clock: cpu``)
    the process's CPU seconds per thread. On a 2-core machine any other load slows a 2-thread
    torch run several-fold (its OpenMP threads wait for each other at every barrier), so two
    runs compared on wall-clock budgets compare the load as much as the runs; CPU time of a
    one-thread run is what it computed, whatever else ran."""
    if cfg.budget_clock == "wall":
        return time.perf_counter
    threads = cfg.threads or torch.get_num_threads()
    return lambda: time.process_time() / threads


class BudgetClock:
    """The fraction of a time budget spent so far, for a schedule laid out in time.

    ``start(spent_s)`` sets the origin (a resumed run passes what it had already spent).
    """

    def __init__(self, budget_s: float, now: Callable[[], float] = time.perf_counter) -> None:
        self.budget_s = budget_s
        self.now = now
        self.origin = now()

    def start(self, spent_s: float = 0.0) -> None:
        self.origin = self.now() - spent_s

    def fraction(self) -> float:
        return min(1.0, (self.now() - self.origin) / self.budget_s)


def build_scheduler(
    optimizer: torch.optim.Optimizer, cfg: TrainConfig, steps_per_epoch: int, clock: BudgetClock | None = None
):
    """Per-step schedule (cosine with linear warm-up), or per-epoch plateau on the monitored metric.

    ``schedule_by='steps'`` lays the cosine out over ``epochs * steps_per_epoch`` steps;
    ``'time'`` over the wall-clock budget read from ``clock``, so a budgeted run ends with
    the rate annealed however fast the machine is (at the price of step-exact
    reproducibility: the rate at a step depends on when it ran).
    """
    if cfg.scheduler == "plateau":
        mode = "min" if cfg.monitor in ("pixel_error", "rand_error", "vi") else "max"
        return torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode=mode, factor=0.5, patience=5)
    total = cfg.epochs * steps_per_epoch
    warmup = min(cfg.warmup_epochs * steps_per_epoch, max(total - 1, 0))
    if cfg.schedule_by == "time":
        if clock is None:
            raise ValueError("schedule_by 'time' needs the run's BudgetClock")
        floor = cfg.min_lr_ratio

        def factor(step: int) -> float:
            ramp = min(1.0, (step + 1) / warmup) if warmup else 1.0
            if cfg.scheduler == "none":
                return ramp
            return ramp * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * clock.fraction())))

        return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
    if cfg.scheduler == "none":
        return torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: min(1.0, (step + 1) / warmup) if warmup else 1.0
        )
    cosine = torch.optim.lr_scheduler.CosineAnnealingLR(
        optimizer, T_max=max(total - warmup, 1), eta_min=cfg.lr * cfg.min_lr_ratio
    )
    if not warmup:
        return cosine
    ramp = torch.optim.lr_scheduler.LinearLR(optimizer, start_factor=1.0 / warmup, total_iters=warmup)
    return torch.optim.lr_scheduler.SequentialLR(optimizer, [ramp, cosine], milestones=[warmup])
