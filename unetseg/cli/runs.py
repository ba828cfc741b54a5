"""Where trained models are found when the user names none, and where their predictions go.

``unetseg train`` writes a run folder holding ``checkpoints/best.pt`` (see
:mod:`unetseg.training.trainer`); ``train --folds`` writes one such folder per fold. So that
``unetseg predict IMAGES`` works from the images alone, as it does in cellpose or nnU-Net once
a model exists, the newest of these checkpoints stands in for ``--checkpoint``, and the masks go
beside the run instead of into a folder the user must invent.
"""

from __future__ import annotations

from pathlib import Path

import click

BEST = Path("checkpoints") / "best.pt"
# A run folder itself, a run in a folder of runs (runs/<name>), or a fold of a cross-validated
# run (runs/<name>/fold<i>). The ablation keeps its per-variant checkpoints deeper
# (<output_dir>/runs/<variant>/<seed>-<key>), as a cache: those are not a user's model.
PATTERNS = (str(BEST), f"*/{BEST}", f"*/*/{BEST}")


class CheckpointPath(click.ParamType):
    """A checkpoint file, or the run folder that holds one: ``train`` prints the run folder, so
    that is what users paste. A folder stands for its ``checkpoints/best.pt`` (the folder
    ``checkpoints/`` itself for its ``best.pt``). A path that is not there is refused while the
    command line is read, before any work (a typo in the second of several checkpoints would
    otherwise surface after the first one's work), naming the ``best.pt`` it likely meant."""

    name = "checkpoint"

    def convert(self, value: object, param: click.Parameter | None, ctx: click.Context | None) -> Path:
        path = Path(str(value))
        if path.is_dir():
            for candidate in (path / BEST, path / BEST.name):
                if candidate.is_file():
                    return candidate
            inside = finished_checkpoints(path)[:3]
            self.fail(
                f"{path} is a folder without {BEST}"
                + (
                    f"; the runs in it have: {', '.join(str(c) for c in inside)}"
                    if inside
                    else " (a run folder holds one once training saved a model)"
                )
            )
        if not path.exists():
            hint = next((c for c in (path.parent / BEST, path.parent.parent / BEST) if c.is_file()), None)
            self.fail(f"{path}: no such checkpoint file" + (f"; did you mean {hint}?" if hint is not None else ""))
        return path


CHECKPOINT = CheckpointPath()


def finished_checkpoints(root: Path) -> list[Path]:
    """The ``best.pt`` of every finished run under ``root``, newest first.

    A run counts as finished once it has a ``best.pt``: it is written atomically (a temporary
    file, then a rename), so one that exists is complete, and a run still training already
    has a usable model. Newest means the latest modification, i.e. the model trained last.
    """
    found = {path for pattern in PATTERNS for path in Path(root).glob(pattern) if path.is_file()}
    return sorted(found, key=lambda path: path.stat().st_mtime, reverse=True)


def run_folder(checkpoint: Path) -> Path:
    """The run a checkpoint belongs to: the folder above ``checkpoints/``, else its own folder."""
    checkpoint = Path(checkpoint)
    return checkpoint.parent.parent if checkpoint.parent.name == "checkpoints" else checkpoint.parent


def predictions_folder(checkpoint: Path, inputs: Path) -> Path:
    """``<run>/predictions/<input folder name>`` (``<input stem>`` for a single image), so
    predictions of several inputs with one model sit side by side and never mix."""
    from unetseg.data.io import file_stem  # torch comes with the data package: not at --help

    inputs = Path(inputs).resolve()  # "." names the folder it stands for
    return run_folder(checkpoint) / "predictions" / (inputs.name if inputs.is_dir() else file_stem(inputs))
