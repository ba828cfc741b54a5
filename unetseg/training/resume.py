"""What ``--resume`` checks beyond the weights: that the optimiser state belongs to this
config, and that the images were split the same way as when the run began.

A resumed run continues the optimiser, the schedule and the best-epoch record. Each of them
is only meaningful for the run that wrote it: another scheduler's state has other keys
(torch raises a bare ``KeyError: 'lr_lambdas'``), and a split that moved because images were
added or removed trains on former validation images and makes ``best.pt`` compare Dice
across two validation sets. Both are refused with one message that says what changed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from unetseg.training.errors import TrainingError

SHOWN = 3  # names listed per side of a changed split
# the settings whose change makes each saved state foreign
CAUSES = {
    "optimizer": ("model.", "train.optimizer", "train.deep_supervision"),
    "scheduler": ("train.scheduler", "train.schedule_by", "train.warmup"),
    "scaler": ("train.amp", "precision"),
}


def split_record(train: Any, val: Any | None) -> dict[str, list[str]]:
    """The sample names on each side of the split, as stored in the checkpoint."""
    return {
        "train": sorted(s.name for s in train.samples),
        "val": sorted(s.name for s in val.samples) if val is not None else [],
    }


def _listed(names: set[str]) -> str:
    shown = ", ".join(sorted(names)[:SHOWN])
    return shown + (f" and {len(names) - SHOWN} more" if len(names) > SHOWN else "")


def check_split(state: dict[str, Any], now: dict[str, list[str]], source: Path) -> None:
    """Refuse to resume when the images or their split changed since the checkpoint."""
    before = state.get("split")
    if not isinstance(before, dict):  # written before the split was recorded
        return
    changes = []
    for side in ("train", "val"):
        old, new = set(before.get(side, [])), set(now[side])
        if old - new:
            changes.append(f"{len(old - new)} {side} image(s) gone ({_listed(old - new)})")
        if new - old:
            changes.append(f"{len(new - old)} {side} image(s) new ({_listed(new - old)})")
    if changes:
        raise TrainingError(
            f"cannot resume {source}: the data changed since it was written: {'; '.join(changes)}. "
            "Resuming would train on former validation images and compare best.pt across two validation "
            "sets; start a new run (another --out), or restore the images"
        )


def restore_weights(model: nn.Module, weights: dict[str, Any], changed: list[str], source: Path) -> None:
    """Load the trained weights, or name the ``model.`` keys that changed the architecture."""
    try:
        model.load_state_dict(weights)
    except RuntimeError as err:  # another architecture: depth, widths, deep_supervision heads, ...
        model_keys = ", ".join(key for key in changed if key.startswith("model.")) or "the model section"
        raise TrainingError(
            f"cannot resume {source}: its weights do not fit the model this config builds "
            f"({model_keys} changed); start a new run or restore the old settings. "
            f"{str(err).splitlines()[0]}"
        ) from None


def restore_optimisation(state: dict[str, Any], parts: dict[str, Any], changed: list[str], source: Path) -> None:
    """Load the optimiser, scheduler and scaler states, or say which settings make them foreign."""
    for key, part in parts.items():
        try:
            saved = state[key]
            if key == "scheduler" and set(saved) != set(part.state_dict()):
                # ReduceLROnPlateau.load_state_dict takes any dict into its __dict__; compare first
                differ = sorted(set(saved) ^ set(part.state_dict()))
                raise KeyError(f"saved by another kind of scheduler (keys {', '.join(differ)})")
            part.load_state_dict(saved)
        except (KeyError, ValueError, TypeError, IndexError, RuntimeError) as err:
            causes = [c for c in changed if c.startswith(CAUSES[key])]
            cause = f"these settings changed: {', '.join(causes)}" if causes else "it may be another run's checkpoint"
            raise TrainingError(
                f"cannot resume {source}: its {key} state (key {key!r}) does not fit this config's "
                f"{type(part).__name__} ({cause}); start a new run or restore the old settings. "
                f"{type(err).__name__}: {err}"
            ) from None
