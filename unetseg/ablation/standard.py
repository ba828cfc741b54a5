"""The standard skip ablation of any training config, for ``unetseg ablate --base my.yaml``.

The variants are the questions the hand-written grids (``configs/ablation_isbi.yaml``,
``configs/ablation_nuclei.yaml``) ask, derived from the base's own model: the reference as
configured, every skip summed (``add``), none, gated, only the shallow or only the deep half of
its levels, and a plain encoder. With an odd number of levels the middle one is dropped by both
``shallow-only`` and ``deep-only``, so the two keep equally many skips and the semantic-gap
claim (deep beats shallow) compares like with like, as ``configs/ablation_nuclei.yaml`` does.
A variant the base's model cannot be (the schema refuses it, e.g. a plain encoder under
stochastic depth) or that repeats another is left out with its reason, not an error.

The resolved spec is written once to ``<out>/ablation.yaml`` and reused as it is by every later
invocation, so the crop budget measured the first time (:mod:`unetseg.ablation.budget`) and
the finished runs stay valid; delete the file to measure again, or edit it to change the grid.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from unetseg.ablation.budget import CropBudget, crop_budget
from unetseg.ablation.spec import load_spec
from unetseg.atomic import replace_by_rename
from unetseg.config import Config, ConfigError, UNetConfig, config_from_dict, read_yaml, set_dotted
from unetseg.config.rules import is_smp

SPEC_FILE = "ablation.yaml"
REPORT_CROP = 128  # side of the zoomed window in the report, at most the training crop


def _candidates(model: UNetConfig) -> list[tuple[str, dict[str, Any]]]:
    """(name, overrides) of the standard variants, the reference (no overrides) first."""
    modes = model.skip_modes
    half = len(modes) // 2
    off = len(modes) - half
    reference = modes[0] if len(set(modes)) == 1 else "configured"
    out: list[tuple[str, dict[str, Any]]] = [(reference, {})]
    out += [(mode, {"model.skips": mode}) for mode in ("add", "none", "gated") if mode != reference]
    out += [
        ("shallow-only", {"model.skips": modes[:half] + ["none"] * off}),
        ("deep-only", {"model.skips": ["none"] * off + modes[off:]}),
    ]
    if not is_smp(model.encoder) and model.encoder != "plain":
        out.append(("plain-encoder", {"model.encoder": "plain"}))
    return out


def standard_variants(tree: dict[str, Any], source: str) -> tuple[list[dict[str, Any]], list[str]]:
    """The standard variants of the base config ``tree`` that its model can be, as the spec's
    ``variants`` list (reference first), and one line per variant left out, saying why."""
    base = config_from_dict(tree, source)
    if not isinstance(base.model, UNetConfig):
        raise ConfigError(
            f"{source}: model.arch {base.model.arch!r} has no long skips to vary; ablate --base needs a "
            "unetseg U-Net (model.arch: unet, any encoder)"
        )
    kept: list[dict[str, Any]] = []
    models: dict[str, UNetConfig] = {}
    left_out = []
    for name, overrides in _candidates(base.model):
        variant_tree = copy.deepcopy(tree)
        for key, value in overrides.items():
            set_dotted(variant_tree, key, value)
        try:
            model = config_from_dict(variant_tree, f"{source} + variant {name!r}").model
        except ConfigError as err:
            reason = str(err).splitlines()[-1].strip().split(" (got {")[0]  # the rule, not the whole section
            left_out.append(f"left out {name}: the base's model cannot be it ({reason})")
            continue
        model = model.model_copy(update={"skips": model.skip_modes})  # "none" and [none, none] alike
        same = next((other for other, built in models.items() if built == model), None)
        if same is not None:
            left_out.append(f"left out {name}: the same model as {same} here")
            continue
        models[name] = model
        kept.append({"name": name, "set": overrides})
    return kept, left_out


def standard_spec(
    base: Path, out: Path, rate: Callable[[Config], tuple[float, str]] | None = None
) -> tuple[dict[str, Any], CropBudget, list[str]]:
    """The spec tree of the standard ablation of ``base`` writing to ``out``, its crop budget
    and the lines about variants left out."""
    tree = read_yaml(base, "base config")
    if not isinstance(tree, dict):
        raise ConfigError(f"{base}: the top level must be a mapping")
    cfg = config_from_dict(tree, str(base))
    variants, left_out = standard_variants(tree, str(base))
    budget = crop_budget(cfg, rate)
    spec = {
        "name": f"ablation_{cfg.name}",
        "base": str(base.absolute()),
        "output_dir": str(out.absolute()),  # the file is reused, maybe from another folder
        "results_dir": str(out.absolute()),
        "seeds": [0, 1, 2],
        "budget": {"epochs": budget.epochs, "samples_per_epoch": budget.samples_per_epoch},
        "reference": variants[0]["name"],
        "variants": variants,
        "report": {"crop_size": min(REPORT_CROP, cfg.augment.crop_size or REPORT_CROP)},
    }
    if cfg.data.split.mode == "none":  # init's plan for a small set trains on every image
        spec["set"] = {"data.split.mode": "block", "data.split.folds": 5, "data.split.fold": -1}
        left_out.append(
            f"{base} trains on every image (data.split.mode: none); the ablation is measured on held-out "
            "images, so its runs keep the last 1/5 block of the images for that"
        )
    return spec, budget, left_out


def _budget_line(budget: dict[str, int], why: str) -> str:
    crops = budget["epochs"] * budget["samples_per_epoch"]
    return f"budget: {budget['epochs']} epochs x {budget['samples_per_epoch']} crops = {crops:,} crops a run, {why}"


def base_spec_file(
    base: Path, out: Path, rate: Callable[[Config], tuple[float, str]] | None = None
) -> tuple[Path, list[str]]:
    """``<out>/ablation.yaml`` for the standard ablation of ``base``: written the first time,
    reused as it is after (its budget and grid fixed), refused when written for another base.
    Returns its path and the lines to say: the budget chosen and why, variants left out."""
    path = out / SPEC_FILE
    if path.is_file():
        spec = load_spec(path)
        if Path(spec.base).resolve() != base.resolve():
            raise ConfigError(f"{path} is the ablation of {spec.base}, not of {base}: pass another --out, or delete it")
        budget = spec.budget.model_dump()
        why = f"as fixed in {path} when it was written (delete it to time the base again)"
        return path, [_budget_line(budget, why)]
    tree, budget, left_out = standard_spec(base, out, rate)
    line = _budget_line(tree["budget"], budget.why)
    header = "".join(
        f"# {text}\n"
        for text in (
            f"The standard skip ablation of {base}, written by `unetseg ablate --base`;",
            "reused as it is by later invocations (edit it to change the grid, delete it to time the base again).",
            line,
            *left_out,
        )
    )
    out.mkdir(parents=True, exist_ok=True)
    text = header + yaml.safe_dump(tree, sort_keys=False)
    replace_by_rename(path, lambda tmp: tmp.write_text(text))  # whole or not at all: it is reused
    return path, [*left_out, line]
