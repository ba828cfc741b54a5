"""The inference options ``predict`` and ``evaluate`` share (checkpoint, mode, test-time
augmentation, windows, threshold, device, post-processing), and the predictor they make."""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import click

from unetseg.cli.common import run_command
from unetseg.cli.runs import CHECKPOINT
from unetseg.config import Config, InferenceConfig
from unetseg.config.base import field_choices

if TYPE_CHECKING:
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


def load_predictor(checkpoint: Path, choice: InferenceChoice) -> tuple[Predictor, Config]:
    from unetseg.inference.predictor import Predictor
    from unetseg.models.checkpoint import load_model
    from unetseg.runtime import select_device

    dev = run_command(select_device, choice.device)
    model, cfg, _ = run_command(load_model, checkpoint, dev)
    inference = cfg.inference.model_copy(update=choice.changes())
    return Predictor.of(model, cfg, dev, inference), cfg


def inference_options(command: Callable[..., None], ensemble: bool = False) -> Callable[..., None]:
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
        type=CHECKPOINT,
        help="Checkpoint or run folder (default: best.pt of the newest run under ./runs, or under --config's output_dir); "
        "repeat it to average the class probabilities of several models."
        if ensemble
        else "Checkpoint file or run folder.",
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


def ensemble_options(command: Callable[..., None]) -> Callable[..., None]:
    return inference_options(command, ensemble=True)
