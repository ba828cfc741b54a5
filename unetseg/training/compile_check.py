"""``train.compile`` on a CPU, tried in a child process before a run relies on it.

torch 2.14.1's inductor backend was reported to crash the whole process (SIGSEGV, exit 139)
in the compiled backward of a stride-2 1x1 convolution, the projection shortcut of a residual
block that halves the resolution (``model.downsample: conv``, as in configs/isbi_cpu.yaml). It
did not happen on a 2-core AMD EPYC with AVX512-BF16 (no AMX), where the whole isbi_cpu run
compiles and trains in bf16 and in fp32, so what sets it off is not in the config alone, and a
segfault cannot be caught in the process it happens in. So where a model has such a
convolution, one compiled training step of it, on the run's batch shape, runs first in a child
process; if that child dies or fails, the run trains without ``torch.compile`` and says so in
one line, instead of crashing. The child also fills inductor's on-disk cache, so the
run's own compilation of the same graphs is mostly cache hits.

A second fault of the same inductor is certain, and avoided by :data:`COMPILE_OPTIONS`: when a
compiled model meets a second input shape (whole images of several sizes, ``augment.crop_size:
null``), torch recompiles it for symbolic sizes, and the training graph of two stacked 3x3 conv
-> instance norm -> ReLU layers (every unetseg level with ``model.norm: instance``) then fails
to lower: ``InductorError: cannot determine truth value of Relational: 128*s69*s87 < 128``
(stride and shortcut play no part; the inference graph and batch norm compile). With
``dynamic=False`` each shape gets a static graph of its own (up to torch's recompile limit,
then eager), which compiles.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch
from torch import nn

from unetseg.config import Config, config_from_dict, dump_config
from unetseg.models import build_model
from unetseg.runtime import autocast

# The child's command line, a name so that a test can stand a crashing child in for it.
TRIAL = [sys.executable, "-m", "unetseg.training.compile_check"]
TRIAL_TIMEOUT_S = 1800.0  # compiling a large model on 2 cores takes minutes, not half an hour
COMPILE_OPTIONS = {"dynamic": False}  # static graphs per shape: the symbolic-shape recompilation fails


def has_strided_pointwise_conv(model: nn.Module) -> bool:
    """Whether the model holds the convolution the reported crash is in: 1x1 with a stride."""
    return any(isinstance(m, nn.Conv2d) and m.kernel_size == (1, 1) and m.stride != (1, 1) for m in model.modules())


def trial_payload(cfg: Config, shape: tuple[int, ...], amp: torch.dtype | None) -> dict[str, Any]:
    """What the child needs to rebuild the step: the config, the batch shape and the precision."""
    return {
        "config": dump_config(cfg),
        "shape": list(shape),
        "bf16": amp == torch.bfloat16,
        "threads": torch.get_num_threads(),
    }


def compile_failure(payload: dict[str, Any]) -> str | None:
    """None when a compiled training step runs in a child process; otherwise what went wrong."""
    package_root = str(Path(__file__).resolve().parents[2])  # this unetseg, also when it is not installed
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH")]))}
    try:
        proc = subprocess.run(
            [*TRIAL, json.dumps(payload)], capture_output=True, text=True, env=env, timeout=TRIAL_TIMEOUT_S
        )
    except subprocess.TimeoutExpired:
        return f"did not finish in {TRIAL_TIMEOUT_S:.0f} s"
    if proc.returncode == 0:
        return None
    if proc.returncode < 0:
        return f"crashed ({signal.Signals(-proc.returncode).name})"
    last = (proc.stderr.strip().splitlines() or [f"exit status {proc.returncode}"])[-1]
    return f"failed ({last[:200]})"


def _trial(payload: dict[str, Any]) -> None:
    """One compiled forward and backward pass of the run's model on a random batch."""
    cfg = config_from_dict(payload["config"], "compile trial")
    torch.set_num_threads(payload["threads"])
    model = build_model(cfg.model, cfg.data.channels, cfg.data.out_channels)
    if cfg.train.channels_last:
        model = model.to(memory_format=torch.channels_last)
    kwargs = {"deep_supervision": True} if getattr(cfg.model, "deep_supervision", 0) else {}
    x = torch.randn(*payload["shape"], generator=torch.Generator().manual_seed(0))
    with autocast(torch.device("cpu"), torch.bfloat16 if payload["bf16"] else None):
        out = torch.compile(model, **COMPILE_OPTIONS)(x, **kwargs)
    outputs = out if isinstance(out, (list, tuple)) else [out]
    sum(o.float().square().mean() for o in outputs).backward()


if __name__ == "__main__":
    _trial(json.loads(sys.argv[1]))
