"""``unetseg info`` and ``unetseg export``: look into a checkpoint, or export it for use
without unetseg. torch is imported inside the commands so ``--help`` stays fast."""

from __future__ import annotations

from pathlib import Path

import click

from unetseg.cli.common import FILE, OVERWRITE_JSON, json_target, run_command, size_option, write_json
from unetseg.cli.runs import CHECKPOINT


@click.command()
@click.argument("checkpoint", type=CHECKPOINT)
@size_option((512, 512), "Input size for the FLOP count.")
@click.option("--json", "json_path", type=FILE, help="Also write everything as JSON.")
@OVERWRITE_JSON
def info(checkpoint: Path, size: tuple[int, int], json_path: Path | None, overwrite: bool) -> None:
    """Config, parameters, FLOPs, per-level widths and skips, and training metrics of a checkpoint."""
    from unetseg.models.checkpoint import load_model, non_finite_message
    from unetseg.models.info import format_info, model_info

    json_target(json_path, overwrite)
    model, cfg, state = run_command(load_model, checkpoint, "cpu", allow_non_finite=True)
    summary = model_info(model, cfg, state, size)
    click.echo(format_info(summary))
    if summary["non_finite_tensors"]:  # shown, so the run can be inspected, but flagged last, where it is read
        click.echo(f"warning: {non_finite_message(checkpoint, summary['non_finite_tensors'])}", err=True)
    if json_path is not None:
        write_json(json_path, {"checkpoint": str(checkpoint), **summary}, overwrite)


@click.command("export")
@click.option("--checkpoint", required=True, type=CHECKPOINT, help="Checkpoint file or run folder.")
@click.option("--format", "fmt", required=True, type=click.Choice(["onnx", "torchscript"]))
@click.option("--out", required=True, type=FILE, help="File to write (.onnx / .pt).")
@size_option((256, 256), "Example input size for tracing; the exported model takes any batch, height and width.")
@click.option("--overwrite", is_flag=True, help="Replace --out if it exists.")
def export_cmd(checkpoint: Path, fmt: str, out: Path, size: tuple[int, int], overwrite: bool) -> None:
    """Export a checkpoint to ONNX or TorchScript (input: image, N x C x H x W; output: logits)."""
    from unetseg.inference.export import ExportError, describe, export_model
    from unetseg.models.checkpoint import load_model

    model, cfg, _ = run_command(load_model, checkpoint, "cpu")
    try:
        result = export_model(model, cfg, out, fmt, size, overwrite)
    except (ExportError, FileExistsError) as err:
        raise click.ClickException(str(err)) from None
    click.echo(describe(result, fmt))
