"""The machine a plan is for: the device training will run on, its cores and memory.

Read once by ``unetseg init``, so that the planned network, batch and precision fit what the
run will actually have; the plan's comments state what was found.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from unetseg.runtime import cpu_has_native_bf16, cpu_model


@dataclass(frozen=True)
class Machine:
    device: str  # "cpu" or "cuda"
    cores: int
    memory_gb: float
    processor: str
    native_bf16: bool  # CPU bf16 instructions (AVX512-BF16, AMX, Arm BF16)
    gpu: str | None = None
    gpu_memory_gb: float | None = None

    def describe(self) -> str:
        if self.device == "cuda":
            return f"{self.gpu} ({self.gpu_memory_gb:.0f} GiB), {self.cores} CPU cores"
        bf16 = "with" if self.native_bf16 else "without"
        return f"CPU {self.processor}, {self.cores} cores, {self.memory_gb:.0f} GiB, {bf16} bf16 instructions"


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))  # the cores this process may use (a container's, a job's)
    except AttributeError:
        return os.cpu_count() or 1


def _memory_gb() -> float:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError, AttributeError):
        return 8.0


def detect_machine(device: str = "auto") -> Machine:
    """This machine, planning for ``device`` (``auto``: CUDA when present, else the CPU)."""
    use_cuda = torch.cuda.is_available() if device == "auto" else device.startswith("cuda")
    common = {
        "cores": _cores(),
        "memory_gb": _memory_gb(),
        "processor": cpu_model(),
        "native_bf16": cpu_has_native_bf16(),
    }
    if not use_cuda:
        return Machine("cpu", **common)
    if not torch.cuda.is_available():
        return Machine("cuda", gpu="a CUDA GPU (not visible here)", gpu_memory_gb=16.0, **common)
    props = torch.cuda.get_device_properties(0)
    return Machine("cuda", gpu=props.name, gpu_memory_gb=props.total_memory / 2**30, **common)
