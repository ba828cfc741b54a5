"""Medical Segmentation Decathlon datasets, read in place (``data.layout: msd``).

::

    Task01_BrainTumour/
      dataset.json   modality {"0": "FLAIR", "1": "T1w", ...}, labels {"0": "background", "1": "edema"},
                     training [{"image": "./imagesTr/BRATS_001.nii.gz", "label": "./labelsTr/BRATS_001.nii.gz"}],
                     test ["./imagesTs/BRATS_485.nii.gz"]
      imagesTr/      one volume per case; a multi-modal case is 4D, its modalities on the 4th axis
      labelsTr/

The ``training`` list is the truth (the Decathlon's archives also hold macOS ``._`` files
beside the volumes, which it never lists); paths are relative to the dataset folder.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from unetseg.data.errors import DataError
from unetseg.data.io import file_stem
from unetseg.data.listing import Case, Listing, channel_list, int_keyed, read_dataset_json


def _entry_path(root: Path, entry: Any, where: str, json_path: Path, listing: Listing) -> Path | None:
    if not isinstance(entry, str) or not entry:
        listing.problem(json_path, f"{where}: expected a file path, got {entry!r}")
        return None
    path = root / entry  # an absolute entry stays itself; './imagesTr/x' loses its '.'
    if not path.is_file():
        listing.problem(path, f"no such file (listed at {where} in {json_path.name})")
        return None
    return path


def list_msd(root: Path) -> Listing:
    """The cases of the ``training`` list."""
    root = Path(root)
    path, meta = read_dataset_json(root, ("training", "labels"))
    labels = int_keyed(meta["labels"], path, "labels")
    if 0 not in labels:
        raise DataError(f"{path}: 'labels' has no value 0 (the Decathlon's background)")
    channels = channel_list(meta["modality"], path, "modality") if "modality" in meta else None
    listing = Listing(root, labels=dict(sorted(labels.items())), channel_names=channels)
    training = meta["training"]
    if not isinstance(training, list) or not training:
        raise DataError(f"{path}: 'training' must be a non-empty list of {{image, label}} entries")
    seen: dict[str, int] = {}
    for index, entry in enumerate(training):
        where = f"training[{index}]"
        if not isinstance(entry, dict) or "image" not in entry or "label" not in entry:
            listing.problem(path, f"{where}: expected {{\"image\": ..., \"label\": ...}}, got {entry!r}")
            continue
        image = _entry_path(root, entry["image"], f"{where}.image", path, listing)
        label = _entry_path(root, entry["label"], f"{where}.label", path, listing)
        if image is None or label is None:
            continue
        name = file_stem(image)
        if name in seen:
            listing.problem(path, f"{where}: case {name!r} is listed twice (also at training[{seen[name]}])")
            continue
        seen[name] = index
        listing.cases.append(Case(name, (image,), label))
    count = meta.get("numTraining")
    if isinstance(count, int) and count != len(training):
        listing.problem(path, f"numTraining is {count} but 'training' lists {len(training)} case(s)")
    return listing
