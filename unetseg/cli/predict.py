"""``unetseg predict`` and ``unetseg evaluate``: a trained model (or an ensemble) on images,
with the inference options both share."""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import click

from unetseg.cli.common import (
    FILE,
    FOLDER_OUT,
    OVERWRITE_JSON,
    config_option,
    json_target,
    make_output_dir,
    note_skipped,
    run_command,
    write_json,
)
from unetseg.config import Config, InferenceConfig, load_config
from unetseg.config.base import field_choices

if TYPE_CHECKING:
    import numpy as np

    from unetseg.data import SegmentationDataset
    from unetseg.data.io import Sample
    from unetseg.inference.predictor import Predictor

INFERENCE_MODES = field_choices(InferenceConfig, "mode")
TTA = field_choices(InferenceConfig, "tta")


CONFIG_KEYS = ("mode", "tta", "roi_size", "overlap", "threshold")  # options that override inference.*
INFERENCE_KEYS = (*CONFIG_KEYS, "device", "no_postprocess")


@dataclass(frozen=True)
class InferenceChoice:
    """The inference options of ``predict`` and ``evaluate``: None keeps the checkpoint's own."""

    mode: str | None
    tta: str | None
    roi_size: int | None
    overlap: float | None
    threshold: float | None
    device: str
    no_postprocess: bool = False

    def changes(self) -> dict[str, object]:
        changes: dict[str, object] = {k: getattr(self, k) for k in CONFIG_KEYS if getattr(self, k) is not None}
        if self.no_postprocess:
            from unetseg.config import PostprocessConfig

            changes["postprocess"] = PostprocessConfig()
        return changes


def _predictor(checkpoint: Path, choice: InferenceChoice) -> tuple[Predictor, Config]:
    from unetseg.inference.predictor import Predictor
    from unetseg.models.checkpoint import load_model
    from unetseg.runtime import select_device

    dev = run_command(select_device, choice.device)
    model, cfg, _ = run_command(load_model, checkpoint, dev)
    inference = cfg.inference.model_copy(update=choice.changes())
    return Predictor.of(model, cfg, dev, inference), cfg


def _newest_checkpoint(config_path: Path | None) -> Path:
    """The model predict uses when given none, announced on the first line of its output."""
    from unetseg.cli.runs import finished_checkpoints

    root = Path(run_command(load_config, config_path).output_dir) if config_path else Path("runs")
    found = finished_checkpoints(root)
    if not found:
        command = f"unetseg train --config {config_path or 'configs/isbi_cpu.yaml'}"
        how_long = "" if config_path else " (about 8 minutes on a laptop CPU)"
        raise click.ClickException(
            f"no trained model in {root}/ (no run there has checkpoints/best.pt): train one first with "
            f"`{command}`{how_long}, or give --checkpoint"
        )
    click.echo(f"using {found[0]} (the newest finished run in {root}/)")
    return found[0]


def _inference_options(command: Callable[..., None], ensemble: bool = False) -> Callable[..., None]:
    """The checkpoint and inference options, handed to ``command`` as one ``choice``."""

    @functools.wraps(command)
    def fn(**kwargs: object) -> None:
        choice = InferenceChoice(**{key: kwargs.pop(key) for key in INFERENCE_KEYS})
        command(choice=choice, **kwargs)

    checkpoint = click.option(  # predict (the ensemble) falls back on the newest run; evaluate names its model
        "--checkpoint",
        "checkpoints" if ensemble else "checkpoint",
        required=not ensemble,
        multiple=ensemble,
        type=FILE,
        help="Checkpoint (default: best.pt of the newest run under ./runs, or under --config's output_dir); "
        "repeat it to average the class probabilities of several models."
        if ensemble
        else None,
    )
    for option in reversed(
        [
            checkpoint,
            click.option(
                "--mode", type=click.Choice(INFERENCE_MODES), help="Whole image or sliding window (default: config)."
            ),
            click.option("--tta", type=click.Choice(TTA), help="Test-time augmentation (default: config)."),
            click.option("--roi-size", type=click.IntRange(16), help="Sliding-window size."),
            click.option("--overlap", type=click.FloatRange(0, 1, max_open=True), help="Sliding-window overlap."),
            click.option(
                "--threshold",
                type=click.FloatRange(0, 1, min_open=True, max_open=True),
                help="Foreground probability above which a pixel is foreground (binary models; default: config).",
            ),
            click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N."),
            click.option(
                "--no-postprocess",
                is_flag=True,
                help="Skip the post-processing training chose on the validation images (inference.postprocess).",
            ),
        ]
    ):
        fn = option(fn)
    return fn


def _ensemble_options(command: Callable[..., None]) -> Callable[..., None]:
    return _inference_options(command, ensemble=True)


@click.command()
@click.argument("inputs", type=click.Path(exists=True, path_type=Path))
@_ensemble_options
@config_option("Without --checkpoint: take the newest run under this config's output_dir instead of ./runs.")
@click.option(
    "--out",
    type=FOLDER_OUT,
    help="Folder for the masks (default: <run>/predictions/<input folder name or image stem>).",
)
@click.option("--prob", is_flag=True, help="Also write foreground probabilities as float32 TIFF (NIfTI for volumes).")
@click.option("--overwrite", is_flag=True, help="Replace masks that already exist in the output folder.")
@click.option("--overlay", is_flag=True, help="Also write <stem>_overlay.png: the image with the predicted contours.")
@click.option(
    "--masks",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Ground-truth folder (paired by name): overlays colour false positives and false negatives instead.",
)
def predict(
    inputs: Path,
    checkpoints: tuple[Path, ...],
    choice: InferenceChoice,
    config_path: Path | None,
    out: Path | None,
    prob: bool,
    overwrite: bool,
    overlay: bool,
    masks: Path | None,
) -> None:
    """Segment an image or every image in a folder (any size); masks keep the input names.

    Without --checkpoint the model is the newest finished run's best.pt under ./runs (or under
    --config's output_dir), and without --out the masks go to that run's
    predictions/<input folder name> (<image stem> for one image).

    A 3D volume (.nii, .nii.gz, or a DICOM series folder) is segmented slice by slice along the
    checkpoint's data.slice_axis and written as one NIfTI volume with the input's affine and
    header (DICOM input: NIfTI output).

    Several --checkpoint options make an ensemble: their class probabilities are averaged.
    """
    from unetseg.cli.runs import predictions_folder
    from unetseg.inference.predictor import ensemble_of

    if masks is not None and not overlay:
        raise click.UsageError("--masks is the ground truth for --overlay; add --overlay")
    if checkpoints and config_path is not None:
        raise click.UsageError("--config only says where to look for the newest run; with --checkpoint, leave it out")
    if len(checkpoints) > 1 and out is None:
        raise click.UsageError(
            "several --checkpoint make an ensemble, which belongs to no one run: give --out for its masks"
        )
    if out is not None:
        _refuse_out_over_inputs(out, inputs)
    checkpoints = checkpoints or (_newest_checkpoint(config_path),)
    out = out or predictions_folder(checkpoints[0], inputs)
    members = [(path, *_predictor(path, choice)) for path in checkpoints]
    predictor = run_command(ensemble_of, [(path, member, member_cfg.data) for path, member, member_cfg in members])
    cfg = members[0][2]
    _write_predictions(predictor, _inputs(inputs, masks, cfg), out, cfg, prob, overwrite, overlay)


def _refuse_out_over_inputs(out: Path, inputs: Path) -> None:
    """Masks are named as their images, so ``--out`` at the input folder would replace the images
    (with ``--overwrite``); one inside it mixes masks into the inputs. Both are refused, flag or not."""
    folder = inputs.resolve() if inputs.is_dir() else inputs.resolve().parent
    target = out.resolve()
    if target == folder:
        what = "the input folder" if inputs.is_dir() else f"the folder of the input {inputs}"
        raise click.ClickException(
            f"--out {out} is {what}: the masks, named as the images, would replace them; choose another folder"
        )
    if inputs.is_dir() and folder in target.parents:
        raise click.ClickException(
            f"--out {out} is inside the input folder {inputs}: masks would be mixed into the images; "
            "choose a folder outside it"
        )


def _inputs(inputs: Path, masks: Path | None, cfg: Config) -> list[Sample]:
    """What predict reads: an image, a folder, or an nnU-Net imagesTs folder (one sample per
    case), with the ground truth for the overlays attached where given."""
    from unetseg.data import attach_masks
    from unetseg.data.layouts import find_inputs

    samples = run_command(find_inputs, inputs, cfg.data)
    if inputs.is_dir():
        note_skipped(inputs)
    if masks is not None:
        samples = run_command(attach_masks, samples, masks)
        unpaired = sum(sample.mask is None for sample in samples)
        if unpaired:
            click.echo(f"note: {unpaired} image(s) have no mask in {masks}; their overlays show contours", err=True)
    return samples


def _write_predictions(
    predictor: Predictor, samples: list[Sample], out: Path, cfg: Config, prob: bool, overwrite: bool, overlay: bool
) -> None:
    """Write the masks; every input that fails is named, and the command then exits 1."""
    from tqdm.auto import tqdm

    from unetseg.data.intensity import Normalization
    from unetseg.data.io import DataError
    from unetseg.inference.predictor import predict_samples

    try:
        report = predict_samples(
            predictor,
            samples,
            out,
            cfg.data.channels,
            Normalization.of(cfg.data),
            cfg.data.label_map,
            prob,
            overwrite,
            progress=lambda xs: tqdm(xs, desc="predict", disable=None),
            overlay=overlay,
        )
    except OSError as err:  # masks already there (no errno), or --out not writable: under a file, read-only, full
        why = str(err) if err.errno is None else f"cannot write to output directory {out}: {err.strerror}"
        raise click.ClickException(why) from None
    except DataError as err:  # two inputs planned onto one output
        raise click.ClickException(str(err)) from None
    click.echo(f"wrote {report.masks} mask(s) to {out}")
    for name, why in report.failed:
        click.echo(f"failed: {name}: {why}", err=True)
    if report.failed:
        click.echo(
            f"{len(report.failed)} input(s) failed and {report.masks} mask(s) were written; predict the failed "
            "inputs on their own, or pass --overwrite to redo the folder",
            err=True,
        )
        sys.exit(1)


@click.command()
@_inference_options
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
    predictor, cfg = _predictor(checkpoint, choice)
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
