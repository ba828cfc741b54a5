"""The ``unetseg`` command line. torch is imported inside each command so ``--help`` is fast."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import click

from unetseg.config import ConfigError, load_config

INFERENCE_MODES = ["auto", "whole", "sliding"]
TTA = ["none", "flips", "d4"]


def _user_errors():
    """Errors that are the user's input, shown as one line without a traceback."""
    from unetseg.checkpoint import CheckpointError
    from unetseg.data.io import DataError
    from unetseg.training import TrainingError

    return (ConfigError, DataError, CheckpointError, TrainingError, FileExistsError)


def _run(fn, *args, **kwargs):
    try:
        return fn(*args, **kwargs)
    except _user_errors() as err:
        if os.environ.get("RANK", "0") != "0":  # under torchrun every rank meets it; rank 0 says it once
            sys.exit(1)
        raise click.ClickException(str(err)) from None


def _output_dir(path: Path) -> Path:
    """Create an output folder before any work, so that a path under a file or in a read-only
    place is one message up front rather than a traceback after the work."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise click.ClickException(f"cannot write to output directory {path}: {err.strerror}") from None
    return path


def _note_skipped(folder: Path) -> None:
    """One note per entry of an input folder that is not read (a .gif, a .npy, a sub-folder,
    a broken link), so nothing is left out without a word."""
    from unetseg.data.io import skipped_entries

    for entry, why in skipped_entries(folder):
        click.echo(f"note: skipped {entry}: {why}", err=True)


def _write_json(path: Path, payload: object) -> None:
    """What ``--json`` writes; NaN metrics become null, so the file is valid JSON."""
    from unetseg.report import json_safe

    _output_dir(path.parent)
    try:
        path.write_text(json.dumps(json_safe(payload), indent=2))
    except OSError as err:
        raise click.ClickException(f"cannot write {path}: {err.strerror}") from None
    click.echo(f"wrote {path}")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="unetseg")
def main() -> None:
    """U-Net segmentation with configurable skip connections."""


@main.command()
@click.option("--config", "config_path", required=True, type=click.Path(dir_okay=False, path_type=Path), help="YAML config.")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override a config key, e.g. train.epochs=5.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), help="Output directory (overrides output_dir).")
@click.option("--resume", is_flag=True, help="Continue the run in the output directory from its last checkpoint.")
@click.option("--folds", type=click.IntRange(2), help="k-fold cross-validation: train folds 0..K-1 (contiguous blocks) "
              "into OUTPUT_DIR/fold<i>/, then write OUTPUT_DIR/cv_summary.json.")
@click.option("--no-check", is_flag=True, help="Skip the dataset check (unetseg data check) before training.")
@click.option("--yes", is_flag=True, help="Go on without asking when a run on the CPU is expected to take over an hour.")
def train(config_path: Path, overrides: tuple[str, ...], out: Path | None, resume: bool, folds: int | None,
          no_check: bool, yes: bool) -> None:
    """Train a model; writes checkpoints, config.yaml and metrics.csv to the output directory.

    The data are checked first (as by unetseg data check); an error stops with the table.
    After the first steps the expected duration is printed; a run on the CPU expected to take
    over an hour (a config meant for a GPU) goes on only with --yes, after a yes at the prompt,
    or when stdin is not a terminal.
    """
    from unetseg.cli_data import check_before_training
    from unetseg.cli_train import long_cpu_run_check
    from unetseg.training import Trainer
    from unetseg.training.crossval import fold_config, format_summary, train_folds

    cfg = _run(load_config, config_path, list(overrides) + ([f"output_dir={out}"] if out else []))
    if not no_check:
        check_before_training((fold_config(cfg, folds, 0) if folds else cfg).data)
    approve = long_cpu_run_check(config_path, cfg, yes)
    if folds:
        result = _run(train_folds, cfg, folds, resume, click.echo, approve)
        click.echo(f"{folds}-fold cross-validation, validation metrics at each fold's best epoch:\n{format_summary(result)}")
        click.echo(f"wrote {Path(cfg.output_dir) / 'cv_summary.json'}")
        return
    summary = _run(Trainer(cfg, resume=resume, log=click.echo, approve=approve).fit)
    if os.environ.get("RANK", "0") == "0":
        click.echo(
            f"done: best {cfg.train.monitor} {summary['best_' + cfg.train.monitor]} at epoch {summary['best_epoch']}; "
            f"checkpoint {summary['best_checkpoint']}"
        )


def _predictor(checkpoint: Path, device: str, mode: str | None, tta: str | None, roi_size: int | None,
               overlap: float | None, threshold: float | None = None):
    from unetseg.checkpoint import load_model
    from unetseg.inference import Predictor
    from unetseg.runtime import select_device

    dev = _run(select_device, device)
    model, cfg, _ = _run(load_model, checkpoint, dev)
    options = {"mode": mode, "tta": tta, "roi_size": roi_size, "overlap": overlap, "threshold": threshold}
    changes = {k: v for k, v in options.items() if v is not None}
    inference = cfg.inference.model_copy(update=changes)
    return Predictor(model, inference, cfg.data.num_classes, dev), cfg


def _newest_checkpoint(config_path: Path | None) -> Path:
    """The model predict uses when given none, announced on the first line of its output."""
    from unetseg.runs import finished_checkpoints

    root = Path(_run(load_config, config_path).output_dir) if config_path else Path("runs")
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


def _inference_options(fn, ensemble: bool = False):
    checkpoint = click.option(  # predict (the ensemble) falls back on the newest run; evaluate names its model
        "--checkpoint", "checkpoints" if ensemble else "checkpoint", required=not ensemble, multiple=ensemble,
        type=click.Path(dir_okay=False, path_type=Path),
        help="Checkpoint (default: best.pt of the newest run under ./runs, or under --config's output_dir); "
        "repeat it to average the class probabilities of several models." if ensemble else None,
    )
    for option in reversed(
        [
            checkpoint,
            click.option("--mode", type=click.Choice(INFERENCE_MODES), help="Whole image or sliding window (default: config)."),
            click.option("--tta", type=click.Choice(TTA), help="Test-time augmentation (default: config)."),
            click.option("--roi-size", type=click.IntRange(16), help="Sliding-window size."),
            click.option("--overlap", type=click.FloatRange(0, 1, max_open=True), help="Sliding-window overlap."),
            click.option("--threshold", type=click.FloatRange(0, 1, min_open=True, max_open=True),
                         help="Foreground probability above which a pixel is foreground (binary models; default: config)."),
            click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N."),
        ]
    ):
        fn = option(fn)
    return fn


def _ensemble_options(fn):
    return _inference_options(fn, ensemble=True)


@main.command()
@click.argument("inputs", type=click.Path(exists=True, path_type=Path))
@_ensemble_options
@click.option("--config", "config_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Without --checkpoint: take the newest run under this config's output_dir instead of ./runs.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path),
              help="Folder for the masks (default: <run>/predictions/<input folder name or image stem>).")
@click.option("--prob", is_flag=True, help="Also write foreground probabilities as float32 TIFF (NIfTI for volumes).")
@click.option("--overwrite", is_flag=True, help="Replace masks that already exist in the output folder.")
@click.option("--overlay", is_flag=True, help="Also write <stem>_overlay.png: the image with the predicted contours.")
@click.option("--masks", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Ground-truth folder (paired by name): overlays colour false positives and false negatives instead.")
def predict(inputs: Path, checkpoints: tuple[Path, ...], mode, tta, roi_size, overlap, threshold, device: str,
            config_path: Path | None, out: Path | None, prob: bool, overwrite: bool, overlay: bool, masks: Path | None) -> None:
    """Segment an image or every image in a folder (any size); masks keep the input names.

    Without --checkpoint the model is the newest finished run's best.pt under ./runs (or under
    --config's output_dir), and without --out the masks go to that run's
    predictions/<input folder name> (<image stem> for one image).

    A 3D volume (.nii, .nii.gz, or a DICOM series folder) is segmented slice by slice along the
    checkpoint's data.slice_axis and written as one NIfTI volume with the input's affine and
    header (DICOM input: NIfTI output).

    Several --checkpoint options make an ensemble: their class probabilities are averaged.
    """
    from tqdm.auto import tqdm

    from unetseg.data import attach_masks
    from unetseg.data.intensity import Normalization
    from unetseg.data.io import DataError
    from unetseg.data.layouts import find_inputs
    from unetseg.inference import ensemble_of, predict_samples
    from unetseg.runs import predictions_folder

    if masks is not None and not overlay:
        raise click.UsageError("--masks is the ground truth for --overlay; add --overlay")
    if checkpoints and config_path is not None:
        raise click.UsageError("--config only says where to look for the newest run; with --checkpoint, leave it out")
    if len(checkpoints) > 1 and out is None:
        raise click.UsageError("several --checkpoint make an ensemble, which belongs to no one run: give --out for its masks")
    checkpoints = checkpoints or (_newest_checkpoint(config_path),)
    out = out or predictions_folder(checkpoints[0], inputs)
    members = [(path, *_predictor(path, device, mode, tta, roi_size, overlap, threshold)) for path in checkpoints]
    predictor = _run(ensemble_of, [(path, member, member_cfg.data) for path, member, member_cfg in members])
    cfg = members[0][2]
    samples = _run(find_inputs, inputs, cfg.data)  # an nnU-Net imagesTs folder: one sample per case
    if inputs.is_dir():
        _note_skipped(inputs)
    if masks is not None:
        samples = _run(attach_masks, samples, masks)
        unpaired = sum(sample.mask is None for sample in samples)
        if unpaired:
            click.echo(f"note: {unpaired} image(s) have no mask in {masks}; their overlays show contours", err=True)
    try:
        report = predict_samples(
            predictor, samples, out, cfg.data.channels, Normalization.of(cfg.data), cfg.data.label_map, prob, overwrite,
            progress=lambda xs: tqdm(xs, desc="predict", disable=None), overlay=overlay,
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
        click.echo(f"{len(report.failed)} input(s) failed and {report.masks} mask(s) were written; predict the failed "
                   "inputs on their own, or pass --overwrite to redo the folder", err=True)
        sys.exit(1)


@main.command()
@_inference_options
@click.option("--config", "config_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Config whose data and split to use (default: the checkpoint's own).")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override a key of --config (its data and eval sections; inference is set by the options above).")
@click.option("--split", type=click.Choice(["val", "train", "all"]), default="val", show_default=True)
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path), help="Write metrics (mean and per image) as JSON.")
@click.option("--images", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Evaluate on every pair of this folder and --masks instead (e.g. a test split).")
@click.option("--masks", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--detail", is_flag=True, help="Add boundary F1 (1, 2 px), HD95, clDice and skeleton recall.")
def evaluate(checkpoint: Path, mode, tta, roi_size, overlap, threshold, device: str, config_path: Path | None,
             overrides: tuple[str, ...], split: str, json_path: Path | None, images: Path | None, masks: Path | None,
             detail: bool) -> None:
    """Metrics of a checkpoint on the validation split (or another split) of its data,
    or on a separate labelled folder (--images/--masks)."""
    from tqdm.auto import tqdm

    from unetseg.data import SegmentationDataset, split_samples
    from unetseg.data.layouts import labelled_samples
    from unetseg.evaluation import evaluate as run_evaluation
    from unetseg.inference import INPUT_KEYS, data_differences

    if overrides and config_path is None:
        raise click.UsageError("--set changes --config's data and eval sections; give --config too")
    if json_path is not None:
        _output_dir(json_path.parent)  # before the evaluation, not after it
    predictor, cfg = _predictor(checkpoint, device, mode, tta, roi_size, overlap, threshold)
    if config_path is not None:
        model_data, cfg = cfg.data, _run(load_config, config_path, list(overrides))
        diffs = data_differences(model_data, cfg.data, tuple(k for k in INPUT_KEYS if k != "slice_axis"))
        if diffs:
            raise click.ClickException(
                f"{config_path} does not describe the data {checkpoint} was trained on: data.{'; data.'.join(diffs)} "
                "(channels, classes, label map and normalisation must match the model's)"
            )

    if (images is None) != (masks is None):
        raise click.UsageError("--images and --masks go together")
    if images is not None:
        split = "all"
        for folder in (images, masks):
            _note_skipped(folder)
        folders = {"layout": "folders", "root": None, "images": images, "masks": masks}
        cfg = cfg.model_copy(update={"data": cfg.data.model_copy(update=folders)})

    def pairs():
        all_pairs = labelled_samples(cfg.data)
        train_pairs, val_pairs = split_samples(all_pairs, cfg.data.split, cfg.data)
        return {"val": val_pairs, "train": train_pairs, "all": all_pairs}[split]

    dataset = SegmentationDataset(_run(pairs), cfg.data)
    mean, rows = _run(run_evaluation, predictor, dataset, cfg.eval.regions,
                      lambda xs: tqdm(xs, desc="evaluate", disable=None), detail)
    width = max(len(k) for k in mean)
    click.echo(f"{split} split, {len(rows)} image(s):")
    for key, value in mean.items():
        click.echo(f"  {key:<{width}}  {value:.4f}")
    if json_path is not None:
        _write_json(json_path, {"checkpoint": str(checkpoint), "split": split, "mean": mean, "images": rows})


# Commands kept in their own modules (cli.py holds the training and prediction pipeline).
from unetseg.cli_ablate import ablate, analyze_skips_cmd  # noqa: E402
from unetseg.cli_analysis import analyze_blocks_cmd, analyze_gradients_cmd  # noqa: E402
from unetseg.cli_data import data_group  # noqa: E402
from unetseg.cli_init import init_cmd  # noqa: E402
from unetseg.cli_model import export_cmd, info  # noqa: E402

main.add_command(ablate)
main.add_command(analyze_skips_cmd)
main.add_command(info)
main.add_command(export_cmd)
main.add_command(data_group)
main.add_command(init_cmd)
main.add_command(analyze_gradients_cmd)
main.add_command(analyze_blocks_cmd)


if __name__ == "__main__":
    main()
