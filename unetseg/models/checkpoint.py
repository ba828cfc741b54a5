"""Checkpoints: a model's weights with the config that built it.

Saved atomically (temporary file, then rename), so a crash mid-write leaves the previous
checkpoint intact; loaded with ``weights_only=True``, so a checkpoint cannot run code. Used
by training and inference alike, so ``predict`` never imports the training loop.
"""

from __future__ import annotations

import pickle
import re
from pathlib import Path
from typing import Any

import torch
from torch import nn

from unetseg.atomic import replace_by_rename
from unetseg.config import Config, ConfigError, config_from_dict
from unetseg.models import build_model

FORMAT = "unetseg-checkpoint/1"


class CheckpointError(ValueError):
    """A checkpoint that is missing, truncated, tampered with or not unetseg's."""


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Write ``state`` to ``path`` through a temporary file in the same folder and a rename: a
    kill at any moment leaves the previous checkpoint, or the new one, never a mix."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as fh:
            torch.save({"format": FORMAT, **state}, fh)

    replace_by_rename(path, write, keep_suffix=False, sync=True)


def _reason(err: Exception) -> str:
    """The line of a torch.load error that says what is wrong, without torch's advice."""
    advice = ("weights only", "weights_only", "check the documentation", "please file an issue")
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return next((line for line in lines if not any(a in line.lower() for a in advice)), type(err).__name__)


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # garbage can fail anywhere in the unpickler (IndexError, KeyError, ...)
        # torch's message suggests retrying with weights_only=False, the one thing not to do
        # with a file that holds code: name what was found instead.
        code = re.search(r"GLOBAL ([\w.]+)", str(err)) if isinstance(err, pickle.UnpicklingError) else None
        if code:
            raise CheckpointError(
                f"{path}: refused: it holds pickled Python code or objects ({code.group(1)}), which a checkpoint "
                "never does and which could run code when loaded; it was not loaded. Use a checkpoint written by "
                "unetseg train"
            ) from None
        raise CheckpointError(
            f"{path}: not a readable checkpoint (truncated, tampered or foreign): {_reason(err)}"
        ) from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a unetseg checkpoint")
    return state


def training_record(state: dict[str, Any], source: Path | str) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """(history, best) of a training checkpoint, checked: resuming appends to the history and
    rewrites metrics.csv from it, so a missing one would silently drop the earlier epochs."""
    history, best = state.get("history"), state.get("best")
    if not isinstance(history, list) or not all(isinstance(row, dict) for row in history):
        raise CheckpointError(
            f"{source}: its training history is {'missing' if history is None else 'damaged'} "
            "(key 'history'), so the run cannot be continued; start a new run"
        )
    if not isinstance(best, dict) or "value" not in best or "epoch" not in best:
        raise CheckpointError(
            f"{source}: its best-epoch record is {'missing' if best is None else 'damaged'} "
            "(key 'best'), so the run cannot be continued; start a new run"
        )
    return history, best


def checkpoint_config(state: dict[str, Any], source: str) -> Config:
    if not isinstance(state.get("config"), dict):
        raise CheckpointError(f"{source}: embedded config unusable: missing or not a mapping of sections")
    try:
        return config_from_dict(state["config"], f"{source} (embedded config)")
    except ConfigError as err:
        raise CheckpointError(f"{source}: embedded config unusable: {err}") from None


def non_finite_tensors(weights: dict[str, Any]) -> list[str]:
    """Names of the tensors in a state dict that hold NaN or infinity."""
    return [
        name
        for name, value in weights.items()
        if isinstance(value, torch.Tensor) and value.is_floating_point() and not bool(torch.isfinite(value).all())
    ]


def non_finite_message(path: Path | str, names: list[str]) -> str:
    more = f" and {len(names) - 1} more" if len(names) > 1 else ""
    return (
        f"{path}: the weights hold NaN or infinite values ({names[0]}{more}); a model saved after its "
        "training diverged predicts garbage. Use an earlier checkpoint or train again"
    )


def load_model(
    path: Path, device: torch.device | str = "cpu", allow_non_finite: bool = False
) -> tuple[nn.Module, Config, dict[str, Any]]:
    """Rebuild the model a checkpoint was trained as, in eval mode, with its weights.

    Weights with NaN or infinity are refused (predict would write all-foreground masks and
    evaluate print metrics of them, with exit code 0) unless ``allow_non_finite``: ``info``
    shows such a checkpoint and flags it.
    """
    state = load_checkpoint(path)
    cfg = checkpoint_config(state, str(path))
    model = build_model(cfg.model, cfg.data.channels, cfg.data.out_channels)
    if not isinstance(state.get("model"), dict):
        raise CheckpointError(f"{path}: no model weights (missing or not a state dict)")
    broken = non_finite_tensors(state["model"])
    if broken and not allow_non_finite:
        raise CheckpointError(non_finite_message(path, broken))
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as err:  # torch lists every mismatched tensor; the first says enough
        lines = [line.strip() for line in str(err).strip().splitlines()]
        more = f" (and {len(lines) - 2} more)" if len(lines) > 2 else ""
        raise CheckpointError(
            f"{path}: weights do not fit the embedded model config: {' '.join(lines[:2])}{more}"
        ) from None
    return model.to(device).eval(), cfg, state
