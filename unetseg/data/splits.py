"""Splits whose unit is a case, not a 2D sample: blocks of whole cases (``cases``), nnU-Net's
``splits_final.json`` (``file``) and a CSV manifest's split column (``manifest``).

A volume is many 2D samples (its slices); if a split cut through it, neighbouring slices of one
scan would sit on both sides and the validation score would flatter the model. Here every
sample is assigned with its case: the case name a layout gave it (nnU-Net's case identifier,
a manifest row's image name), else its image file (all slices of a volume, all pages of a
TIFF stack, or one ordinary image).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from unetseg.config import DataConfig, SplitConfig
from unetseg.data.errors import DataError
from unetseg.data.io import Sample, file_stem
from unetseg.data.manifest import subset_names
from unetseg.data.pairing import find_pairs

CASE_MODES = ("cases", "file", "manifest")


def case_of(sample: Sample) -> str:
    """The case a sample belongs to (see the module docstring)."""
    return sample.case or file_stem(sample.image)


def _case_blocks(samples: list[Sample], split: SplitConfig, data: DataConfig) -> set[str]:
    """Validation cases of a ``cases`` split: block ``fold`` of the cases in their order."""
    cases = list(dict.fromkeys(case_of(s) for s in samples))
    if len(cases) < split.folds:
        raise DataError(f"{data.source}: {len(cases)} case(s) cannot be cut into {split.folds} folds")
    bounds = np.linspace(0, len(cases), split.folds + 1).round().astype(int)
    fold = split.fold % split.folds
    return set(cases[bounds[fold] : bounds[fold + 1]])


def _split_file_cases(path: Path, fold: int, known: set[str]) -> set[str]:
    """Validation cases of fold ``fold`` of an nnU-Net ``splits_final.json``."""
    try:
        folds = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DataError(f"{path}: not a readable splits file ({err})") from None
    if not isinstance(folds, list) or not folds or not all(isinstance(f, dict) and "val" in f for f in folds):
        raise DataError(f'{path}: expected a list of {{"train": [...], "val": [...]}} (nnU-Net\'s splits_final.json)')
    if not -len(folds) <= fold < len(folds):
        raise DataError(f"{path}: data.split.fold {fold} but the file holds {len(folds)} fold(s)")
    val = {str(name) for name in folds[fold]["val"]}
    unknown = sorted(val - known)
    if unknown:
        raise DataError(f"{path}: fold {fold} validates on case(s) the dataset does not hold: {unknown[:5]}")
    return val


def split_by_case(samples: list[Sample], split: SplitConfig, data: DataConfig) -> tuple[list[Sample], list[Sample]]:
    """(train, validation) for the modes in :data:`CASE_MODES`."""
    if split.mode == "cases":
        val = _case_blocks(samples, split, data)
    elif split.mode == "file":
        assert split.file is not None
        val = _split_file_cases(split.file, split.fold, {case_of(s) for s in samples})
    else:
        assert data.root is not None
        val = subset_names(data.root, "val")
        if not val:
            raise DataError(f"{data.root}: split mode 'manifest' but no row has split 'val'")
    return [s for s in samples if case_of(s) not in val], [s for s in samples if case_of(s) in val]


def split_samples(samples: list[Sample], split: SplitConfig, data: DataConfig) -> tuple[list[Sample], list[Sample]]:
    """Divide pairs into (train, validation) as the split config says."""
    if split.mode == "none":
        return list(samples), []
    if split.mode in CASE_MODES:
        return split_by_case(samples, split, data)
    if split.mode == "folders":
        assert split.val_images is not None and split.val_masks is not None
        return samples, find_pairs(split.val_images, split.val_masks, data.slice_axis)
    if split.mode == "names":
        names = set(split.val_names)
        unknown = names - {s.name for s in samples}
        if unknown:
            raise DataError(f"data.split.val_names: no pair named {sorted(unknown)[:5]} in {data.source}")
        return [s for s in samples if s.name not in names], [s for s in samples if s.name in names]
    if len(samples) < split.folds:
        raise DataError(f"{data.source}: {len(samples)} pairs cannot be cut into {split.folds} folds")
    bounds = np.linspace(0, len(samples), split.folds + 1).round().astype(int)
    fold = split.fold % split.folds
    lo, hi = bounds[fold], bounds[fold + 1]
    return samples[:lo] + samples[hi:], samples[lo:hi]
