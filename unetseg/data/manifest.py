"""CSV manifests, read in place (``data.layout: csv``): one case per row.

::

    image,mask,split
    scans/a.png,labels/a.png,train
    scans/b.png,labels/b.png,val
    scans/c.png,,test

The header row is optional (without it the columns are image, mask, split in that order); the
``split`` column is optional, its values ``train``, ``val`` (or ``validation``) and ``test``
(test rows are left out of training and validation and need no mask). Relative paths are taken
from the CSV file's folder, so a manifest travels with its data. A row that points nowhere is a
problem naming the CSV file and its line.
"""

from __future__ import annotations

import csv
from pathlib import Path

from unetseg.data.errors import DataError
from unetseg.data.io import file_stem
from unetseg.data.listing import Case, Listing

COLUMNS = ("image", "mask", "split")
SUBSETS = {"train": "train", "training": "train", "val": "val", "valid": "val", "validation": "val", "test": "test"}


def _rows(path: Path) -> list[tuple[int, list[str]]]:
    """(line number, cells) of the non-empty rows, the header row dropped."""
    if not path.is_file():
        raise DataError(f"{path}: {'a folder, not a CSV file' if path.exists() else 'no such file'}")
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            rows = [(n, [cell.strip() for cell in row]) for n, row in enumerate(csv.reader(handle), start=1)]
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise DataError(f"{path}: not a readable CSV file ({err})") from None
    rows = [(n, row) for n, row in rows if any(row)]
    if not rows:
        raise DataError(f"{path}: no rows (expected image,mask[,split] per row)")
    return rows


def _columns(path: Path, rows: list[tuple[int, list[str]]]) -> tuple[dict[str, int], list[tuple[int, list[str]]]]:
    """Column positions from the header row (when the first row is one) and the data rows."""
    header = [cell.lower() for cell in rows[0][1]]
    if "image" not in header:
        return {name: i for i, name in enumerate(COLUMNS)}, rows
    unknown = [name for name in header if name and name not in COLUMNS]
    if unknown or "mask" not in header:
        raise DataError(
            f"{path}: line 1: the header must name the columns image, mask and optionally split, got {rows[0][1]}"
        )
    return {name: header.index(name) for name in COLUMNS if name in header}, rows[1:]


def read_manifest(path: Path) -> Listing:
    """Every row as a case (test rows included, with their subset); problems name the line."""
    path = Path(path)
    columns, rows = _columns(path, _rows(path))
    listing = Listing(path)
    for line, row in rows:
        cells = {name: row[i] if i < len(row) else "" for name, i in columns.items()}
        if len(row) > len(COLUMNS) and "split" not in columns:
            listing.problem(path, f"line {line}: {len(row)} columns; expected image,mask[,split]")
            continue
        subset = SUBSETS.get(cells.get("split", "").lower()) if cells.get("split") else None
        if cells.get("split") and subset is None:
            listing.problem(path, f"line {line}: split {cells['split']!r} is not one of train, val, test")
            continue
        if not cells["image"]:
            listing.problem(path, f"line {line}: no image")
            continue
        if not cells["mask"] and subset != "test":
            listing.problem(path, f"line {line}: no mask (only test rows may leave it empty)")
            continue
        image = listing.listed_file(path.parent, cells["image"], path, f"line {line}: image")
        mask = listing.listed_file(path.parent, cells["mask"], path, f"line {line}: mask") if cells["mask"] else None
        if image is not None and (mask is not None or not cells["mask"]):
            listing.add_case(Case(file_stem(image), (image,), mask, subset), path, f"line {line}")
    return listing


def subset_names(path: Path, subset: str) -> set[str]:
    """The case names of the rows whose split is ``subset``."""
    return {case.name for case in read_manifest(path).cases if case.subset == subset}
