"""``unetseg predict``: a trained model (or an ensemble) on a folder of images or volumes,
masks written beside nothing the user had."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from unetseg.cli.common import FOLDER_OUT, config_option, note_skipped, run_command
from unetseg.cli.inference import InferenceChoice, ensemble_options, load_predictor
from unetseg.config import Config, load_config

if TYPE_CHECKING:
    from unetseg.data.io import Sample
    from unetseg.inference.predictor import Predictor


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


@click.command()
@click.argument("inputs", type=click.Path(exists=True, path_type=Path))
@ensemble_options
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
    members = [(path, *load_predictor(path, choice)) for path in checkpoints]
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
