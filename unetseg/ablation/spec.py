"""The ablation config: a base training config, the variants, the seeds and one budget.

Variants are dotted overrides of the base config (the same ``key=value`` language as
``unetseg train --set``), given as a cross-product ``grid`` and/or an explicit ``variants``
list. Every variant trains under the *same* budget (epochs x samples per epoch, with the
learning-rate schedule laid out over those steps, never over wall-clock time), the same seeds,
the same split and the same data order, so their differences are the skips' and runs measured
on different machines or in different numbers of workers are comparable.

Two folders: ``output_dir`` holds the checkpoints (large, a cache), ``results_dir`` what each
finished run measured and the report (small, kept with the project). A run's checkpoint folder
is named by a hash of its resolved config, so a changed config never resumes a stale run.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, PrivateAttr, ValidationError, field_validator, model_validator

from unetseg.config import (
    Config,
    ConfigError,
    Strict,
    UNetConfig,
    config_changes,
    config_from_dict,
    format_validation_error,
    read_yaml,
    set_dotted,
)
from unetseg.config.base import did_you_mean
from unetseg.inference.evaluation import DISTANCE_BINS, TOLERANCES

# Where and how a run trains, not what it is: they may differ between the machines and
# invocations that complete one grid.
# what the ablation sets for every run, and where a spec says it instead
FIXED_KEYS = {
    "seed": "seeds:",
    "name": "the variant's name",
    "train.epochs": "budget.epochs",
    "train.samples_per_epoch": "budget.samples_per_epoch",
    "train.max_time_s": "the crop budget (budget:), the same on any machine",
    "train.schedule_by": "the crop budget (budget:), the same on any machine",
    "train.progress": "the ablation's own progress",
}
FOLD_KEYS = {f"data.split.{k}": "folds: (contiguous block folds)" for k in ("mode", "folds", "fold")}
RUNTIME_KEYS = frozenset(
    {
        "output_dir",
        "train.device",
        "train.threads",
        "train.num_workers",
        "train.progress",
        "train.compile",
        "train.channels_last",
    }
)


class Variant(Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9_.+-]+$")
    set: dict[str, Any] = {}


class Budget(Strict):
    epochs: int = Field(ge=1)
    samples_per_epoch: int = Field(ge=1)


class ReportSpec(Strict):
    crop_size: int = Field(128, ge=16, description="side of the zoomed region shown for every variant")
    crop_image: str | None = Field(None, description="validation image to zoom into (default: the first)")
    images: bool = Field(
        True,
        description="show windows of the images and their truth beside the predictions; false for data whose "
        "licence forbids republishing its pixels (research-use sets): the windows are left out, every number stays",
    )
    distance_bins: list[float] = list(DISTANCE_BINS)
    tolerances: list[int] = list(TOLERANCES)
    corruptions: dict[Literal["contrast", "noise", "blur"], list[float]] = Field(
        {}, description="test-time corruption sweep: kind -> strengths (0 = clean); empty = no sweep"
    )


class EvaluateSpec(Strict):
    """A held-out labelled set every run is measured on, instead of its validation block: a
    dataset's test split, which neither training nor any choice of the grid has seen."""

    images: Path = Field(description="image folder (relative to this file or absolute)")
    masks: Path = Field(description="mask folder, paired with the images by name as training pairs them")
    roi: Path | None = Field(
        None,
        description="region-of-interest masks named as the images (nonzero = inside, e.g. a field of view): "
        "outside, prediction and truth are both set to background before measuring, so Dice, IoU, boundary F1, "
        "clDice and thin recall count only the pixels inside, and pixel error rates count the outside as "
        "correct; null = the whole image",
    )


class AblationSpec(Strict):
    name: str = "ablation"
    base: Path = Field(description="training config the variants modify (path, relative to this file)")
    output_dir: Path = Field(
        Path("runs/ablation"), description="checkpoints of every run (a cache; not kept with the results)"
    )
    results_dir: Path | None = Field(
        None,
        description="each finished run's measured results (results/<variant>/seed<k>/) and the report; "
        "enough to rebuild the report without checkpoints (default: output_dir)",
    )
    seeds: list[int] = Field([0, 1, 2], min_length=1)
    budget: Budget
    reference: str | None = Field(None, description="variant the others are compared with (default: the first)")
    grid: dict[str, list[Any]] = Field({}, description="dotted key -> values; one variant per combination")
    variants: list[Variant] = []
    quick: dict[str, Any] = Field(
        {"seeds": [0], "budget": {"epochs": 1, "samples_per_epoch": 4}},
        description="what --quick changes (a smoke test of the whole pipeline)",
    )
    set: dict[str, Any] = Field({}, description="overrides applied to the base config for every variant")
    _smoke_test: bool = PrivateAttr(False)
    match_parameters: bool = Field(
        False,
        description="widen or narrow each variant's decoder until its parameter count is within "
        "match_tolerance of the reference variant's (unetseg U-Nets only)",
    )
    match_tolerance: float = Field(0.05, gt=0.0, lt=1.0)
    folds: int | None = Field(
        None,
        ge=2,
        description="cross-validation: every (variant, seed) is trained on each of this many contiguous "
        "block folds (data.split mode block), and results are given per fold and pooled",
    )
    report: ReportSpec = ReportSpec()
    evaluate: EvaluateSpec | None = Field(
        None, description="measure every run on these held-out images instead of its validation images"
    )

    @field_validator("grid")
    @classmethod
    def _grid_values(cls, grid: dict[str, list[Any]]) -> dict[str, list[Any]]:
        for key, values in grid.items():
            if not values:
                raise ValueError(f"grid key {key!r} has no values")
        return grid

    @model_validator(mode="after")
    def _has_variants(self) -> AblationSpec:
        if not self.grid and not self.variants:
            raise ValueError("an ablation needs a grid or a list of variants")
        fixed = {**FIXED_KEYS, **(FOLD_KEYS if self.folds else {})}
        places = [("set", self.set), ("grid", self.grid)] + [(f"variant {v.name!r}", v.set) for v in self.variants]
        for where, keys in places:
            for key in sorted(set(keys) & set(fixed)):
                raise ValueError(f"{where}: {key} is fixed for every run by {fixed[key]}; the value would be replaced")
        names = [v.name for v in self.expand()]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"variant names must be unique, repeated: {dupes}")
        if self.reference is not None and self.reference not in names:
            raise ValueError(f"reference {self.reference!r} is not a variant ({', '.join(names)})")
        if self.folds and self.evaluate is not None:
            raise ValueError(
                "folds and evaluate: cross-validation measures each fold on its own validation block, a held-out "
                "set measures every run on the same images; choose one"
            )
        return self

    def expand(self) -> list[Variant]:
        """Grid combinations first (named ``key-value`` joined by ``_``), then explicit variants."""
        out: list[Variant] = []
        keys = list(self.grid)
        for combo in () if not keys else itertools.product(*(self.grid[k] for k in keys)):
            name = "_".join(_short(k, v) for k, v in zip(keys, combo))
            out.append(Variant(name=name, set=dict(zip(keys, combo))))
        return out + list(self.variants)

    @property
    def reference_name(self) -> str:
        return self.reference or self.expand()[0].name

    @property
    def smoke_test(self) -> bool:
        """Loaded with ``--quick``: its numbers test the pipeline, not the skips."""
        return self._smoke_test

    @property
    def report_dir(self) -> Path:
        return Path(self.results_dir or self.output_dir)

    @property
    def scored_on(self) -> str:
        """The images every run is measured on, in words, for the report."""
        if self.evaluate is None:
            return "the validation images"
        roi = self.evaluate.roi
        inside = f", inside the regions of interest in {shown(roi)} (outside, both maps are background)" if roi else ""
        return f"the held-out images in {shown(self.evaluate.images)}{inside}"


def shown(path: str | Path) -> str:
    """A path as a committed report shows it: an absolute path inside the working folder, or
    beside it (``../shared/panel``), relative to it, so the report reads the same in any
    clone; any other path as it is."""
    path = Path(path)
    if not path.is_absolute():
        return str(path)
    relative = Path(os.path.relpath(path))
    return str(relative) if relative.parts[:2].count("..") <= 1 else str(path)


def _short(key: str, value: Any) -> str:
    text = "-".join(map(str, value)) if isinstance(value, list) else str(value)
    return f"{key.split('.')[-1]}-{text}".replace(" ", "")


def load_spec(path: Path, quick: bool = False) -> AblationSpec:
    path = Path(path)
    tree = read_yaml(path, "ablation config")
    if not isinstance(tree, dict):
        raise ConfigError(f"{path}: the top level must be a mapping")
    try:
        spec = AblationSpec.model_validate(tree)
        if quick:
            spec = AblationSpec.model_validate({**tree, **spec.quick})
            spec._smoke_test = True
    except ValidationError as err:
        raise ConfigError(format_validation_error(err, str(path), {}, AblationSpec, "ablation config")) from None
    if not spec.base.is_absolute() and not spec.base.exists():
        spec.base = path.parent / spec.base
    if spec.evaluate is not None:
        spec.evaluate = _evaluate_folders(spec.evaluate, path)
    return spec


def _evaluate_folders(evaluate: EvaluateSpec, path: Path) -> EvaluateSpec:
    """The held-out set's folders, each relative to the spec file where it is not found from
    here (as ``base``); a folder that is not there is an error naming the file and the key."""
    folders = {}
    for key in ("images", "masks", "roi"):
        folder = getattr(evaluate, key)
        if folder is None:
            continue
        if not folder.is_absolute() and not folder.exists():
            folder = path.parent / folder
        if not folder.is_dir():
            what = "a file, not a folder" if folder.exists() else "no such folder"
            raise ConfigError(f"invalid ablation config in {path}:\n  evaluate.{key}: {folder}: {what}")
        folders[key] = folder.absolute()  # the same set whatever folder a later invocation runs from
    return evaluate.model_copy(update=folders)


def narrowed(spec: AblationSpec, variants: list[str] | None = None, seeds: list[int] | None = None) -> AblationSpec:
    """The spec with only these variants and seeds (``--variants``, ``--seeds``), in the spec's
    order. The reference stays whatever is asked: every comparison is with it, and once trained
    it is reused. Each run's config is the same as in the whole grid, so a narrowed invocation
    reuses the whole grid's finished runs and the other way round."""
    if variants is None and seeds is None:
        return spec
    names = [v.name for v in spec.expand()]
    unknown = [name for name in variants or [] if name not in names]
    if unknown:
        raise ConfigError(
            f"--variants: {', '.join(unknown)} not in the ablation (its variants: {', '.join(names)})"
            + did_you_mean(unknown[0], names)
        )
    foreign = [seed for seed in seeds or [] if seed not in spec.seeds]
    if foreign:
        raise ConfigError(f"--seeds: {foreign} not among the ablation's seeds {spec.seeds}")
    keep = set(variants or names) | {spec.reference_name}
    return spec.model_copy(
        update={
            "grid": {},
            "variants": [v for v in spec.expand() if v.name in keep],
            "seeds": [s for s in spec.seeds if seeds is None or s in seeds],
            "reference": spec.reference_name,
        }
    )


def _run_name(seed: int, fold: int | None) -> str:
    return f"seed{seed}" if fold is None else f"seed{seed}_fold{fold}"


def run_dir(spec: AblationSpec, variant: str, seed: int, fold: int | None, key: str) -> Path:
    """Checkpoint folder of one run: ``<output_dir>/runs/<variant>/seed<k>[_fold<f>]-<key>``."""
    return Path(spec.output_dir) / "runs" / variant / f"{_run_name(seed, fold)}-{key}"


def result_dir(spec: AblationSpec, variant: str, seed: int, fold: int | None = None) -> Path:
    """What one finished run measured: ``result.json`` and ``pred/<image>.png``."""
    return spec.report_dir / "results" / variant / _run_name(seed, fold)


def run_key(cfg: Config) -> str:
    """A short hash of what the run is: the resolved config without the runtime keys, with
    values left at their defaults dropped (so a key added to the schema later keeps the hash)."""
    tree = cfg.model_dump(mode="json", exclude_defaults=True)
    tree.pop("output_dir", None)
    for dotted in RUNTIME_KEYS:
        section, _, key = dotted.partition(".")
        if key:
            tree.get(section, {}).pop(key, None)
    return hashlib.sha256(json.dumps(tree, sort_keys=True).encode()).hexdigest()[:10]


def training_changes(stored: dict[str, Any] | None, cfg: Config) -> list[str]:
    """Dotted keys where a finished run's stored config differs from ``cfg`` in what was trained
    (the runtime keys and the output folder aside); an empty list means the same run."""
    if not stored:
        return ["(no config stored)"]
    return [key for key in config_changes(stored, cfg) if key not in RUNTIME_KEYS]


def _fixed(spec: AblationSpec, seed: int, variant: Variant, fold: int | None) -> dict[str, Any]:
    """The keys the ablation sets for every run (:data:`FIXED_KEYS`, :data:`FOLD_KEYS`)."""
    fixed = {
        "seed": seed,
        "name": variant.name,
        "train.epochs": spec.budget.epochs,
        "train.samples_per_epoch": spec.budget.samples_per_epoch,
        "train.max_time_s": None,  # the budget is counted in samples, identical for every variant
        "train.schedule_by": "steps",  # and so is the schedule, on any machine
        "train.progress": False,
    }
    if fold is not None:
        fixed.update({"data.split.mode": "block", "data.split.folds": spec.folds, "data.split.fold": fold})
    return fixed


def fold_ids(spec: AblationSpec) -> list[int | None]:
    return list(range(spec.folds)) if spec.folds else [None]


def variant_config(spec: AblationSpec, variant: Variant, seed: int, fold: int | None = None) -> Config:
    """The full training config of one (variant, seed) run, writing to its keyed run folder."""
    tree = read_yaml(Path(spec.base), "ablation base config")
    for key, value in {**spec.set, **variant.set, **_fixed(spec, seed, variant, fold)}.items():
        set_dotted(tree, key, value)
    cfg = config_from_dict(tree, f"{spec.base} + variant {variant.name!r}")
    if spec.match_parameters and variant.name != spec.reference_name:
        reference = next(v for v in spec.expand() if v.name == spec.reference_name)
        target = parameter_count(variant_config(spec, reference, seed))
        cfg.model = match_decoder_width(
            cfg.model, target, spec.match_tolerance, cfg.data.channels, cfg.data.out_channels
        )
    cfg.output_dir = run_dir(spec, variant.name, seed, fold, run_key(cfg))
    return cfg


def parameter_count(cfg: Config) -> int:
    from unetseg.models import build_model, count_parameters

    return count_parameters(build_model(cfg.model, cfg.data.channels, cfg.data.out_channels))


def match_decoder_width(model: UNetConfig, target: int, tolerance: float, in_ch: int, out_ch: int) -> UNetConfig:
    """Scale the decoder widths so the U-Net's parameter count is within ``tolerance`` of
    ``target`` (bisection on the scale; the count grows monotonically with it).

    Removing a skip shrinks the decoder blocks' inputs and so the parameter count; matched
    controls give that capacity back to the decoder, so a variant cannot look worse merely for
    being smaller.
    """
    from unetseg.models import build_model, count_parameters
    from unetseg.models.unet import default_decoder_widths, level_widths

    if not isinstance(model, UNetConfig):
        raise ConfigError(f"match_parameters needs unetseg U-Net variants, got model.arch {model.arch!r}")
    widths = level_widths(model.depth, model.base_width, model.width_growth, model.max_width)
    base = model.decoder_widths or default_decoder_widths(model.encoder, widths)

    def count(scale: float) -> tuple[int, UNetConfig]:
        scaled = model.model_copy(update={"decoder_widths": [max(1, round(w * scale)) for w in base]})
        return count_parameters(build_model(scaled, in_ch, out_ch)), scaled

    lo, hi = 0.1, 8.0
    best = count(1.0)
    for _ in range(40):
        if abs(best[0] - target) <= tolerance * target:
            return best[1]
        mid = (lo + hi) / 2
        best = count(mid)
        lo, hi = (mid, hi) if best[0] < target else (lo, mid)
    raise ConfigError(
        f"cannot bring the decoder of {model.skip_modes} within {tolerance:.0%} of {target:,} parameters "
        f"(closest: {best[0]:,})"
    )
