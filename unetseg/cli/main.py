"""The ``unetseg`` command group: one module per command group registers its commands here."""

from __future__ import annotations

import click

from unetseg.cli.ablate import ablate, analyze_skips_cmd
from unetseg.cli.data import data_group
from unetseg.cli.evaluate import evaluate
from unetseg.cli.init import init_cmd
from unetseg.cli.model import export_cmd, info
from unetseg.cli.postprocess import postprocess_cmd
from unetseg.cli.predict import predict
from unetseg.cli.studies import analyze_blocks_cmd, analyze_gradients_cmd
from unetseg.cli.train import train


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="unetseg")
def main() -> None:
    """U-Net segmentation with configurable skip connections."""


for command in (
    train,
    predict,
    evaluate,
    postprocess_cmd,
    ablate,
    analyze_skips_cmd,
    info,
    export_cmd,
    data_group,
    init_cmd,
    analyze_gradients_cmd,
    analyze_blocks_cmd,
):
    main.add_command(command)
