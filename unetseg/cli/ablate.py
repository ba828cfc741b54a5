"""``unetseg ablate`` and ``unetseg analyze-skips``: the skip ablation grid and the test-time
knock-out of a trained model's skips."""

from __future__ import annotations

from pathlib import Path

import click

from unetseg.cli.common import FILE, FOLDER_OUT, config_option, make_output_dir, run_command
from unetseg.cli.runs import CHECKPOINT
from unetseg.config import read_yaml


def _names(ctx: click.Context, param: click.Parameter, value: str | None) -> list[str] | None:
    """``a,b`` -> ``["a", "b"]``."""
    return None if value is None else [name.strip() for name in value.split(",") if name.strip()]


def _seeds(ctx: click.Context, param: click.Parameter, value: str | None) -> list[int] | None:
    """``0,1`` -> ``[0, 1]``."""
    try:
        return None if value is None else [int(seed) for seed in _names(ctx, param, value) or []]
    except ValueError:
        raise click.BadParameter(f"{value!r}: expected seeds such as 0,1") from None


def _spec_file(config_path: Path | None, base_path: Path | None, out: Path | None, quick: bool) -> Path:
    """The spec file the runs are addressed through: ``<out>/ablation.yaml`` for ``--base`` (made
    the first time, reused after), the ``--config`` file itself, or a copy of it beside the runs
    where ``--out`` or ``--quick`` move them."""
    from unetseg.ablation import load_spec
    from unetseg.ablation.standard import base_spec_file
    from unetseg.config import load_config

    if base_path is not None:
        name = run_command(load_config, base_path).name
        output_dir = out or Path(f"runs/ablation_{name}{'_quick' if quick else ''}")
        make_output_dir(output_dir)
        spec_path, lines = run_command(base_spec_file, base_path, output_dir)
        if quick:
            smoke = run_command(load_spec, spec_path, quick)
            lines.append(
                f"--quick: {smoke.budget.epochs} epoch(s) x {smoke.budget.samples_per_epoch} crops a run, "
                f"seeds {smoke.seeds}: a smoke test of the pipeline, not the budget above"
            )
        for line in lines:
            click.echo(line)
        return spec_path
    assert config_path is not None
    spec = run_command(load_spec, config_path, quick)
    if out is None and not quick:
        return config_path
    output_dir = out or Path(f"{spec.output_dir}_quick")
    import yaml

    make_output_dir(output_dir)
    tree = read_yaml(config_path, "ablation config")
    tree.update(output_dir=str(output_dir), results_dir=str(output_dir), base=str(spec.base))
    if spec.evaluate is not None:  # its folders as found from the spec's own place
        tree["evaluate"] = spec.evaluate.model_dump(mode="json")
    spec_path = output_dir / "ablation.yaml"
    spec_path.write_text(yaml.safe_dump(tree, sort_keys=False))
    return spec_path


@click.command()
@config_option("Ablation YAML (or --base).")
@click.option(
    "--base",
    "base_path",
    type=FILE,
    help="A training config (e.g. one `unetseg init` wrote): run its standard skip variants (reference, add, "
    "none, gated, shallow-only, deep-only, plain-encoder) under its own budget, fixed as crops in "
    "<out>/ablation.yaml the first time and reused after.",
)
@click.option(
    "--variants",
    callback=_names,
    help="Comma-separated variants to run, e.g. concat,none (the reference always runs).",
)
@click.option("--seeds", callback=_seeds, help="Comma-separated seeds to run, e.g. 0,1.")
@click.option("--quick", is_flag=True, help="Tiny budget and one seed: a smoke test of the whole pipeline.")
@click.option(
    "--workers", type=click.IntRange(1), default=1, show_default=True, help="Runs trained in parallel processes."
)
@click.option("--devices", help="Comma-separated devices assigned round-robin to runs, e.g. cuda:0,cuda:1.")
@click.option(
    "--out",
    type=FOLDER_OUT,
    help="Folder for checkpoints, results and report (overrides output_dir and results_dir; "
    "with --base default runs/ablation_<base name>).",
)
@click.option(
    "--report-only",
    is_flag=True,
    help="Rebuild the report from the stored results alone: no training; runs not finished yet are listed in it.",
)
@click.option(
    "--executor",
    type=click.Choice(["pool", "local", "slurm"]),
    default="pool",
    show_default=True,
    help="pool: processes of this command; local: submitit subprocesses; slurm: a SLURM array job "
    "(--workers: runs at once).",
)
@click.option("--slurm-partition", help="SLURM partition of each run.")
@click.option("--slurm-time", type=click.IntRange(1), default=60, show_default=True, help="Minutes each run may take.")
@click.option("--slurm-gpus", type=click.IntRange(0), default=0, show_default=True, help="GPUs per run.")
@click.option("--slurm-cpus", type=click.IntRange(1), default=2, show_default=True, help="CPU cores per run.")
def ablate(
    config_path: Path | None,
    base_path: Path | None,
    variants: list[str] | None,
    seeds: list[int] | None,
    quick: bool,
    workers: int,
    devices: str | None,
    out: Path | None,
    report_only: bool,
    executor: str,
    slurm_partition: str | None,
    slurm_time: int,
    slurm_gpus: int,
    slurm_cpus: int,
) -> None:
    """Train every skip variant under one budget and write report.html/.md/.json.

    --config runs an ablation YAML; --base runs the standard skip variants of a training
    config, 3 seeds each. Finished runs (their results in results_dir) are reused while their
    config is unchanged, and interrupted ones resumed, when the command is run again.
    """
    from unetseg.ablation import build_report, load_spec, run_ablation, stored_results
    from unetseg.ablation.runner import SlurmOptions
    from unetseg.ablation.spec import narrowed
    from unetseg.meter import progress_bar

    if (config_path is None) == (base_path is None):
        raise click.UsageError("pass exactly one of --config (an ablation YAML) and --base (a training config)")
    spec_path = _spec_file(config_path, base_path, out, quick)
    missing: list[str] = []
    if report_only:
        spec = run_command(narrowed, run_command(load_spec, spec_path, quick), variants, seeds)
        results, missing = run_command(stored_results, spec)
        if not results:
            raise click.ClickException(f"no finished runs in {spec.report_dir / 'results'}: run the ablation first")
        for line in missing:
            click.echo(f"missing: {line}", err=True)
    else:
        device_list = devices.split(",") if devices else None
        try:
            slurm = SlurmOptions(slurm_partition, slurm_time, slurm_gpus, slurm_cpus)
            with progress_bar("ablate", "run") as meter:
                args = (spec_path, quick, workers, device_list, meter.write, meter, executor, slurm, variants, seeds)
                spec, results = run_command(run_ablation, *args)
        except RuntimeError as err:
            raise click.ClickException(str(err)) from None
    make_output_dir(spec.report_dir)
    paths = build_report(spec, results, spec.report_dir, missing)
    click.echo(f"report: {paths['html']} (also {paths['md'].name}, {paths['json'].name})")


@click.command("analyze-skips")
@click.option("--checkpoint", required=True, type=CHECKPOINT, help="Checkpoint file or run folder.")
@config_option("Config whose data and split to use (default: the checkpoint's own).")
@click.option("--out", required=True, type=FOLDER_OUT, help="Report folder.")
@click.option("--device", default="auto", show_default=True)
def analyze_skips_cmd(checkpoint: Path, config_path: Path | None, out: Path, device: str) -> None:
    """Knock each long skip of a trained U-Net out at test time and measure what it carried."""
    from unetseg.config import load_config
    from unetseg.meter import progress_bar
    from unetseg.studies.skips import analyze_skips

    cfg = run_command(load_config, config_path) if config_path else None
    make_output_dir(out)
    try:
        with progress_bar("analyze-skips", "measurement") as meter:
            paths = run_command(analyze_skips, checkpoint, out, cfg, device, meter=meter)
    except ValueError as err:
        raise click.ClickException(str(err)) from None
    click.echo(f"report: {paths['html']} (also {paths['md'].name}, {paths['json'].name})")
