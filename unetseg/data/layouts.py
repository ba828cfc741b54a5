"""Dataset layouts: where a config's labelled pairs come from, read in place, never copied.

``data.layout`` names one of:

- ``folders``: ``data.images`` and ``data.masks``, paired by name (:func:`find_pairs`);
- ``nnunet``: an nnU-Net v2 raw dataset at ``data.root`` (:mod:`unetseg.data.nnunet`);
- ``msd``: a Medical Segmentation Decathlon dataset at ``data.root`` (:mod:`unetseg.data.msd`);
- ``csv``: a CSV manifest at ``data.root`` (:mod:`unetseg.data.manifest`).

Every layout ends as the same list of 2D :class:`Sample` s (a case's channel files ride along in
``channel_files``, its name in ``case``), so training, evaluation, the check and the split
never ask which layout they read. :func:`detect_data` recognises a layout from a path (for
``unetseg data check DATA`` and ``unetseg init DATA``); :func:`find_inputs` groups an nnU-Net
``imagesTs`` folder into cases for ``unetseg predict``.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from unetseg.config import DataConfig
from unetseg.data.errors import DataError
from unetseg.data.io import Sample, file_stem, list_image_files
from unetseg.data.listing import Case, Listing, read_dataset_json
from unetseg.data.manifest import read_manifest, subset_names
from unetseg.data.msd import list_msd
from unetseg.data.nnunet import CHANNEL_NAME, complete_cases, dataset_meta, list_nnunet
from unetseg.data.pairing import expand_samples, find_images, find_pairs
from unetseg.data.splits import split_samples

IMAGE_DIRS = ("images", "image", "imgs")
MASK_DIRS = ("masks", "mask", "labels", "label", "gt")
READERS = {"nnunet": list_nnunet, "msd": list_msd, "csv": read_manifest}


def list_cases(data: DataConfig) -> Listing:
    """The cases of an nnunet, msd or csv dataset, with every problem found on the way."""
    assert data.layout != "folders" and data.root is not None
    return READERS[data.layout](data.root)


def case_samples(case: Case, axis: int) -> list[Sample]:
    """The 2D samples of one case, named after the case (slices ``<case>_0007``)."""
    return [
        replace(
            s,
            name=case.name if s.page is None else f"{case.name}_{s.page:04d}",
            channel_files=case.images[1:],
            case=case.name,
        )
        for s in expand_samples(case.images[0], case.mask, axis)
    ]


def labelled_cases(listing: Listing) -> list[Case]:
    """The cases that train or validate: with a mask, not in a manifest's test rows."""
    return [case for case in listing.cases if case.mask is not None and case.subset != "test"]


def labelled_samples(data: DataConfig) -> list[Sample]:
    """Every labelled 2D sample of the configured dataset; the first problem is a DataError."""
    if data.layout == "folders":
        assert data.images is not None and data.masks is not None
        return find_pairs(data.images, data.masks, data.slice_axis)
    listing = list_cases(data)
    listing.raise_if_problems()
    cases = labelled_cases(listing)
    if not cases:
        raise DataError(f"{data.root}: no labelled cases")
    return [sample for case in cases for sample in case_samples(case, data.slice_axis)]


def split_data(data: DataConfig) -> tuple[list[Sample], list[Sample]]:
    """(train, validation) samples of the configured dataset and split."""
    return split_samples(labelled_samples(data), data.split, data)


# --------------------------------------------------------------------------- recognising a dataset


def folder_pair(root: Path) -> tuple[Path, Path]:
    """The image and mask subfolders of ``root`` (``images/`` + ``masks/``, or the other usual names)."""
    pair = []
    for names, what in ((IMAGE_DIRS, "image"), (MASK_DIRS, "mask")):
        found = [root / name for name in names if (root / name).is_dir()]
        if len(found) != 1:
            raise DataError(
                f"{root}: expected one {what} subfolder named {'/'.join(names)}, found "
                + (", ".join(p.name for p in found) if found else "none")
                + "; or pass --images and --masks"
            )
        pair.append(found[0])
    return pair[0], pair[1]


def detect_layout(path: Path) -> str:
    """``csv`` for a file, ``nnunet`` or ``msd`` for a folder with a dataset.json (nnU-Net v2
    has ``file_ending``, the Decathlon a ``training`` list), else ``folders``."""
    path = Path(path)
    if path.is_file():
        return "csv"
    if not (path / "dataset.json").is_file():
        return "folders"
    json_path, meta = read_dataset_json(path, ())
    if "file_ending" in meta:
        return "nnunet"
    if "training" in meta:
        return "msd"
    raise DataError(
        f"{json_path}: neither an nnU-Net v2 dataset.json (no 'file_ending') nor a Decathlon one (no 'training')"
    )


def detect_data(path: Path | None = None, images: Path | None = None, masks: Path | None = None) -> DataConfig:
    """The data section that reads ``path`` (or the ``images``/``masks`` folders) as it is:
    its layout, and for nnU-Net and Decathlon datasets the channels, label map and split
    their metadata give. Other choices keep their defaults (``unetseg init`` plans them)."""
    if path is None:
        if images is None or masks is None:
            raise DataError("give a dataset (a folder or a CSV manifest), or an image folder and a mask folder")
        return DataConfig(images=images, masks=masks)
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such file or folder")
    layout = detect_layout(path)
    if layout == "folders":
        found_images, found_masks = folder_pair(path)
        return DataConfig(images=found_images, masks=found_masks)
    if layout == "csv":
        split = {"mode": "manifest"} if subset_names(path, "val") else {}
        return DataConfig(layout="csv", root=path, split=split)
    listing = READERS[layout](path)
    fields: dict = {"layout": layout, "root": path}
    if listing.channel_names:
        fields["channels"] = len(listing.channel_names)
    if listing.labels:
        fields["label_map"] = (
            {value: index for index, value in enumerate(listing.labels)} if len(listing.labels) > 1 else None
        )
    if listing.split_file is not None:
        fields["split"] = {"mode": "file", "file": listing.split_file, "fold": 0}
    return DataConfig(**fields)


# --------------------------------------------------------------------------- prediction inputs


def _nnunet_named(folder: Path, data: DataConfig) -> bool:
    """Whether inputs follow nnU-Net's naming: the folder sits in an nnU-Net dataset, or the
    model was trained on one."""
    return data.layout == "nnunet" or dataset_meta(folder) is not None


def find_inputs(path: Path, data: DataConfig) -> list[Sample]:
    """Prediction inputs. In an nnU-Net images folder (``imagesTs``) the channel files of a
    case (``case_0000``, ``case_0001``) make one sample named ``case``, so that outputs are
    named as nnU-Net names them (``case.nii.gz``, ``case.png``); elsewhere every image is its
    own input (:func:`unetseg.data.find_images`)."""
    path = Path(path)
    folder = path.parent if path.is_file() else path
    if not _nnunet_named(folder, data) or not folder.is_dir():
        return find_images(path, data.slice_axis)
    files = [f for f in list_image_files(folder) if path.is_dir() or f == path or _case_name(f) == _case_name(path)]
    if not any(CHANNEL_NAME.match(file_stem(f)) for f in files):
        return find_images(path, data.slice_axis)  # plain names: nothing to group
    listing = Listing(folder)
    groups: dict[str, dict[int, Path]] = {}
    for file in files:
        match = CHANNEL_NAME.match(file_stem(file))
        if match is None:
            listing.problem(file, "not named <case>_XXXX like the other inputs (nnU-Net's channel suffix)")
        else:
            groups.setdefault(match["case"], {})[int(match["channel"])] = file
    expected = max(len(channels) for channels in groups.values()) if groups else 1
    ending = files[0].name[len(file_stem(files[0])) :]
    cases = complete_cases(groups, expected, folder, ending, listing)
    listing.raise_if_problems()
    return [
        sample for name, images in cases.items() for sample in _unlabelled(Case(name, images, None), data.slice_axis)
    ]


def _case_name(path: Path) -> str:
    match = CHANNEL_NAME.match(file_stem(path))
    return match["case"] if match else file_stem(path)


def _unlabelled(case: Case, axis: int) -> list[Sample]:
    try:
        return case_samples(case, axis)
    except DataError:  # a broken file: keep it, so predict reports it by name and goes on
        return [Sample(case.name, case.images[0], None, None, None, case.images[1:], case.name)]
