"""What every command shares: user errors as one line, output folders made before the work,
``--json`` files, and notes on skipped inputs. torch is imported inside functions, so ``--help``
stays fast.

A ``--json`` path is checked before the work: a file (or a symbolic link, dangling or not)
already there is refused unless ``--overwrite``, since the path may be anything the user typed,
the evaluated checkpoint included. The file is then written by rename (:mod:`unetseg.atomic`):
whole or not at all, and a link at the path is replaced, never written through.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from unetseg.config import ConfigError

T = TypeVar("T")
FILE = click.Path(dir_okay=False, path_type=Path)  # a file to read or write
FOLDER_OUT = click.Path(file_okay=False, path_type=Path)  # a folder that is created


def config_option(help: str, required: bool = False) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """``--config``, passed to the command as ``config_path``."""
    return click.option("--config", "config_path", required=required, type=FILE, help=help)


def size_option(default: tuple[int, int], help: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """``--size H W``."""
    return click.option(
        "--size", nargs=2, type=click.IntRange(1), default=default, show_default=True, metavar="H W", help=help
    )


def user_errors() -> tuple[type[Exception], ...]:
    """Errors that are the user's input, shown as one line without a traceback."""
    from unetseg.data.io import DataError
    from unetseg.models.checkpoint import CheckpointError
    from unetseg.training import TrainingError

    return (ConfigError, DataError, CheckpointError, TrainingError, FileExistsError)


def run_command(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """``fn(*args, **kwargs)``, with a user error turned into one message (said once, by rank 0, under torchrun)."""
    try:
        return fn(*args, **kwargs)
    except user_errors() as err:
        from unetseg.training.distributed import is_main

        if not is_main():
            sys.exit(1)
        raise click.ClickException(str(err)) from None


def make_output_dir(path: Path) -> Path:
    """Create an output folder before any work, so that a path under a file or in a read-only
    place is one message up front rather than a traceback after the work."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise click.ClickException(f"cannot write to output directory {path}: {err.strerror}") from None
    return path


def note_skipped(folder: Path) -> None:
    """One note per entry of an input folder that is not read (a .gif, a .npy, a sub-folder,
    a broken link), so nothing is left out without a word."""
    from unetseg.data.io import skipped_entries

    for entry, why in skipped_entries(folder):
        click.echo(f"note: skipped {entry}: {why}", err=True)


OVERWRITE_JSON = click.option("--overwrite", is_flag=True, help="Replace the --json file if it exists.")


def json_target(path: Path | None, overwrite: bool) -> None:
    """Before the work: ``--json``'s folder made, and an existing file or link there refused
    unless ``overwrite``."""
    if path is None:
        return
    make_output_dir(path.parent)
    if os.path.lexists(path) and not overwrite:
        what = "a symbolic link" if path.is_symlink() else "a file"
        raise click.ClickException(
            f"--json {path}: {what} is already there; pass --overwrite to replace it, or choose another path"
        )


def write_json(path: Path, payload: object, overwrite: bool = False) -> None:
    """What ``--json`` writes, by rename; NaN metrics become null, so the file is valid JSON."""
    from unetseg.atomic import replace_by_rename
    from unetseg.report.document import json_safe

    json_target(path, overwrite)  # again: the work took a while
    text = json.dumps(json_safe(payload), indent=2)
    try:
        replace_by_rename(path, lambda tmp: tmp.write_text(text))
    except OSError as err:
        raise click.ClickException(f"cannot write {path}: {err.strerror}") from None
    click.echo(f"wrote {path}")
