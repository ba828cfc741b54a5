"""The question ``unetseg train`` asks before a run of more than an hour on a CPU.

A config written for a GPU (``configs/isbi.yaml``: the classic 31 M-parameter U-Net, 200
epochs) runs for about a day on a laptop CPU, and nothing in it says so. The trainer times its
first steps (:mod:`unetseg.training.progress`); when the run it would commit to is that long
on a CPU, this says so, names the CPU config for the same data, and goes on only when told to:
``--yes``, or stdin not being a terminal, so scripts and CI keep running unattended.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import click

from unetseg.config import Config
from unetseg.training.progress import duration

if TYPE_CHECKING:
    import torch

GPU_RUN_S = 3600.0  # a CPU run expected to take longer than this is taken for a GPU config
CPU_CONFIGS = {"isbi2012": "configs/isbi_cpu.yaml", "nuclei": "configs/nuclei_cpu.yaml"}  # data folder -> config
SHORTER = ("--set train.max_time_s=1800 (a time budget; with train.schedule_by: time the schedule fits it) "
           "or a smaller model (model.base_width, model.depth)")


def cpu_alternative(config_path: Path, cfg: Config) -> str:
    """What to run on a CPU instead: the shipped CPU config for the same data, else how to shorten this one."""
    for marker, candidate in CPU_CONFIGS.items():
        if marker in str(cfg.data.images) and Path(candidate).is_file() and Path(candidate).resolve() != config_path.resolve():
            return f"for a CPU use `unetseg train --config {candidate}` (about 8 minutes)"
    return f"for a CPU shorten it: {SHORTER}"


def interactive() -> bool:
    """Whether someone can answer a question (a function, so tests can play a terminal)."""
    return sys.stdin.isatty()


def long_cpu_run_check(config_path: Path, cfg: Config, yes: bool) -> Callable[[float, torch.device], None]:
    """The trainer's ``approve``: stops a CPU run expected to last over an hour unless confirmed."""

    def approve(seconds_left: float, device: torch.device) -> None:
        if device.type != "cpu" or seconds_left <= GPU_RUN_S:
            return
        click.echo(f"{config_path} looks meant for a GPU: on this CPU the run would take about {duration(seconds_left)}; "
                   f"{cpu_alternative(config_path, cfg)}")
        if yes:
            click.echo("going on (--yes)")
        elif not interactive():
            click.echo("going on: stdin is not a terminal")
        elif not click.confirm("Train on this CPU anyway?", default=False):
            raise click.ClickException("stopped before training further; pass --yes to train this config on the CPU anyway")

    return approve
