"""nnU-Net v2 raw datasets, read in place (``data.layout: nnunet``).

::

    Dataset001_Name/
      dataset.json        channel_names {"0": "T2", "1": "ADC"}, labels {"background": 0, "PZ": 1},
                          numTraining, file_ending ".nii.gz" (or ".png", ".tif")
      imagesTr/           <case>_0000<ending>, <case>_0001<ending>: one file per input channel
      labelsTr/           <case><ending>
      imagesTs/           optional test images, named as in imagesTr
      splits_final.json   optional: nnU-Net's folds ({train, val} case names per fold)

An RGB natural image is the one exception nnU-Net allows to one file per channel: a single
``<case>_0000.png`` holding R, G and B for ``channel_names`` R, G, B. Every case must have the
same channel files; a label without its image and an image without its label are errors, as
in nnU-Net's own ``verify_dataset_integrity``.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path
from typing import Any

from unetseg.data.errors import DataError
from unetseg.data.io import IMAGE_SUFFIXES, natural_key
from unetseg.data.listing import Case, Listing, channel_list, read_dataset_json
from unetseg.data.volumes import NIFTI_SUFFIXES

CHANNEL_NAME = re.compile(r"^(?P<case>.+)_(?P<channel>\d{4})$")
READABLE_ENDINGS = IMAGE_SUFFIXES + NIFTI_SUFFIXES
SPLITS_FILE = "splits_final.json"


def _labels(meta: dict[str, Any], path: Path) -> dict[int, str]:
    """nnU-Net v2's ``labels`` (name -> value) as value -> name."""
    labels = meta["labels"]
    if not isinstance(labels, dict) or not labels:
        raise DataError(f"{path}: 'labels' must map class names to mask values, got {labels!r}")
    by_value: dict[int, str] = {}
    for name, value in labels.items():
        if isinstance(value, (list, tuple)):
            raise DataError(
                f"{path}: labels.{name} is a region ({value}): nnU-Net's region-based training is not supported"
            )
        if name == "ignore":
            raise DataError(f"{path}: labels.ignore: nnU-Net's ignore label (unlabelled pixels) is not supported")
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise DataError(f"{path}: labels.{name} must be a non-negative integer mask value, got {value!r}")
        if value in by_value:  # two names for one value: one class would silently lose its name
            raise DataError(
                f"{path}: labels.{name} and labels.{by_value[value]} both have the mask value {value}; "
                "each class needs a value of its own"
            )
        by_value[value] = str(name)
    if 0 not in by_value:
        raise DataError(f"{path}: 'labels' has no value 0 (nnU-Net requires background = 0)")
    return dict(sorted(by_value.items()))


def file_ending(meta: dict[str, Any], path: Path) -> str:
    ending = meta["file_ending"]
    if not isinstance(ending, str) or ending.lower() not in READABLE_ENDINGS:
        raise DataError(f"{path}: file_ending {ending!r}: unetseg reads {', '.join(READABLE_ENDINGS)}")
    return ending


def channel_groups(folder: Path, ending: str, listing: Listing) -> dict[str, dict[int, Path]]:
    """``{case: {channel: file}}`` of the ``<case>_XXXX<ending>`` files in ``folder``; other
    files with the ending are problems, files with other endings are ignored (as by nnU-Net)."""
    groups: dict[str, dict[int, Path]] = {}
    if not folder.is_dir():
        listing.problem(folder, "no such folder")
        return groups
    files = sorted(
        (p for p in folder.iterdir() if p.is_file() and p.name.endswith(ending)), key=lambda p: natural_key(p.name)
    )
    for path in files:
        match = CHANNEL_NAME.match(path.name[: -len(ending)])
        if match is None:
            listing.problem(path, f"not named <case>_XXXX{ending} (nnU-Net's four-digit channel suffix)")
            continue
        groups.setdefault(match["case"], {})[int(match["channel"])] = path
    return groups


def complete_cases(
    groups: dict[str, dict[int, Path]], expected: int, folder: Path, ending: str, listing: Listing
) -> dict[str, tuple[Path, ...]]:
    """Cases with channel files 0..expected-1, in order; the others are problems."""
    cases: dict[str, tuple[Path, ...]] = {}
    for case, channels in groups.items():
        missing = [c for c in range(expected) if c not in channels]
        extra = sorted(c for c in channels if c >= expected)
        if missing:
            listing.problem(
                folder / f"{case}_{missing[0]:04d}{ending}",
                f"missing: case {case!r} needs {expected} channel file(s) {case}_0000..{expected - 1:04d}",
            )
        elif extra:
            listing.problem(
                channels[extra[0]], f"channel {extra[0]:04d} beyond the {expected} channel file(s) of the other cases"
            )
        else:
            cases[case] = tuple(channels[c] for c in range(expected))
    return cases


def files_per_case(groups: dict[str, dict[int, Path]], channel_names: list[str], ending: str, path: Path) -> int:
    """How many channel files a case has: one per channel name, or one RGB file for R, G, B."""
    counts = Counter(len(channels) for channels in groups.values())
    usual = counts.most_common(1)[0][0] if counts else len(channel_names)
    if usual == len(channel_names) or (usual == 1 and len(channel_names) == 3 and ending.lower() in IMAGE_SUFFIXES):
        return usual
    raise DataError(
        f"{path}: channel_names lists {len(channel_names)} channel(s) but the cases in imagesTr have "
        f"{usual} file(s) each"
    )


def list_nnunet(root: Path) -> Listing:
    """The labelled cases of ``root/imagesTr`` and ``root/labelsTr``."""
    root = Path(root)
    path, meta = read_dataset_json(root, ("labels", "file_ending"))
    if "channel_names" not in meta and "modality" not in meta:
        raise DataError(f"{path}: missing key 'channel_names'")
    names = channel_list(meta.get("channel_names", meta.get("modality")), path, "channel_names")
    ending = file_ending(meta, path)
    listing = Listing(root, labels=_labels(meta, path), channel_names=names)
    groups = channel_groups(root / "imagesTr", ending, listing)
    cases = complete_cases(groups, files_per_case(groups, names, ending, path), root / "imagesTr", ending, listing)
    labels_dir = root / "labelsTr"
    label_files = (
        {p.name[: -len(ending)]: p for p in labels_dir.glob(f"*{ending}") if p.is_file()} if labels_dir.is_dir() else {}
    )
    if not labels_dir.is_dir():
        listing.problem(labels_dir, "no such folder")
    for case, images in cases.items():
        if case in label_files:
            listing.cases.append(Case(case, images, label_files[case]))
        elif labels_dir.is_dir():
            listing.problem(images[0], f"no label {case}{ending} in {labels_dir}")
    for case, label in sorted(label_files.items()):
        if case not in groups:
            listing.problem(label, f"no image {case}_0000{ending} in {root / 'imagesTr'}")
    count = meta.get("numTraining")
    if isinstance(count, int) and labels_dir.is_dir() and count != len(label_files):
        listing.problem(path, f"numTraining is {count} but {labels_dir} holds {len(label_files)} label file(s)")
    if (root / SPLITS_FILE).is_file():
        listing.split_file = root / SPLITS_FILE
    return listing


def dataset_meta(folder: Path) -> tuple[str, int] | None:
    """(file ending, channel files per case) from the nnU-Net dataset.json beside ``folder``
    (``imagesTs``'s parent), or None when there is none."""
    try:
        path, meta = read_dataset_json(Path(folder).parent, ("file_ending",))
        names = channel_list(meta.get("channel_names", meta.get("modality")), path, "channel_names")
        ending = file_ending(meta, path)
    except DataError:
        return None
    one_rgb = len(names) == 3 and ending.lower() in IMAGE_SUFFIXES and not any(Path(folder).glob(f"*_0001{ending}"))
    return ending, 1 if one_rgb else len(names)
