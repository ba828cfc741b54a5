"""Shared pieces of the config schema: the error type, the strict base model and the option names."""

from __future__ import annotations

from typing import Literal

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

    model_config = ConfigDict(extra="forbid", validate_assignment=True)
