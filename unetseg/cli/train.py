"""``unetseg train``, and the question it asks before a run of more than an hour on a CPU.

A config written for a GPU (``configs/isbi.yaml``: the classic 31 M-parameter U-Net, 200
epochs) runs for about a day on a laptop CPU, and nothing in it says so. Before the first step
the trainer guesses the duration from the FLOPs and this machine's matrix rate
(:mod:`unetseg.training.forecast`), and times its first steps later
(:mod:`unetseg.training.progress`); as soon as either says the run is that long on a CPU, this
says so, names the CPU config for the same data, and goes on only when told to: ``--yes``, or
stdin not being a terminal, so scripts and CI keep running unattended. It asks once: a run
that went on after the first guess is not stopped again by the timed one.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import click

from unetseg.cli.common import FOLDER_OUT, config_option, run_command
from unetseg.config import Config, load_config

if TYPE_CHECKING:
    import torch

GPU_RUN_S = 3600.0  # a CPU run expected to take longer than this is taken for a GPU config
CPU_CONFIGS = {"isbi2012": "configs/isbi_cpu.yaml", "nuclei": "configs/nuclei_cpu.yaml"}  # data folder -> config
SHORTER = (
    "--set train.max_time_s=1800 (a time budget; with train.schedule_by: time the schedule fits it) "
    "or a smaller model (model.base_width, model.depth)"
)


def cpu_alternative(config_path: Path, cfg: Config) -> str:
    """What to run on a CPU instead: the shipped CPU config for the same data, else how to shorten this one."""
    for marker, candidate in CPU_CONFIGS.items():
        if (
            marker in str(cfg.data.images)
            and Path(candidate).is_file()
            and Path(candidate).resolve() != config_path.resolve()
        ):
            return f"for a CPU use `unetseg train --config {candidate}` (about 8 minutes)"
    return f"for a CPU shorten it: {SHORTER}"


def interactive() -> bool:
    """Whether someone can answer a question (a function, so tests can play a terminal)."""
    return sys.stdin.isatty()


def long_cpu_run_check(config_path: Path, cfg: Config, yes: bool) -> Callable[[float, torch.device], None]:
    """The trainer's ``approve``: stops a CPU run expected to last over an hour unless confirmed
    (asked once, at the first estimate that says so)."""
    asked = []

    def approve(seconds_left: float, device: torch.device) -> None:
        from unetseg.training.progress import duration

        if device.type != "cpu" or seconds_left <= GPU_RUN_S or asked:
            return
        asked.append(seconds_left)
        click.echo(
            f"{config_path} looks meant for a GPU: on this CPU the run would take about {duration(seconds_left)}; "
            f"{cpu_alternative(config_path, cfg)}"
        )
        if yes:
            click.echo("going on (--yes)")
        elif not interactive():
            click.echo("going on: stdin is not a terminal")
        elif not click.confirm("Train on this CPU anyway?", default=False):
            raise click.ClickException(
                "stopped before training further; pass --yes to train this config on the CPU anyway"
            )

    return approve


@click.command()
@config_option("YAML config.", required=True)
@click.option(
    "--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override a config key, e.g. train.epochs=5."
)
@click.option("--out", type=FOLDER_OUT, help="Output directory (overrides output_dir).")
@click.option("--resume", is_flag=True, help="Continue the run in the output directory from its last checkpoint.")
@click.option(
    "--folds",
    type=click.IntRange(2),
    help="k-fold cross-validation: train folds 0..K-1 (contiguous blocks) "
    "into OUTPUT_DIR/fold<i>/, then write OUTPUT_DIR/cv_summary.json.",
)
@click.option("--no-check", is_flag=True, help="Skip the dataset check (unetseg data check) before training.")
@click.option(
    "--yes", is_flag=True, help="Go on without asking when a run on the CPU is expected to take over an hour."
)
def train(
    config_path: Path,
    overrides: tuple[str, ...],
    out: Path | None,
    resume: bool,
    folds: int | None,
    no_check: bool,
    yes: bool,
) -> None:
    """Train a model; writes checkpoints, config.yaml and metrics.csv to the output directory.

    The data are checked first (as by unetseg data check); an error stops with the table.
    Before the first step the expected duration is printed (a first guess from the FLOPs),
    and again after the first steps are timed; a run on the CPU expected to take over an hour (a
    config meant for a GPU) goes on only with --yes, after a yes at the prompt, or when stdin is
    not a terminal.
    """
    from unetseg.cli.data import check_before_training
    from unetseg.training import Trainer
    from unetseg.training.crossval import fold_config, format_summary, train_folds
    from unetseg.training.distributed import is_main

    cfg = run_command(load_config, config_path, list(overrides) + ([f"output_dir={out}"] if out else []))
    if not no_check:
        check_before_training((fold_config(cfg, folds, 0) if folds else cfg).data)
    approve = long_cpu_run_check(config_path, cfg, yes)
    if folds:
        result = run_command(train_folds, cfg, folds, resume, click.echo, approve)
        click.echo(
            f"{folds}-fold cross-validation, validation metrics at each fold's best epoch:\n{format_summary(result)}"
        )
        click.echo(f"wrote {Path(cfg.output_dir) / 'cv_summary.json'}")
        return
    summary = run_command(Trainer(cfg, resume=resume, log=click.echo, approve=approve).fit)
    if is_main():
        click.echo(
            f"done: best {cfg.train.monitor} {summary['best_' + cfg.train.monitor]} at epoch {summary['best_epoch']}; "
            f"checkpoint {summary['best_checkpoint']}"
        )
