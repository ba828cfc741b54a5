"""What a dataset layout reader returns: the cases it found, with every problem on the way.

A reader (:mod:`unetseg.data.nnunet`, :mod:`unetseg.data.msd`, :mod:`unetseg.data.manifest`)
records problems instead of stopping at the first, so that ``unetseg data check`` can list
them all at once; training stops on the first with :meth:`Listing.raise_if_problems`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from unetseg.data.errors import DataError


@dataclass(frozen=True)
class Case:
    """One labelled (or unlabelled) case: its channel files in channel order and its mask.

    ``subset`` is the split a manifest assigns (``train``, ``val`` or ``test``), if any.
    """

    name: str
    images: tuple[Path, ...]
    mask: Path | None
    subset: str | None = None


@dataclass
class Listing:
    """The cases of a dataset, what its metadata say about them, and the problems found."""

    root: Path
    cases: list[Case] = field(default_factory=list)
    problems: list[tuple[Path, str]] = field(default_factory=list)  # (file, what is wrong with it)
    notes: list[tuple[Path, str]] = field(default_factory=list)  # (file, what is legitimate but worth saying)
    labels: dict[int, str] | None = None  # mask value -> class name, from dataset.json
    channel_names: list[str] | None = None  # from dataset.json
    split_file: Path | None = None  # nnU-Net's splits_final.json beside dataset.json
    listed_at: dict[str, str] = field(default_factory=dict, repr=False)  # case name -> where it is listed

    def problem(self, path: Path, what: str) -> None:
        self.problems.append((Path(path), what))

    def listed_file(self, base: Path, entry: str, source: Path, where: str) -> Path | None:
        """The file ``entry`` (relative to ``base`` unless absolute) that ``source`` lists at
        ``where``; a problem naming ``source`` when there is no such file."""
        path = Path(base) / entry  # an absolute entry stays itself; './imagesTr/x' loses its '.'
        if not path.exists():
            self.problem(source, f"{where} {entry}: no such file")
            return None
        if not path.resolve().is_relative_to(Path(base).resolve()):  # legitimate (shared data), but say so
            self.notes.append((Path(source), f"{where} {entry} lies outside {base}: read from {path.resolve()}"))
        return path

    def add_case(self, case: Case, source: Path, where: str) -> None:
        """Add ``case`` unless its name was listed before (names identify cases and outputs)."""
        if case.name in self.listed_at:
            self.problem(source, f"{where}: case name {case.name!r} repeats {self.listed_at[case.name]}'s")
            return
        self.listed_at[case.name] = where
        self.cases.append(case)

    def raise_if_problems(self) -> None:
        """One DataError naming the first problem's file (and how many more there are)."""
        if self.problems:
            path, what = self.problems[0]
            more = len(self.problems) - 1
            tail = f" (and {more} more problem(s); unetseg data check lists them all)" if more else ""
            raise DataError(f"{path}: {what}{tail}")


def read_dataset_json(root: Path, required: tuple[str, ...]) -> tuple[Path, dict[str, Any]]:
    """``root/dataset.json`` as a mapping; a missing file, bad JSON or a missing key is one
    DataError naming the file (and the key)."""
    root = Path(root)
    path = root / "dataset.json"
    if not root.is_dir():
        raise DataError(f"{root}: {'a file, not a dataset folder' if root.exists() else 'no such folder'}")
    if not path.is_file():
        raise DataError(f"{root}: no dataset.json in this folder (an nnU-Net or Decathlon dataset holds one)")
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DataError(f"{path}: not a readable JSON file ({err})") from None
    if not isinstance(meta, dict):
        raise DataError(f"{path}: expected a JSON object at the top level")
    for key in required:
        if key not in meta:
            raise DataError(f"{path}: missing key {key!r}")
    return path, meta


def int_keyed(mapping: Any, path: Path, key: str) -> dict[int, str]:
    """A dataset.json mapping ``{"0": "CT", "1": "PET"}`` as ``{0: "CT", 1: "PET"}``, with keys
    0..N-1; anything else is a DataError naming the file and key."""
    if not isinstance(mapping, dict) or not mapping:
        raise DataError(f"{path}: {key!r} must be a non-empty mapping, got {mapping!r}")
    try:
        result = {int(k): str(v) for k, v in mapping.items()}
    except (TypeError, ValueError):
        raise DataError(f"{path}: {key!r} keys must be integers, got {sorted(map(str, mapping))}") from None
    return result


def channel_list(mapping: Any, path: Path, key: str) -> list[str]:
    """Channel names in channel order (keys 0..N-1)."""
    channels = int_keyed(mapping, path, key)
    if sorted(channels) != list(range(len(channels))):
        raise DataError(f"{path}: {key!r} keys must be 0..{len(channels) - 1}, got {sorted(channels)}")
    return [channels[i] for i in range(len(channels))]
