"""What a run will cost, said before its first step; and loader workers that fit the cores.

The timed estimate (:mod:`unetseg.training.progress`) needs three real training steps, and a
config written for a GPU (``configs/isbi.yaml``, the classic 31 M-parameter U-Net) takes about
50 s a step on a 2-core CPU: a newcomer would wait minutes, watching nothing, to hear that the
run takes days and which CPU config to run instead. The cost is known before any step: the
FLOPs of a training step (``torch.utils.flop_counter`` on one forward pass of a small input,
scaled to the crop; the backward pass costs twice the forward) and the rate at which this
machine multiplies matrices, measured in a fraction of a second. A U-Net's training step runs
at 30-70 % of that rate (``benchmarks/results/throughput``), so half of it gives a first guess
within a factor of two: enough to tell eight minutes from a day. The timed steps refine it.

Neither measurement touches the run: the forward pass is in eval mode without autograd (no
batch-norm statistics move, no dropout draws), and the matrices are constants, so no random
number is drawn and a resumed run stays identical to an uninterrupted one.

A loader with more worker processes than cores only competes with the training threads, and
PyTorch warns about it; the worker count is cut to the cores, with one line saying so.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from unetseg.config import Config
from unetseg.models.padding import padded_size
from unetseg.runtime import autocast
from unetseg.training.progress import duration

EFFICIENCY = 0.5  # the share of the matrix rate a training step reaches (30-70 % measured)
PROBE_SIDE = 64  # the side of the input the FLOPs are counted on, before scaling to the crop
RATE_S = 0.1  # seconds spent measuring the matrix rate (after one warm-up product)


def available_cores() -> int:
    """The cores this process may run on (its affinity mask, as PyTorch's DataLoader counts them)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def loader_workers(requested: int, log: Callable[[str], None]) -> int:
    """``train.num_workers``, cut to the cores available, with one line where it is cut."""
    cores = available_cores()
    if requested <= cores:
        return requested
    log(f"train.num_workers: {requested} loader processes on {cores} core{'s' if cores > 1 else ''}; using {cores}")
    return cores


def crop_shape(crop_size: int | None, dataset: Any) -> tuple[int, int]:
    """(height, width) of a training crop: ``augment.crop_size``, else the first image's size."""
    if crop_size:
        return crop_size, crop_size
    height, width = dataset.load(0)[0].shape[:2]
    return height, width


def matmul_rate(device: torch.device, dtype: torch.dtype | None = None, seconds: float = RATE_S) -> float:
    """FLOP/s of a square matrix product on ``device`` in ``dtype`` (fp32 by default): the best
    of the products that fit in ``seconds`` after a warm-up one."""
    n = 4096 if device.type == "cuda" else 1024
    a = torch.full((n, n), 1.0 / n, device=device, dtype=dtype or torch.float32)
    best, start = 0.0, time.perf_counter()
    for done in range(1000):
        tick = time.perf_counter()
        a @ a
        if device.type != "cpu":  # CUDA (and MPS) run asynchronously: wait for the product
            getattr(torch, device.type).synchronize()
        if done:  # the first product pays for the thread pool and the caches
            best = max(best, 2 * n**3 / (time.perf_counter() - tick))
            if time.perf_counter() - start >= seconds:
                break
    return best


def flops_per_crop(
    model: nn.Module, channels: int, height: int, width: int, device: torch.device, dtype: torch.dtype | None = None
) -> float:
    """FLOPs of a training step on one ``height`` x ``width`` crop: three times those of the
    forward pass (the backward pass computes the gradients of inputs and of weights). Counted
    on a small input and scaled by area: a convolution's cost is proportional to its pixels.
    The pass runs under the step's autocast ``dtype``, in eval mode, without autograd."""
    multiple = int(getattr(model, "multiple", 1))
    crop_h, crop_w = padded_size(height, width, multiple)
    side = max(math.ceil(PROBE_SIDE / multiple), 2) * multiple
    probe_h, probe_w = (crop_h, crop_w) if crop_h * crop_w <= side * side else (side, side)
    was_training, threads = model.training, torch.get_num_threads()
    model.eval()
    torch.set_num_threads(1)  # small convolutions on a busy machine: one thread is 10x faster than two
    total = [0.0]
    hooks = [m.register_forward_hook(_count_into(total)) for m in model.modules() if isinstance(m, COUNTED)]
    try:
        with torch.inference_mode(), autocast(device, dtype):
            model(torch.zeros(1, channels, probe_h, probe_w, device=device))
    finally:
        for hook in hooks:
            hook.remove()
        model.train(was_training)
        torch.set_num_threads(threads)
    return 3.0 * total[0] * (crop_h * crop_w) / (probe_h * probe_w)


# The layers whose products make a U-Net's cost; counted by hooks, not by torch's FlopCounterMode,
# whose first use imports torch._dynamo (3 s on a busy 2-core machine, before the first line).
COUNTED = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d, nn.Linear)


def _count_into(total: list[float]) -> Callable[..., None]:
    """A forward hook adding the multiply-adds (x2) of a convolution or linear layer to ``total``."""

    def hook(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        if isinstance(module, nn.Linear):
            total[0] += 2.0 * output.numel() * module.in_features
        elif isinstance(module, nn.modules.conv._ConvTransposeNd):  # each input pixel spreads over the kernel
            per_input = module.out_channels // module.groups * math.prod(module.kernel_size)
            total[0] += 2.0 * inputs[0].numel() * per_input
        else:  # each output pixel gathers over the kernel
            per_output = module.in_channels // module.groups * math.prod(module.kernel_size)
            total[0] += 2.0 * output.numel() * per_output

    return hook


def _flop(value: float) -> str:
    for unit, scale in (("T", 1e12), ("G", 1e9), ("M", 1e6)):
        if value >= scale:
            return f"{value / scale:.3g} {unit}FLOP"
    return f"{value:.3g} FLOP"


@dataclass(frozen=True)
class FirstGuess:
    """The expected duration of ``crops`` training crops at ``EFFICIENCY`` of ``rate``."""

    crop_flops: float
    crops: int
    rate: float
    device: torch.device
    first_epoch: int
    epochs: int
    budget_s: float | None = None
    spent_s: float = 0.0

    @property
    def unbounded_s(self) -> float:
        return self.crops * self.crop_flops / (EFFICIENCY * self.rate)

    @property
    def budget_bound(self) -> bool:
        return self.budget_s is not None and self.unbounded_s > self.budget_s - self.spent_s

    @property
    def seconds(self) -> float:
        """Seconds left: the steps of every epoch, or what is left of the time budget."""
        if self.budget_bound:
            return max(self.budget_s - self.spent_s, 0.0)
        return self.unbounded_s

    def line(self) -> str:
        """The line said before the first step."""
        where = "this CPU" if self.device.type == "cpu" else f"this {self.device.type.upper()} device"
        basis = (
            f"a first guess before any step: {_flop(self.crop_flops)} a crop x {self.crops:,} crops "
            f"at half of {where}'s {_flop(self.rate)}/s matrix rate; the first steps will time it"
        )
        if self.budget_bound:
            return (
                f"expected duration: about {duration(self.seconds)}; the time budget (train.max_time_s = "
                f"{self.budget_s:g} s) ends the run before epoch {self.epochs} ({basis})"
            )
        return (
            f"expected duration: about {duration(self.seconds)} for epochs {self.first_epoch}..{self.epochs} ({basis})"
        )


def first_guess(
    model: nn.Module,
    cfg: Config,
    dataset: Any,
    steps_per_epoch: int,
    start_epoch: int,
    spent_s: float,
    dtype: torch.dtype | None,
) -> FirstGuess | None:
    """The expected duration of the epochs after ``start_epoch`` (``spent_s`` seconds of the
    time budget used by them) on crops of ``dataset``, or None where the FLOPs cannot be counted
    (a model that refuses the probe's size) or no epoch is left. It runs where ``model`` is, in
    the steps' autocast ``dtype``."""
    train = cfg.train
    crops = max(train.epochs - start_epoch, 0) * steps_per_epoch * train.batch_size
    if crops == 0:  # a finished run resumed: nothing left to guess
        return None
    device = next(model.parameters()).device
    height, width = crop_shape(cfg.augment.crop_size, dataset)
    try:
        crop_flops = flops_per_crop(model, cfg.data.channels, height, width, device, dtype)
    except RuntimeError:
        return None
    if crop_flops <= 0:
        return None
    rate = matmul_rate(device, dtype)
    return FirstGuess(crop_flops, crops, rate, device, start_epoch + 1, train.epochs, train.max_time_s, spent_s)
