"""3D medical volumes (NIfTI ``.nii``/``.nii.gz``, DICOM series) read as stacks of 2D slices.

The 2D U-Net trains on slices along ``data.slice_axis``; a volume is one file (or one DICOM
folder) that :func:`unetseg.data.io.expand_stacks` expands into one sample per slice, as a
multi-page TIFF expands into one per page. Reading goes through MONAI's ``LoadImage``
(``NibabelReader`` for NIfTI, ``PydicomReader`` for DICOM), which needs the optional extra
``unetseg[medical]`` (nibabel, pydicom): the default install stays light.

- **A DICOM series** is a folder holding ``.dcm`` files (a sub-folder of the images folder,
  or the folder given to ``predict``); its slices are ordered by InstanceNumber, its array is
  (columns, rows, slices) with the RAS affine MONAI derives from the DICOM geometry.
- **Read once**: a loaded volume stays in a small cache (the last :data:`CACHED_VOLUMES`
  files), so reading its slices in order decodes the file once, not once per slice.
- **Whole-volume statistics**: intensity normalisation is fitted to the whole volume
  (:func:`volume_scaling`), so all slices of a scan are scaled alike.
- **4D volumes** (the Medical Segmentation Decathlon's multi-modal scans, X x Y x Z x C): the
  4th axis holds channels, so a slice is an H x W x C image and each channel is scaled by
  statistics of its own 3D volume.
- **Writing** (:func:`write_volume`): a prediction is written as NIfTI with the input's affine
  and, for a NIfTI input, its header (voxel sizes, units, orientation codes, description).
"""

from __future__ import annotations

import functools
import importlib
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from unetseg.atomic import replace_by_rename
from unetseg.data.errors import DataError
from unetseg.data.intensity import Normalization, Scaling

NIFTI_SUFFIXES = (".nii.gz", ".nii")
DICOM_SUFFIX = ".dcm"
INSTALL_HINT = "pip install 'unetseg[medical]'"
CACHED_VOLUMES = 4  # an image and its mask, twice over: enough for reading pairs slice by slice


@dataclass(frozen=True)
class Volume:
    """A 3D array in the file's voxel order (4D with channels last) and its voxel-to-world
    (RAS, mm) affine."""

    array: np.ndarray
    affine: np.ndarray


def is_nifti(path: Path) -> bool:
    return Path(path).name.lower().endswith(NIFTI_SUFFIXES)


def is_dicom_series(path: Path) -> bool:
    """A folder holding ``.dcm`` files is one DICOM series (one volume)."""
    path = Path(path)
    return path.is_dir() and any(p.suffix.lower() == DICOM_SUFFIX and p.is_file() for p in path.iterdir())


def is_volume(path: Path) -> bool:
    return is_nifti(path) or is_dicom_series(path)


def volume_stem(path: Path) -> str:
    """``case.nii.gz`` -> ``case`` (both suffixes go); a DICOM folder's own name."""
    name = Path(path).name
    for suffix in NIFTI_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def output_name(path: Path, tag: str = "", stem: str | None = None) -> str:
    """Name of a predicted volume: the input's stem (or ``stem``: an nnU-Net case's name
    without its channel suffix) and extension (NIfTI for DICOM input)."""
    name = Path(path).name.lower()
    suffix = next((s for s in NIFTI_SUFFIXES if name.endswith(s)), ".nii.gz")
    return f"{stem or volume_stem(path)}{tag}{suffix}"


def _nibabel(path: Path) -> Any:
    try:
        import nibabel
    except ImportError:
        raise DataError(f"{path}: reading and writing NIfTI volumes needs nibabel: {INSTALL_HINT}") from None
    return nibabel


@functools.cache
def _loader() -> Any:
    """MONAI's LoadImage, built once: its constructor registers every reader it knows, and the
    GPU DICOM reader among them warns on every construction on a machine without nvImageCodec."""
    logging.getLogger("monai.data.nvimgcodec_pydicom_plugin").setLevel(logging.ERROR)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from monai.transforms import LoadImage

        return LoadImage(image_only=False, dtype=None)


def _reader(path: Path) -> Any:
    if is_nifti(path):
        _nibabel(path)
        from monai.data import NibabelReader

        return NibabelReader()
    try:
        importlib.import_module("pydicom")  # present? MONAI's reader imports it only when reading
    except ImportError:
        raise DataError(f"{path}: reading a DICOM series needs pydicom: {INSTALL_HINT}") from None
    from monai.data import PydicomReader

    return PydicomReader()


def _as_3d(shape: tuple[int, ...], path: Path) -> tuple[int, ...]:
    """A volume's shape, 3D or 4D with channels last: trailing singleton dimensions dropped,
    a 2D image is one slice."""
    dims = list(shape)
    while len(dims) > 3 and dims[-1] == 1:
        dims.pop()
    if len(dims) > 4:
        raise DataError(f"{path}: expected a 3D volume or a 4D one with channels last, got shape {tuple(shape)}")
    return tuple(dims + [1] * (3 - len(dims)))


@functools.lru_cache(maxsize=CACHED_VOLUMES)
def _load(path: Path, _stamp: int) -> Volume:
    reader = _reader(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            image, meta = _loader()(str(path), reader=reader)
    except Exception as err:  # MONAI and its readers raise many types for broken files
        raise DataError(f"{path}: cannot read volume ({type(err).__name__}: {err})") from None
    array = np.asarray(image)
    affine = np.asarray(meta["affine"], dtype=np.float64)
    return Volume(array.reshape(_as_3d(array.shape, path)), affine)


def _stamp(path: Path) -> int:
    """Modification time, part of the cache key: a volume rewritten in place is read again."""
    try:
        return Path(path).stat().st_mtime_ns
    except OSError:
        raise DataError(f"{path}: no such file or folder") from None


def load_volume(path: Path) -> Volume:
    """The whole volume (cached, see :data:`CACHED_VOLUMES`)."""
    path = Path(path)
    return _load(path, _stamp(path))


def _header_shape(path: Path) -> tuple[int, ...]:
    """The 3D or 4D shape without decoding the voxels where the format allows (a NIfTI header)."""
    path = Path(path)
    if not is_nifti(path):
        return load_volume(path).array.shape
    nibabel = _nibabel(path)
    try:
        shape = nibabel.load(path).shape
    except Exception as err:
        raise DataError(f"{path}: cannot read NIfTI header ({type(err).__name__}: {err})") from None
    return _as_3d(shape, path)


def volume_shape(path: Path) -> tuple[int, int, int]:
    """The spatial shape (the 4th axis of a multi-channel volume left out)."""
    return _header_shape(path)[:3]  # type: ignore[return-value]


def volume_channels(path: Path) -> int:
    """Channels of a volume: the length of its 4th axis, 1 for a 3D volume."""
    shape = _header_shape(path)
    return shape[3] if len(shape) == 4 else 1


def voxel_spacing(path: Path) -> tuple[float, float, float]:
    """Voxel sizes along the three spatial axes (mm), from the affine's columns."""
    if is_nifti(path):
        try:
            return tuple(float(z) for z in _nibabel(path).load(path).header.get_zooms()[:3])  # type: ignore[return-value]
        except Exception as err:
            raise DataError(f"{path}: cannot read NIfTI header ({type(err).__name__}: {err})") from None
    return tuple(float(v) for v in np.linalg.norm(load_volume(path).affine[:3, :3], axis=0))  # type: ignore[return-value]


def num_slices(path: Path, axis: int) -> int:
    return volume_shape(path)[axis]


def read_slice(path: Path, index: int | None, axis: int) -> np.ndarray:
    """Slice ``index`` along ``axis``: a 2D array of the two other axes, in their order (with
    the channels last for a 4D volume)."""
    volume = load_volume(path)
    if index is None:
        raise DataError(f"{path}: a volume is read slice by slice; give the slice index")
    if not 0 <= index < volume.array.shape[axis]:
        raise DataError(f"{path}: no slice {index} along axis {axis} (shape {volume.array.shape})")
    return np.take(volume.array, index, axis=axis)


@functools.lru_cache(maxsize=256)
def _scaling(path: Path, _stamp: int, normalization: Normalization, channel: int | None) -> Scaling:
    array = load_volume(path).array
    return normalization.fit(array if channel is None else array[..., channel])


def volume_scaling(path: Path, normalization: Normalization, channel: int | None = None) -> Scaling:
    """The intensity normalisation fitted to the whole volume, or to channel ``channel`` of a
    4D one (kept after the voxels are evicted)."""
    path = Path(path)
    return _scaling(path, _stamp(path), normalization, channel)


def write_volume(path: Path, array: np.ndarray, like: Path) -> None:
    """Write ``array`` (same voxel grid as the volume ``like``) as NIfTI.

    A NIfTI input lends its affine and a copy of its header (data type set to the array's,
    intensity scaling dropped); a DICOM series lends the affine MONAI computed for it.
    """
    nibabel = _nibabel(path)
    like = Path(like)
    if is_nifti(like):
        reference = nibabel.load(like)
        header = reference.header.copy()
        header.set_data_dtype(array.dtype)
        header.set_slope_inter(1.0, 0.0)
        image = type(reference)(array, reference.affine, header)
    else:
        image = nibabel.Nifti1Image(array, load_volume(like).affine)
    try:
        replace_by_rename(Path(path), lambda tmp: nibabel.save(image, str(tmp)))
    except OSError as err:
        raise DataError(f"{path}: cannot write ({err})") from None
