"""Shared pieces of the config schema: the error type, the strict base model and the option names."""

from __future__ import annotations

import difflib
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Literal, get_args

from pydantic import BaseModel, ConfigDict

SkipMode = Literal["concat", "add", "none", "gated", "attention"]
BlockType = Literal["plain", "residual", "preact", "highway", "dense"]
NormType = Literal["batch", "instance", "group", "none"]
ActType = Literal["relu", "leaky_relu", "gelu", "silu", "elu", "prelu", "crelu"]

SKIP_MODES: tuple[str, ...] = SkipMode.__args__  # type: ignore[attr-defined]
BLOCK_TYPES: tuple[str, ...] = BlockType.__args__  # type: ignore[attr-defined]
RESIDUAL_BLOCKS = ("residual", "preact", "highway")  # blocks with a branch that stochastic depth can drop


class ConfigError(ValueError):
    """A configuration that cannot be used; the message names the file and the key."""


class Strict(BaseModel):
    """Base of every config section: unknown keys are errors, assignments are re-validated."""

    # allow_inf_nan=False: `--set train.lr=inf` (or nan) is refused naming the key, not trained into NaN weights
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


def check_output_dir(path: Path) -> Path:
    """A run needs a folder of its own: ``/``, the folder unetseg runs in (``.``) or one above it
    (``..``) would get config.yaml, checkpoints/ and metrics.csv among files that are not the
    run's, and a later ``--overwrite`` would act on them."""
    where = Path(os.path.normpath(Path(path).expanduser().absolute()))
    cwd = Path.cwd()
    if where == Path(where.anchor):
        what = "the file system's root"
    elif where == cwd:
        what = "the folder unetseg runs in"
    elif where in cwd.parents:
        what = "a folder above the one unetseg runs in"
    else:
        return path
    raise ValueError(
        f"{path} is {what}: a run writes its files into output_dir; give it a folder of its own (runs/<name>)"
    )


def did_you_mean(word: str, choices: Iterable[str], n: int = 1, sep: str = "; ") -> str:
    """``sep`` + "did you mean 'x'?" naming the closest of ``choices`` to a misspelt ``word``
    (up to ``n`` of them), or "" when none is close: the hint every unknown name gets."""
    close = difflib.get_close_matches(word, list(choices), n=n)
    if not close:
        return ""
    names = [repr(c) for c in close]
    listed = names[0] if len(names) == 1 else f"{', '.join(names[:-1])} or {names[-1]}"
    return f"{sep}did you mean {listed}?"


def field_choices(section: type[BaseModel], key: str) -> list[str]:
    """The values a ``Literal`` field of a config section allows, for a CLI option that sets it."""
    return [str(value) for value in get_args(section.model_fields[key].annotation)]
