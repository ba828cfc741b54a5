"""Device, precision, threads and seeding: the process-wide settings a run depends on."""

from __future__ import annotations

import os
import platform
import random
from contextlib import AbstractContextManager, nullcontext

import numpy as np
import torch

from unetseg.config.base import ConfigError


def select_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"device {name!r}: not a device name (auto, cpu, cuda or cuda:N)") from None
    if device.type not in ("cpu", "cuda"):  # torch knows mps, xpu, meta, ...: untested here, so refused by name
        raise ConfigError(f"device {name!r}: unetseg runs on cpu or cuda (auto, cpu, cuda or cuda:N)")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {name!r} requested but CUDA is not available")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise ConfigError(f"device {name!r}: this machine has {torch.cuda.device_count()} GPU(s)")
    return device


PRECISION_NAMES: dict[torch.dtype, str] = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}


def precision_name(dtype: torch.dtype | None) -> str:
    """The name of the dtype a step computes in: an autocast dtype, or fp32 without autocast."""
    return PRECISION_NAMES[torch.float32 if dtype is None else dtype]


def cpu_has_native_bf16() -> bool:
    """Whether this CPU has bf16 arithmetic instructions (x86: AVX512-BF16 or AMX; Arm: the BF16
    extension), which oneDNN's bf16 convolutions and matrix products then use. Without them oneDNN
    still runs bf16 (on any AVX512 core) by converting to fp32, which is slower than fp32 itself,
    so that case must read False."""
    try:
        if platform.machine().lower() in ("aarch64", "arm64"):
            return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())  # on Arm: the BF16 extension itself
        return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
    except (AttributeError, RuntimeError):  # an older torch, or a build without oneDNN
        return False


def amp_dtype(setting: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype. ``auto`` means bf16 on a CUDA device (fp16 where bf16 is missing) and
    none on a CPU, so a CPU run stays in fp32 unless asked. On a CPU, ``bf16`` is honoured only
    where the CPU has bf16 instructions (emulated bf16 is slower than fp32), and ``fp16`` never:
    CPU autocast in fp16 has no loss scaling here and is untested, so the run stays in fp32."""
    if setting == "off":
        return None
    if device.type == "cpu":
        return torch.bfloat16 if setting == "bf16" and cpu_has_native_bf16() else None
    if device.type != "cuda":
        return None
    if setting == "fp16":
        return torch.float16
    if setting == "bf16" or torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float16


def autocast(device: torch.device, dtype: torch.dtype | None) -> AbstractContextManager:
    return torch.autocast(device_type=device.type, dtype=dtype) if dtype is not None else nullcontext()


def set_threads(threads: int | None) -> None:
    if threads:
        torch.set_num_threads(threads)
        os.environ.setdefault("OMP_NUM_THREADS", str(threads))


def seed_everything(seed: int, deterministic: bool = False) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
    elif torch.cuda.is_available():
        torch.backends.cudnn.benchmark = True


def rng_state() -> dict:
    """Every RNG a training step touches, in a form ``torch.load(weights_only=True)`` accepts."""
    np_state = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": [
            np_state[0],
            torch.from_numpy(np_state[1].copy()),
            int(np_state[2]),
            int(np_state[3]),
            float(np_state[4]),
        ],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    """Restore ``rng_state()``'s output, also from a checkpoint loaded onto a GPU (the generators take CPU tensors)."""
    version, keys, pos, has_gauss, cached = state["numpy"]
    random.setstate(tuple(tuple(x) if isinstance(x, list) else x for x in state["python"]))
    np.random.set_state((version, keys.cpu().numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        # A run saved on more GPUs than this machine has resumes with the states of the ones here.
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"][: torch.cuda.device_count()]])


def describe_hardware() -> str:
    """The device and thread count results were measured with, for reports."""
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"CPU ({cpu_model()})"
    return f"{device}, {torch.get_num_threads()} torch threads, torch {torch.__version__}"


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()
