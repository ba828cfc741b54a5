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

from unetseg.data.errors import DataError
from unetseg.data.io import file_stem
from unetseg.data.listing import Case, Listing, channel_list, int_keyed, read_dataset_json


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
    for index, entry in enumerate(training):
        where = f"training[{index}]"
        if not isinstance(entry, dict) or not all(
            isinstance(entry.get(k), str) and entry[k] for k in ("image", "label")
        ):
            listing.problem(path, f'{where}: expected {{"image": path, "label": path}}, got {entry!r}')
            continue
        image = listing.listed_file(root, entry["image"], path, f"{where}.image")
        label = listing.listed_file(root, entry["label"], path, f"{where}.label")
        if image is not None and label is not None:
            listing.add_case(Case(file_stem(image), (image,), label), path, where)
    count = meta.get("numTraining")
    if isinstance(count, int) and count != len(training):
        listing.problem(path, f"numTraining is {count} but 'training' lists {len(training)} case(s)")
    return listing
