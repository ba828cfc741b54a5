"""A training config's own budget as a fixed crop budget, for ``unetseg ablate --base``.

A config written for one machine often ends its run by the clock (``train.max_time_s``), and an
ablation cannot: a variant with a cheaper decoder would train more steps in the same seconds,
and the same grid would train other steps on another machine. So the base's time budget is
turned once into the number of crops it reaches on this machine, with the reference model's
own training step timed here, and that number is fixed in the ablation's spec file for every
variant, run, machine and later invocation.

The step is timed on random crops of the training size (forward, backward and the optimiser's
update, in the run's precision): the network's cost, which is what differs between variants.
On a CPU it is timed at one thread on the process's CPU clock and multiplied by the base's
threads: on this project's shared 2-core machine a 2-thread step of nuclei_cpu ran at 0.2
crops/s by the wall clock while other work ran (about 8 when the machine is idle: OpenMP
threads wait for each other at every barrier), and at 4.5-5.3 crops per CPU second at one
thread; a budget must not depend on what else ran while it was measured. It stays an
estimate: perfect scaling over threads is assumed and decoding, augmentation and validation
are left out (both raise it), while a busy machine's CPU second computes less than an idle
one's (which lowers it; isbi_cpu's came to 84 epochs there, where its own idle run reached
126). The base's ``train.epochs`` caps it, as it caps the base's own run, and the line that
reports it says how it was found, so a budget that looks wrong can be edited in the file.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from unetseg.config import Config

MIN_STEPS = 3  # timed steps, after one warm-up step
MIN_SECONDS = 2.0  # and at least this long on the budget's clock
MAX_STEPS = 50


@dataclass(frozen=True)
class CropBudget:
    """``epochs`` x ``samples_per_epoch`` crops a run, and why that many."""

    epochs: int
    samples_per_epoch: int
    why: str

    @property
    def crops(self) -> int:
        return self.epochs * self.samples_per_epoch


def samples_per_epoch(cfg: Config) -> int:
    """``train.samples_per_epoch``, or what it defaults to: one crop per training image."""
    if cfg.train.samples_per_epoch:
        return cfg.train.samples_per_epoch
    from unetseg.data.layouts import split_data

    return len(split_data(cfg.data)[0])


def crop_budget(cfg: Config, rate: Callable[[Config], tuple[float, str]] | None = None) -> CropBudget:
    """The base's budget in crops: its epochs x samples per epoch, or, where ``train.max_time_s``
    ends its run, the epochs that time reaches at ``rate(cfg)`` = (crops per second, how that
    was found) (default: :func:`timed_crops_per_s`), never more than its ``train.epochs``, at
    least one."""
    train = cfg.train
    per_epoch = samples_per_epoch(cfg)
    if train.max_time_s is None:
        return CropBudget(train.epochs, per_epoch, "the base's own train.epochs x samples per epoch")
    crops_per_s, how = (rate or timed_crops_per_s)(cfg)
    reach = round(train.max_time_s * crops_per_s / per_epoch)
    epochs = max(1, min(train.epochs, reach))
    why = f"what the base's train.max_time_s = {train.max_time_s:g} s reaches at {crops_per_s:.3g} crops/s ({how})"
    if reach > train.epochs:
        why += f"; its train.epochs = {train.epochs} ends the run first"
    return CropBudget(epochs, per_epoch, why)


def timed_crops_per_s(cfg: Config) -> tuple[float, str]:
    """Training crops per second of ``cfg``'s model on this machine, and how they were timed
    (see the module's note)."""
    import time

    import torch

    from unetseg.models import build_model
    from unetseg.models.padding import padded_size
    from unetseg.runtime import amp_dtype, autocast, select_device
    from unetseg.training.forecast import available_cores
    from unetseg.training.optim import build_optimizer

    device = select_device(cfg.train.device)
    dtype = amp_dtype(cfg.train.amp, device)
    on_cpu = device.type == "cpu"
    threads = torch.get_num_threads()
    if on_cpu:
        torch.set_num_threads(1)
    try:
        model = build_model(cfg.model, cfg.data.channels, cfg.data.out_channels).to(device).train()
        optimizer = build_optimizer(model, cfg.train)
        height, width = padded_size(*_crop(cfg), int(getattr(model, "multiple", 1)))
        generator = torch.Generator().manual_seed(0)  # nothing drawn from the runs' own streams
        batch = torch.randn(cfg.train.batch_size, cfg.data.channels, height, width, generator=generator).to(device)
        now = time.process_time if on_cpu else time.perf_counter

        def step() -> None:
            with autocast(device, dtype):
                loss = model(batch).float().mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if device.type == "cuda":
                torch.cuda.synchronize(device)

        step()  # the first step pays for allocations and kernel choices
        start, steps = now(), 0
        while steps < MAX_STEPS and (steps < MIN_STEPS or now() - start < MIN_SECONDS):
            step()
            steps += 1
        rate = steps * cfg.train.batch_size / max(now() - start, 1e-9)
    finally:
        torch.set_num_threads(threads)
    timed = f"{steps} training steps of the reference timed on this machine"
    if not on_cpu:
        return rate, f"{timed} ({device.type})"
    cores = cfg.train.threads or available_cores()
    return (
        rate * cores,
        f"{timed} at one thread, {rate:.3g} crops per CPU second, x {cores} thread{'s' if cores > 1 else ''}",
    )


def _crop(cfg: Config) -> tuple[int, int]:
    """(height, width) of a training crop: ``augment.crop_size``, else the first training image's."""
    from unetseg.data import SegmentationDataset
    from unetseg.data.layouts import split_data
    from unetseg.data.scaling import Resolution
    from unetseg.training.forecast import crop_shape

    if cfg.augment.crop_size:
        return cfg.augment.crop_size, cfg.augment.crop_size
    return crop_shape(
        None, SegmentationDataset(split_data(cfg.data)[0][:1], cfg.data, resolution=Resolution.of(cfg.data))
    )
