"""What every benchmark here shares: the machine's matmul peak, the FLOPs of a training step,
the timing of one, and the header that says where a number was measured.

Run benchmarks alone: on a 2-core machine a second busy process (a test run, another
benchmark) slows OpenMP-threaded torch by several times, and the numbers mean nothing.
"""

from __future__ import annotations

import json
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


def environment(device: torch.device) -> dict[str, Any]:
    """The hardware and software a result was measured on."""
    info: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "torch": torch.__version__,
        "device": device.type,
        "threads": torch.get_num_threads(),
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
    }
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_peak(device: torch.device, dtype: torch.dtype = torch.float32, repeats: int = 5, rounds: int = 3) -> float:
    """Best achieved FLOP/s of a square matrix product over a few sizes and ``rounds`` passes:
    the machine's practical peak, against which a training step's FLOP/s is judged. A single
    pass right after start-up reads up to 15% low on a shared 2-core machine (clock ramp,
    cold caches), which would flatter every "% of peak"; the best of several passes does not."""
    best = 0.0
    sizes = (4096, 8192) if device.type == "cuda" else (1024, 2048, 3072)  # a GPU needs large products to fill
    for _ in range(rounds):
        for n in sizes:
            a = torch.randn(n, n, device=device, dtype=dtype)
            b = torch.randn(n, n, device=device, dtype=dtype)
            for _ in range(2):
                a @ b
            sync(device)
            start = time.perf_counter()
            for _ in range(repeats):
                a @ b
            sync(device)
            best = max(best, repeats * 2 * n**3 / (time.perf_counter() - start))
    return best


def step_flops(model: nn.Module, batch: torch.Tensor, target: torch.Tensor, loss_fn: Callable) -> int:
    """FLOPs of one forward + backward pass (``torch.utils.flop_counter``: convolutions and
    matrix products, a multiply-add counting 2; norms and activations are not counted)."""
    model.zero_grad(set_to_none=True)
    with FlopCounterMode(display=False) as counter:
        loss_fn(model(batch), target).backward()
    model.zero_grad(set_to_none=True)
    return int(counter.get_total_flops())


def time_steps(
    step: Callable[[], Any], device: torch.device, warmup: int = 2, min_steps: int = 3, min_s: float = 3.0
) -> float:
    """Seconds per call of ``step`` after ``warmup`` calls: at least ``min_steps`` calls and
    ``min_s`` seconds, so that fast models are timed over many steps and slow ones finish."""
    for _ in range(warmup):
        step()
    sync(device)
    start, n = time.perf_counter(), 0
    while n < min_steps or time.perf_counter() - start < min_s:
        step()
        n += 1
        sync(device)
    return (time.perf_counter() - start) / n


def write_results(out: Path, stem: str, payload: dict[str, Any], text: str, echo: bool = True) -> None:
    """``<stem>.json`` and ``<stem>.md`` under ``out``; the Markdown is printed too (``echo``)."""
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{stem}.json").write_text(json.dumps(payload, indent=2) + "\n")
    (out / f"{stem}.md").write_text(text)
    if echo:
        print(text)
