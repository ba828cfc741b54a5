"""``unetseg analyze-gradients`` and ``unetseg analyze-blocks``: how gradients reach the encoder at
initialisation with and without short skips, and what deleting one block of a trained model costs."""

from __future__ import annotations

from pathlib import Path

import click

from unetseg.cli.common import FOLDER_OUT, config_option, run_command
from unetseg.cli.runs import CHECKPOINT
from unetseg.config import load_config


def _ints(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise click.BadParameter(f"expected comma-separated integers, got {text!r}") from None
    if not values:
        raise click.BadParameter("expected at least one integer")
    return values


@click.command("analyze-gradients")
@config_option("A training config: its data.images, data.masks and data.label_map give the crops.", required=True)
@click.option("--out", required=True, type=FOLDER_OUT, help="Report folder.")
@click.option("--variants", default=None, help="Comma-separated block variants (default: all of them).")
@click.option(
    "--blocks", default="1,2,4,8", show_default=True, help="Blocks per level for the shattered-gradient study."
)
@click.option("--seeds", default="0,1,2", show_default=True)
@click.option(
    "--iterations",
    type=click.IntRange(1),
    default=20,
    show_default=True,
    help="Training iterations for the gradient norms.",
)
@click.option(
    "--crop", type=click.IntRange(16), default=128, show_default=True, help="Crop size of the training iterations."
)
@click.option("--threads", type=click.IntRange(1), default=None, help="CPU threads for torch.")
def analyze_gradients_cmd(
    config_path: Path,
    out: Path,
    variants: str | None,
    blocks: str,
    seeds: str,
    iterations: int,
    crop: int,
    threads: int | None,
) -> None:
    """Shattered gradients and early per-block gradient norms of plain, residual, pre-activation,
    highway, dense and looks-linear encoders of growing depth, at initialisation."""
    import torch

    from unetseg.meter import progress_bar
    from unetseg.studies.gradients import VARIANTS, GradientStudy, analyze_gradients

    cfg = run_command(load_config, config_path)
    names = tuple(v.strip() for v in variants.split(",")) if variants else tuple(VARIANTS)
    unknown = [v for v in names if v not in VARIANTS]
    if unknown:
        raise click.BadParameter(
            f"unknown variant(s) {', '.join(unknown)}; choose from {', '.join(VARIANTS)}", param_hint="--variants"
        )
    if threads:
        torch.set_num_threads(threads)
    study = GradientStudy(
        variants=names,
        blocks=_ints(blocks),
        seeds=_ints(seeds),
        norm_iterations=iterations,
        norm_crop=crop,
        norm_variants=tuple(v for v in ("plain", "residual") if v in names) or names[:1],
    )
    try:
        with progress_bar("analyze-gradients", "network") as meter:
            paths = run_command(
                analyze_gradients, cfg.data.images, cfg.data.masks, cfg.data.label_map, out, study, meter
            )
    except ValueError as err:
        raise click.ClickException(str(err)) from None
    click.echo(f"report: {paths['html']} (also {paths['md'].name}, {paths['json'].name})")


@click.command("analyze-blocks")
@click.option(
    "--checkpoint",
    "checkpoints",
    required=True,
    multiple=True,
    type=CHECKPOINT,
    help="A trained U-Net (checkpoint file or run folder) with blocks_per_level > 1; repeat to compare several (e.g. plain and residual, seeds).",
)
@click.option("--out", required=True, type=FOLDER_OUT, help="Report folder.")
@click.option(
    "--draws", type=click.IntRange(1), default=3, show_default=True, help="Random block sets per number deleted."
)
def analyze_blocks_cmd(checkpoints: tuple[Path, ...], out: Path, draws: int) -> None:
    """Delete encoder blocks of trained U-Nets at test time, one at a time and in growing
    numbers, and measure Dice (Veit et al. 2016's ensemble view)."""
    from unetseg.meter import progress_bar
    from unetseg.studies.deletion import analyze_blocks

    try:
        with progress_bar("analyze-blocks", "model") as meter:
            paths = run_command(analyze_blocks, list(checkpoints), out, draws, meter)
    except ValueError as err:
        raise click.ClickException(str(err)) from None
    click.echo(f"report: {paths['html']} (also {paths['md'].name}, {paths['json'].name})")
