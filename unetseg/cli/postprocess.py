"""``unetseg postprocess``: choose a finished run's post-processing again on its validation
images, as nnU-Net's ``nnUNetv2_determine_postprocessing`` does apart from training. For a run
trained with ``train.postprocess: off``, or one whose choice was made before it was measured on
the predictions ``predict`` makes (test-time augmentation included)."""

from __future__ import annotations

from pathlib import Path

import click

from unetseg.cli.common import run_command
from unetseg.cli.inference import InferenceChoice, load_predictor
from unetseg.cli.runs import CHECKPOINT


@click.command("postprocess")
@click.option("--checkpoint", required=True, type=CHECKPOINT, help="Checkpoint file or run folder.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
def postprocess_cmd(checkpoint: Path, device: str) -> None:
    """Choose the post-processing (fill holes, keep the largest component, drop small
    components) on the checkpoint's validation images, predicted as ``predict`` predicts, and
    write it into the checkpoint, where ``predict`` and ``evaluate`` apply it."""
    from unetseg.data import SegmentationDataset
    from unetseg.data.layouts import split_data
    from unetseg.training.postprocess_choice import choose_for_run

    predictor, cfg = load_predictor(checkpoint, InferenceChoice(None, None, None, None, None, device))
    _, val_pairs = run_command(split_data, cfg.data)
    if not val_pairs:
        raise click.ClickException(
            f"{checkpoint} was trained without a validation split (data.split): post-processing is chosen on "
            "validation images, and scoring it on training images would keep whatever the network learnt by heart"
        )
    run_command(choose_for_run, checkpoint, predictor, SegmentationDataset(val_pairs, cfg.data), click.echo)
