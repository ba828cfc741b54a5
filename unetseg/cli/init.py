"""``unetseg init DATA --out my.yaml``: plan a config from the dataset and write it, every value
with its reason."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:
    from unetseg.planning import Fingerprint, Plan

from unetseg.cli.common import make_output_dir, run_command
from unetseg.cli.data import DATASET, FOLDER, data_from_arguments

GENERIC_NAMES = {"train", "training", "data", "dataset", "labelled", "labeled", "images", "imagestr"}
DURATION = re.compile(r"^\s*(?P<value>\d+(?:\.\d+)?)\s*(?P<unit>s|m|min|h)?\s*$")
WARNINGS_SHOWN = 2  # per kind of data check warning; data check lists them all
UNITS = {None: 1.0, "s": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0}


def parse_duration(ctx: click.Context, param: click.Parameter, value: str) -> float:
    """``480``, ``480s``, ``8m``, ``1.5h`` -> seconds."""
    match = DURATION.match(value)
    if match is None or float(match["value"]) <= 0:
        raise click.BadParameter(f"{value!r}: expected a positive duration such as 480, 480s, 8m or 1.5h")
    return float(match["value"]) * UNITS[match["unit"]]


def default_name(path: Path) -> str:
    """A run name from the dataset's path: its folder (or manifest) name, with the parent's
    when the name alone says nothing (``isbi2012_train`` for ``data/isbi2012/train``)."""
    path = path.resolve()
    name = path.stem if path.is_file() else path.name
    if name.lower() in GENERIC_NAMES and path.parent.name:
        name = f"{path.parent.name}_{name}"
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name) or "run"


DEVICES = ["auto", "cpu", "cuda"]


@click.command("init")
@click.argument("data", required=False, type=DATASET)
@click.option("--images", type=FOLDER, help="Image folder (with --masks), instead of DATA.")
@click.option("--masks", type=FOLDER, help="Mask folder (with --images).")
@click.option(
    "--out", required=True, type=click.Path(dir_okay=False, path_type=Path), help="The config to write (YAML)."
)
@click.option(
    "--budget",
    default="8m",
    show_default=True,
    callback=parse_duration,
    help="Training time budget: seconds, or minutes / hours (480, 8m, 1.5h).",
)
@click.option(
    "--device", type=click.Choice(DEVICES), default="auto", show_default=True, help="Plan for it (auto: a GPU if any)."
)
@click.option("--name", help="The run's name (default: from the dataset's folder).")
@click.option("--output-dir", help="The run's output folder (default: runs/<name>).")
@click.option("--overwrite", is_flag=True, help="Replace --out if it exists.")
def init_cmd(
    data: Path | None,
    images: Path | None,
    masks: Path | None,
    out: Path,
    budget: float,
    device: str,
    name: str | None,
    output_dir: str | None,
    overwrite: bool,
) -> None:
    """Plan a training config for a dataset and write it, with the reason for every value.

    DATA is a folder holding images/ and masks/ (or pass --images and --masks), an nnU-Net v2
    raw dataset folder (dataset.json, imagesTr, labelsTr), a Medical Segmentation Decathlon
    dataset folder, or a CSV manifest (image,mask[,split] per row). The dataset is read in
    place; its fingerprint (sizes, channels, intensities, mask values, the shape of what is
    labelled) and this machine choose the channels, label map, normalisation, split, network,
    crop, batch, loss and region measures, within --budget of training.
    """
    from unetseg.planning import detect_machine, plan_dataset

    if os.path.lexists(out) and not overwrite:  # lexists: a dangling link is something there too
        what = "a symbolic link" if out.is_symlink() else "a file"
        raise click.ClickException(f"{out}: {what} is already there; pass --overwrite to replace it")
    # absolute paths: the config then works from any folder, not only from the one init ran in
    data, images, masks = (path.absolute() if path is not None else None for path in (data, images, masks))
    data_cfg = data_from_arguments(data, images, masks)
    name = name or default_name(data if data is not None else images.parent)  # type: ignore[union-attr]
    output_dir = str(Path(output_dir or f"runs/{name}").absolute())
    source = str(data) if data is not None else f"--images {images} --masks {masks}"
    command = f"unetseg init {source} --budget {budget:g}s"
    plan, fingerprint = run_command(plan_dataset, data_cfg, budget, detect_machine(device), name, output_dir, command)
    _refuse_what_training_would(plan, fingerprint)
    make_output_dir(out.parent)
    from unetseg.atomic import replace_by_rename

    text = plan.render()
    try:  # by rename: a link at --out is replaced, never written through
        replace_by_rename(out, lambda tmp: tmp.write_text(text))
    except OSError as err:
        raise click.ClickException(f"cannot write {out}: {err.strerror}") from None
    model = plan.get("model.stem_stride", 1)
    if fingerprint.lossy_masks:
        click.echo(
            f"note: {fingerprint.lossy_masks} of the {fingerprint.measured} masks measured are JPEG (lossy); their edge "
            "halo was snapped to the two commonest values, as training will read them: save masks as PNG",
            err=True,
        )
    click.echo(
        f"wrote {out}: {plan.get('data.channels')} channel(s), crop {plan.get('augment.crop_size')}, "
        f"batch {plan.get('train.batch_size')}, stem stride {model}, regions {plan.get('eval.regions')}, "
        f"{budget:g} s budget\ntrain it with: unetseg train --config {out}"
    )


def _refuse_what_training_would(plan: Plan, fingerprint: Fingerprint) -> None:
    """The planned data section checked as ``data check`` would check it: its errors refuse the
    plan (a config its own check rejects is no plan), its warnings are printed in its words.
    Masks without any foreground are refused too: there is nothing to learn, and a run on them
    reports a perfect Dice."""
    from unetseg.data.check import check_plan

    report = check_plan(plan.config().data, fingerprint.measured_samples, fingerprint.samples)
    labelled = [s.class_pixels for s in report.stats if s.class_pixels is not None]
    if labelled and not any(sum(pixels[1:]) for pixels in labelled):
        report.add(
            "error", "empty masks", report.masks, f"none of the {len(labelled)} masks read has a foreground pixel"
        )
    if report.fatal:
        raise click.ClickException(
            f"no config written: data check would reject this dataset:\n{report.problem_table()}\n"
            "fix the data (unetseg data check lists every problem) and run init again"
        )
    kinds: dict[str, list] = {}
    for problem in report.warnings:
        kinds.setdefault(problem.kind, []).append(problem)
    for kind, problems in kinds.items():
        for problem in problems[:WARNINGS_SHOWN]:
            click.echo(f"warning: {kind}: {problem.path}: {problem.detail}", err=True)
        if len(problems) > WARNINGS_SHOWN:
            click.echo(
                f"warning: {kind}: {len(problems) - WARNINGS_SHOWN} more (unetseg data check lists them)", err=True
            )
