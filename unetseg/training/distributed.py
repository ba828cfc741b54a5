"""Data-parallel training under ``torchrun``: the process group, rank helpers, per-rank data.

``unetseg train`` started by torchrun (``WORLD_SIZE`` > 1 in the environment) joins the
process group torchrun describes: NCCL with one GPU per process (``cuda:LOCAL_RANK``) on
CUDA, gloo on the CPU. Without torchrun (or with one process) :class:`Distributed` is a
no-op and training is exactly the single-process loop.

Every rank builds the same model from the same seed (DDP also broadcasts rank 0's weights),
so the global RNGs stay identical on all ranks and the one RNG state a checkpoint holds
resumes every rank. What differs per rank is drawn from ``(seed, epoch, rank)``: the shard
of the epoch's data order (:class:`torch.utils.data.DistributedSampler`, a function of
``(seed, epoch)`` cut by rank) and the augmentation stream (:func:`rank_seed`).
"""

from __future__ import annotations

import os
import signal
import sys
from datetime import timedelta
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import Dataset, DistributedSampler

from unetseg.config.base import ConfigError
from unetseg.runtime import select_device

# Rank 0 validates while the others wait in a collective; allow a long validation.
TIMEOUT = timedelta(minutes=60)


def env_rank() -> int:
    """This process's global rank as torchrun set it (0 outside torchrun)."""
    return int(os.environ.get("RANK", "0"))


def is_main() -> bool:
    return env_rank() == 0


def die_with_launcher() -> None:
    """torchrun starts each worker in a session of its own, so a ``kill -9`` of torchrun would
    leave its workers training, and writing the run, as orphans beside a ``--resume``. On
    Linux ask the kernel to kill a torchrun worker when its launcher dies."""
    if sys.platform.startswith("linux") and "TORCHELASTIC_RUN_ID" in os.environ:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def rank_seed(seed: int, rank: int) -> int:
    """An independent seed per rank; rank 0 keeps ``seed``, so one process is the plain run."""
    return seed if rank == 0 else int(np.random.SeedSequence([seed, rank]).generate_state(1)[0])


class Distributed:
    """This process's place in the run, and the few collectives training needs.

    With one process every method returns its input: the trainer calls them unconditionally.
    """

    def __init__(self, device_name: str = "auto") -> None:
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = env_rank() if self.world > 1 else 0
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0")) if self.world > 1 else 0
        device = select_device(device_name)
        if self.enabled and device.type == "cuda":
            # Every rank checks the node's process count (not only its own index), so that rank 0,
            # the one that reports errors, names the cause instead of waiting for the others.
            processes = int(os.environ.get("LOCAL_WORLD_SIZE", self.local_rank + 1))
            if processes > torch.cuda.device_count():
                raise ConfigError(
                    f"{processes} processes on this node but {torch.cuda.device_count()} GPU(s) visible: start at most "
                    "one process per GPU (torchrun --nproc_per_node) or set train.device: cpu"
                )
            device = torch.device("cuda", self.local_rank)
            torch.cuda.set_device(device)
        self.device = device
        if self.enabled and not dist.is_initialized():
            die_with_launcher()
            backend = "nccl" if device.type == "cuda" else "gloo"
            dist.init_process_group(backend, timeout=TIMEOUT, device_id=device if device.type == "cuda" else None)

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    # ------------------------------------------------------------------ model and data

    def wrap(self, model: nn.Module) -> nn.Module:
        """DistributedDataParallel around ``model`` (SyncBatchNorm first on CUDA); ``model``
        itself keeps the weights, so its ``state_dict`` loads in a single process.

        ``static_graph``: every step runs the same graph, and it lets DDP accept parameters
        the forward never uses (an smp encoder cut to a shallower U-Net keeps its deeper layers).
        """
        if not self.enabled:
            return model
        if self.device.type == "cuda":
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        ids = [self.device.index] if self.device.type == "cuda" else None
        return nn.parallel.DistributedDataParallel(model, device_ids=ids, static_graph=True)

    def sampler(self, dataset: Dataset, seed: int, epoch: int) -> DistributedSampler | None:
        """This rank's share of the epoch: a permutation drawn from ``seed + epoch``, cut by rank
        (padded by wrapping so every rank takes the same number of steps)."""
        if not self.enabled:
            return None
        sampler = DistributedSampler(dataset, num_replicas=self.world, rank=self.rank, shuffle=True, seed=seed)
        sampler.set_epoch(epoch)
        return sampler

    def share(self, n: int) -> int:
        """Items of an ``n``-item epoch this rank sees."""
        return -(-n // self.world)

    # ------------------------------------------------------------------ collectives

    def mean(self, value: torch.Tensor) -> torch.Tensor:
        """Mean of a scalar over the ranks (NaN or inf anywhere makes it non-finite everywhere)."""
        if not self.enabled:
            return value
        value = value.detach().float().clone()
        dist.all_reduce(value)
        return value / self.world

    def sum(self, value: int) -> int:
        if not self.enabled:
            return value
        t = torch.tensor(float(value), device=self.device)
        dist.all_reduce(t)
        return int(t.item())

    def any(self, flag: bool) -> bool:
        """True on every rank when it is true on one (a stop decision no rank may miss)."""
        return bool(self.sum(int(flag))) if self.enabled else flag

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every rank."""
        if not self.enabled:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def close(self) -> None:
        if self.enabled and dist.is_initialized():
            dist.destroy_process_group()
