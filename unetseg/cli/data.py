"""``unetseg data check``: every problem of a dataset in one table."""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING

import click

from unetseg.cli.common import FILE, OVERWRITE_JSON, config_option, json_target, run_command, write_json

if TYPE_CHECKING:
    from unetseg.config import DataConfig

FOLDER = click.Path(exists=True, file_okay=False, path_type=Path)
DATASET = click.Path(exists=True, path_type=Path)


def data_from_arguments(data: Path | None, images: Path | None, masks: Path | None) -> DataConfig:
    """The data section DATA (a folder pair's parent, an nnU-Net or Decathlon dataset folder,
    a CSV manifest) or --images/--masks describe, as the dataset itself says (shared by
    ``data check`` and ``init``)."""
    from unetseg.data.io import DataError
    from unetseg.data.layouts import detect_data

    if (data is None) == (images is None) or (images is None) != (masks is None):
        raise click.UsageError("give DATA (a dataset folder or a CSV manifest), or --images with --masks")
    try:
        return detect_data(data, images, masks)
    except DataError as err:
        if data is not None and data.is_dir() and not (data / "dataset.json").exists():
            raise click.UsageError(str(err)) from None  # a folder without the image/mask subfolders
        raise click.ClickException(str(err)) from None


@click.group("data")
def data_group() -> None:
    """Inspect datasets."""


@data_group.command("check")
@click.argument("folder", required=False, type=DATASET)
@click.option("--images", type=FOLDER, help="Image folder (with --masks), instead of FOLDER.")
@click.option("--masks", type=FOLDER, help="Mask folder (with --images).")
@config_option("Check the config's data (folders, label_map, channels, split) instead.")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override a key of --config.")
@click.option("--json", "json_path", type=FILE, help="Also write the report as JSON.")
@OVERWRITE_JSON
@click.option("--brief", is_flag=True, help="Problems and class frequencies only, no per-image table.")
def check(
    folder: Path | None,
    images: Path | None,
    masks: Path | None,
    config_path: Path | None,
    overrides: tuple[str, ...],
    json_path: Path | None,
    overwrite: bool,
    brief: bool,
) -> None:
    """List every problem of image/mask pairs; exit code 1 if any is an error.

    FOLDER is a dataset: a folder holding an image subfolder (images/, image/ or imgs/) and a
    mask subfolder (masks/, mask/, labels/, label/ or gt/); an nnU-Net v2 or Decathlon dataset
    folder (with dataset.json, whose channels and labels are then used); or a CSV manifest
    (image,mask[,split] per row). Without --config, folder masks are read with the default
    label map (0 = background, any other value = foreground).
    """
    from unetseg.config import load_config
    from unetseg.data.check import check_dataset

    sources = sum([folder is not None, images is not None or masks is not None, config_path is not None])
    if sources != 1 or (images is None) != (masks is None):
        raise click.UsageError("give exactly one of FOLDER, --images with --masks, or --config")
    if config_path is not None:
        data = run_command(load_config, config_path, list(overrides)).data
    else:
        data = data_from_arguments(folder, images, masks)
    json_target(json_path, overwrite)  # before the check, which reads every file
    report = check_dataset(data)
    click.echo(report.format(per_image=not brief))
    if json_path is not None:
        write_json(json_path, report.to_dict(), overwrite)
    if report.fatal:
        sys.exit(1)


def check_before_training(data: DataConfig) -> None:
    """``unetseg train``'s first step: stop with the problems table on an error, and sum the
    warnings up in one line (a set with 500 empty masks should not print 500 lines)."""
    from unetseg.data.check import check_dataset
    from unetseg.training.distributed import is_main

    report = run_command(check_dataset, data)
    run_command(report.raise_if_fatal)
    if report.warnings and is_main():
        kinds = Counter(p.kind for p in report.warnings)
        shown = ", ".join(f"{kind}: {n}" for kind, n in kinds.items())
        click.echo(f"data check: {len(report.warnings)} warning(s) ({shown}); unetseg data check lists them")
