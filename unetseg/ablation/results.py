"""Reading a finished run's ``result.json`` back, and refusing one that cannot be true.

The report is built from these files alone (``--report-only``), so a file that was edited,
truncated into valid JSON, or written by another grid would otherwise flow into the tables:
a string where a number belongs raises deep inside the statistics, and a Dice of 7.5 or NaN
is averaged as if it were measured. Each stored result is checked once, here; a damaged one
is named with its file and treated as not run, so the grid trains it again.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

# scores that are fractions (a Dice of 7.5 is damage, not a result)
UNIT_SCORES = (
    "dice",
    "iou",
    "pixel_error",
    "rand_error",
    "object_f1",
    "bf1_",
    "cldice",
    "skeleton_recall",
    "error_near_boundary",
    "thin_recall",
)
REQUIRED = {"variant": str, "seed": int, "mean": dict, "images": list, "config": dict}


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def score_problem(name: str, value: Any) -> str | None:
    """Why ``value`` cannot be the score ``name`` (``mean.dice``, ``images[3].hd95``); None when it can."""
    unit = name.rpartition(".")[2].startswith(UNIT_SCORES)
    if value is None:  # a measure that does not apply to this run (e.g. no boundary)
        return None
    if not _is_number(value):
        return f"{name} is {type(value).__name__} {value!r}, not a number"
    if math.isnan(value):
        return f"{name} is NaN" if unit else None
    if unit and not 0.0 <= value <= 1.0:
        return f"{name} is {value:g}, outside 0..1"
    if value < 0:
        return f"{name} is {value:g}, below 0"
    return None


def result_problem(result: Any, variant: str, seed: int) -> str | None:
    """What is wrong with a stored result of (``variant``, ``seed``); None when it is usable."""
    if not isinstance(result, dict):
        return f"holds {type(result).__name__}, not a run's result"
    for key, kind in REQUIRED.items():
        if key not in result:
            return f"key {key!r} is missing"
        if not isinstance(result[key], kind) or (kind is int and isinstance(result[key], bool)):
            return f"key {key!r} is {type(result[key]).__name__}, not {kind.__name__}"
    if result["variant"] != variant or result["seed"] != seed:
        return f"it is the result of {result['variant']!r} seed {result['seed']}, not of {variant!r} seed {seed}"
    for name, value in result["mean"].items():
        if (problem := score_problem(f"mean.{name}", value)) is not None:
            return problem
    for index, image in enumerate(result["images"]):
        if not isinstance(image, dict):
            return f"images[{index}] is {type(image).__name__}, not a mapping"
        for name, value in image.items():
            if name not in ("image", "name") and (problem := score_problem(f"images[{index}].{name}", value)):
                return problem
    return None


def read_result(path: Path, variant: str, seed: int) -> tuple[dict[str, Any] | None, str | None]:
    """(result, None) for a usable stored result; (None, why) for a damaged one; (None, None)
    where there is none, or it was cut short while being written (JSON that does not parse)."""
    try:
        result = json.loads(path.read_text(), parse_constant=lambda token: float(token))
    except (OSError, ValueError):
        return None, None
    problem = result_problem(result, variant, seed)
    return (None, f"{path}: damaged, treated as not run ({problem})") if problem else (result, None)
