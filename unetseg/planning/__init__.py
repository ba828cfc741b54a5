"""``unetseg init``: a config planned from the dataset's fingerprint, every choice explained.

Layout: ``fingerprint`` (what the data are: sizes, channels, intensities, mask values, and the
labelled structure's shape from ``shapes``), ``hardware`` (what the machine is), ``anchors``
(the shipped hand-tuned recipes the plan starts from), ``data_rules`` and ``train_rules`` (the
choices, each with its reason), ``plan`` (the values and reasons, rendered as commented YAML).
"""

from __future__ import annotations

import datetime
from importlib.metadata import PackageNotFoundError, version

from unetseg.config import DataConfig
from unetseg.planning.data_rules import Structure, plan_data
from unetseg.planning.fingerprint import Fingerprint, measure
from unetseg.planning.hardware import Machine, detect_machine
from unetseg.planning.plan import Plan
from unetseg.planning.train_rules import plan_training, recipe_for

DEFAULT_BUDGET_S = 480.0  # isbi_cpu's 8 minutes


def _version() -> str:
    try:
        return version("unetseg")
    except PackageNotFoundError:
        return "(source)"


def _header(fp: Fingerprint, structure: Structure, machine: Machine, budget_s: float, command: str) -> list[str]:
    h, w = fp.median_size
    low, high = fp.percentiles
    values = ", ".join(f"{v}: {100 * s:.1f} %" for v, s in list(fp.mask_values.items())[:6])
    shape = structure.shape
    what = {"walls": "thin walls between regions", "lines": "thin lines or networks", "blobs": "blobs"}[structure.kind]
    drawn = " drawn as mask value 0" if structure.zero_is_foreground else ""
    measured = ""
    if shape is not None:
        count = (
            f"{shape.regions:.0f} regions per image"
            if structure.kind == "walls"
            else f"{shape.parts:.0f} parts per image"
        )
        measured = f" (width {shape.width:.0f} px, parts of {shape.extent:.0f} px, {count})"
    return [
        f"Planned by `{command}` on {datetime.date.today().isoformat()} (unetseg {_version()}).",
        f"Machine: {machine.describe()}. Budget: {budget_s:g} s of training.",
        f"Fingerprint of {fp.data.source} ({fp.data.layout} layout; {fp.measured} of {fp.planes} 2D samples measured):",
        f"  {fp.cases} cases; median size {w}x{h} (WxH), smallest side {fp.min_side}; {fp.channels} input channel(s);",
        f"  {', '.join(f'{d} x{n}' for d, n in fp.dtypes.items())}; intensities {low:.4g} to {high:.4g} (0.5-99.5th pct);",
        f"  mask values {values};",
        *(
            [
                f"  note: {fp.lossy_masks} of {fp.measured} masks are JPEG (lossy): each pixel of the halo at their edges "
                "is set to the nearer of the mask's two commonest values; save masks as PNG",
            ]
            if fp.lossy_masks
            else []
        ),
        f"  structure: {what}{drawn}{measured}",
        f"  -> the recipe of {recipe_for(structure).anchor}, fitted to these images, this machine and the budget.",
        "Each key says why it was chosen; keys not written keep their defaults (unetseg/config/schema.py).",
        "Check and train: unetseg data check --config THIS.yaml; unetseg train --config THIS.yaml",
        "",
    ]


def plan_dataset(
    data: DataConfig,
    budget_s: float = DEFAULT_BUDGET_S,
    machine: Machine | None = None,
    name: str = "run",
    output_dir: str = "runs/run",
    command: str = "unetseg init",
) -> tuple[Plan, Fingerprint]:
    """The plan for ``data`` (as :func:`unetseg.data.layouts.detect_data` describes it) and the
    fingerprint it was made from; the plan validates as a :class:`unetseg.config.Config`."""
    machine = machine or detect_machine()
    fp = measure(data)
    plan = Plan()
    plan.set("name", name, "the run's name")
    plan.set("seed", 0, "the seed of weights, crops and augmentation")
    plan.set("output_dir", output_dir, "where checkpoints, config.yaml and metrics.csv go")
    structure = plan_data(plan, fp, machine.memory_gb)
    plan_training(plan, fp, structure, machine, budget_s)
    plan.header = _header(fp, structure, machine, budget_s, command)
    plan.config()
    return plan, fp


__all__ = ["DEFAULT_BUDGET_S", "Fingerprint", "Machine", "Plan", "detect_machine", "measure", "plan_dataset"]
