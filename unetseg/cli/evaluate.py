"""``unetseg evaluate``: a checkpoint's metrics on its validation split or a labelled folder,
and with ``--report`` the failure gallery, worst image first."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import click

from unetseg.cli.common import (
    FILE,
    OVERWRITE_JSON,
    config_option,
    json_target,
    make_output_dir,
    note_skipped,
    run_command,
    write_json,
)
from unetseg.cli.inference import InferenceChoice, inference_options, load_predictor
from unetseg.config import Config, load_config

if TYPE_CHECKING:
    import numpy as np

    from unetseg.data import SegmentationDataset
    from unetseg.data.io import Sample


@click.command()
@inference_options
@config_option("Config whose data and split to use (default: the checkpoint's own).")
@click.option(
    "--set",
    "overrides",
    multiple=True,
    metavar="KEY=VALUE",
    help="Override a key of --config (its data and eval sections; inference is set by the options above).",
)
@click.option("--split", type=click.Choice(["val", "train", "all"]), default="val", show_default=True)
@click.option(
    "--json",
    "json_path",
    type=FILE,
    help="Write metrics (mean and per image) as JSON.",
)
@OVERWRITE_JSON
@click.option(
    "--images",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Evaluate on every pair of this folder and --masks instead (e.g. a test split).",
)
@click.option("--masks", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--detail", is_flag=True, help="Add boundary F1 (1, 2 px), HD95, clDice and skeleton recall.")
@click.option(
    "--report",
    "report_path",
    type=FILE,
    help="Write one self-contained HTML page: per-image scores worst first, each image with its truth, "
    "prediction and error overlay.",
)
def evaluate(
    checkpoint: Path,
    choice: InferenceChoice,
    config_path: Path | None,
    overrides: tuple[str, ...],
    split: str,
    json_path: Path | None,
    overwrite: bool,
    images: Path | None,
    masks: Path | None,
    detail: bool,
    report_path: Path | None,
) -> None:
    """Metrics of a checkpoint on the validation split (or another split) of its data,
    or on a separate labelled folder (--images/--masks); --report shows the worst images."""
    from tqdm.auto import tqdm

    from unetseg.data import SegmentationDataset
    from unetseg.inference.evaluation import evaluate as run_evaluation

    if overrides and config_path is None:
        raise click.UsageError("--set changes --config's data and eval sections; give --config too")
    if (images is None) != (masks is None):
        raise click.UsageError("--images and --masks go together")
    for path in (json_path, report_path):
        if path is not None:
            make_output_dir(path.parent)  # before the evaluation, not after it
    if report_path is not None and os.path.lexists(report_path):
        raise click.ClickException(f"{report_path} already exists: remove it or choose another --report")
    json_target(json_path, overwrite)
    predictor, cfg = load_predictor(checkpoint, choice)
    if config_path is not None:
        cfg = _matching_config(cfg, checkpoint, config_path, overrides)
    if images is not None:
        split = "all"
        for folder in (images, masks):
            note_skipped(folder)
        folders = {"layout": "folders", "root": None, "images": images, "masks": masks}
        cfg = cfg.model_copy(update={"data": cfg.data.model_copy(update=folders)})
    dataset = SegmentationDataset(run_command(_split_samples, cfg, split), cfg.data)
    predictions: dict[str, np.ndarray] = {}
    keep = predictions.__setitem__ if report_path is not None else None
    mean, rows = run_command(
        run_evaluation,
        predictor,
        dataset,
        cfg.eval.regions,
        lambda xs: tqdm(xs, desc="evaluate", disable=None),
        detail,
        keep,
    )
    width = max(len(k) for k in mean)
    click.echo(f"{split} split, {len(rows)} image(s):")
    for key, value in mean.items():
        click.echo(f"  {key:<{width}}  {value:.4f}")
    if json_path is not None:
        write_json(json_path, {"checkpoint": str(checkpoint), "split": split, "mean": mean, "images": rows}, overwrite)
    if report_path is not None:
        _write_gallery(report_path, checkpoint, cfg.name, split, dataset, predictions, mean, rows)


def _write_gallery(
    path: Path,
    checkpoint: Path,
    name: str,
    split: str,
    dataset: SegmentationDataset,
    predictions: dict[str, np.ndarray],
    mean: dict[str, float],
    rows: list[dict[str, object]],
) -> None:
    """The failure gallery of ``evaluate --report``, written by rename (never half a page)."""
    from unetseg.atomic import replace_by_rename
    from unetseg.inference.evaluation import gallery_items
    from unetseg.report.gallery import render_gallery

    means = ", ".join(f"{k} {v:.4f}" for k, v in mean.items())
    intro = f"Model {checkpoint}, {split} split, {len(rows)} image(s). Means: {means}."
    page = render_gallery(f"Where {name} fails", intro, gallery_items(dataset, predictions, rows))
    try:
        replace_by_rename(path, lambda tmp: tmp.write_text(page))
    except OSError as err:
        raise click.ClickException(f"cannot write {path}: {err.strerror}") from None
    click.echo(f"wrote {path}")


def _matching_config(model_cfg: Config, checkpoint: Path, config_path: Path, overrides: tuple[str, ...]) -> Config:
    """``--config``'s settings, refused when its data differ from what the model was trained on."""
    from unetseg.inference.predictor import INPUT_KEYS, data_differences

    cfg = run_command(load_config, config_path, list(overrides))
    diffs = data_differences(model_cfg.data, cfg.data, tuple(k for k in INPUT_KEYS if k != "slice_axis"))
    if diffs:
        raise click.ClickException(
            f"{config_path} does not describe the data {checkpoint} was trained on: data.{'; data.'.join(diffs)} "
            "(channels, classes, label map and normalisation must match the model's)"
        )
    return cfg


def _split_samples(cfg: Config, split: str) -> list[Sample]:
    from unetseg.data.layouts import labelled_samples, split_data

    if split == "all":
        return labelled_samples(cfg.data)
    train_pairs, val_pairs = split_data(cfg.data)
    return val_pairs if split == "val" else train_pairs
