"""Reading and writing images and masks: PNG/JPEG/BMP through OpenCV, TIFF (16-bit, float,
multi-page stacks) through tifffile, slices of 3D volumes (NIfTI, DICOM series) through
:mod:`unetseg.data.volumes`.

Every failure is a :class:`DataError` whose message names the file, because a user with
300 images needs to know *which* one is broken, not that "an image" was.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import tifffile

from unetseg.atomic import replace_by_rename
from unetseg.data import volumes
from unetseg.data.errors import DataError  # defined apart so volumes.py can raise it; imported from here
from unetseg.data.intensity import Normalization, Scaling

IMAGE_SUFFIXES = (".png", ".tif", ".tiff", ".jpg", ".jpeg", ".bmp")
TIFF_SUFFIXES = (".tif", ".tiff")
EXIF_SUFFIXES = (".jpg", ".jpeg", ".png")
LOSSY_SUFFIXES = (
    ".jpg",
    ".jpeg",
)  # masks saved so hold in-between values at every edge  # formats whose EXIF block may say how to turn the pixels
# EXIF orientation -> the turn that shows the image as viewers do (TIFF/EXIF spec, tag 0x0112)
ORIENTATIONS = {
    2: lambda a: a[:, ::-1],
    3: lambda a: a[::-1, ::-1],
    4: lambda a: a[::-1],
    5: lambda a: np.swapaxes(a, 0, 1),
    6: lambda a: np.swapaxes(a, 0, 1)[:, ::-1],
    7: lambda a: np.swapaxes(a, 0, 1)[::-1, ::-1],
    8: lambda a: np.swapaxes(a, 0, 1)[::-1],
}
DEFAULT_SLICE_AXIS = 2  # the last axis of a NIfTI volume (axial slices of a scan in RAS order)


@dataclass(frozen=True)
class Sample:
    """One 2D image (a file, one page of a multi-page TIFF, or one slice of a volume along
    ``axis``) and its mask, if any. ``axis`` is set only for slices of a volume.

    ``channel_files`` are further channels of the same image in files of their own (nnU-Net's
    ``case_0001``, ``case_0002`` beside ``image``, which is ``case_0000``); ``case`` is the
    name a dataset layout gives the case (nnU-Net's case identifier), which outputs are named
    after instead of the file's."""

    name: str
    image: Path
    mask: Path | None = None
    page: int | None = None
    axis: int | None = None
    channel_files: tuple[Path, ...] = ()
    case: str | None = None


def natural_key(text: str) -> list[object]:
    """Sort key that puts 2.png before 10.png (slice order matters for block splits)."""
    return [int(tok) if tok.isdigit() else tok.lower() for tok in re.split(r"(\d+)", text)]


def file_stem(path: Path) -> str:
    """The name without its extension; ``case.nii.gz`` -> ``case``, a DICOM folder's own name."""
    return volumes.volume_stem(path) if volumes.is_volume(path) else Path(path).stem


# What to do with files unetseg does not read, where a conversion is the answer.
CONVERT_HINTS = {
    ".gif": "convert it to PNG (an animated GIF to one PNG per frame, or a multi-page TIFF)",
    ".npy": "save the array as TIFF (tifffile.imwrite keeps its dtype)",
    ".npz": "save each array as TIFF (tifffile.imwrite keeps its dtype)",
    ".webp": "convert it to PNG",
}


def skip_reason(path: Path) -> str | None:
    """Why a folder entry is not an input (None: an image file, a NIfTI file or a DICOM series)."""
    if path.is_file():
        suffix = path.suffix.lower()
        if suffix in IMAGE_SUFFIXES or volumes.is_nifti(path):
            return None
        hint = CONVERT_HINTS.get(suffix)
        return f"unsupported file type {suffix or '(no extension)'}" + (f": {hint}" if hint else "")
    if volumes.is_dicom_series(path):
        return None
    if path.is_dir():
        return "a folder, not an image file (nor a DICOM series: no .dcm files in it)"
    if path.is_symlink():
        return "a symbolic link that leads nowhere (dangling, or a loop)"
    return "not a regular file"


def skipped_entries(folder: Path) -> list[tuple[Path, str]]:
    """The entries of ``folder`` that :func:`list_image_files` leaves out, with the reason, so
    that nothing is skipped without a word (hidden entries such as .DS_Store are not listed)."""
    entries = [(p, skip_reason(p)) for p in Path(folder).iterdir() if not p.name.startswith(".")]
    return sorted(((p, why) for p, why in entries if why is not None), key=lambda item: natural_key(item[0].name))


def list_image_files(folder: Path) -> list[Path]:
    """Image files and volumes (NIfTI files, DICOM series sub-folders) in ``folder``, naturally
    sorted; a missing or empty folder is an error. :func:`skipped_entries` lists the rest."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{folder}: {'a file, not a folder' if folder.exists() else 'no such folder'}")
    files = [p for p in folder.iterdir() if skip_reason(p) is None]
    if not files:
        raise DataError(
            f"{folder}: no image files ({', '.join(IMAGE_SUFFIXES + volumes.NIFTI_SUFFIXES)}) "
            "or DICOM series folders in this folder"
        )
    return sorted(files, key=lambda p: natural_key(p.name))


def tiff_pages(path: Path) -> int:
    """Number of 2D planes in a TIFF: pages of a stack (an RGB page counts once)."""
    try:
        with tifffile.TiffFile(path) as tif:
            return len(tif.pages)
    except Exception as err:  # tifffile raises several types for broken files
        raise DataError(f"{path}: cannot read TIFF ({err})") from None


def expand_stacks(path: Path, axis: int = DEFAULT_SLICE_AXIS) -> list[tuple[Path, int | None]]:
    """A file becomes one entry, a multi-page TIFF one entry per page, a volume one entry per
    slice along ``axis`` (even a one-slice volume: its entry carries the slice index)."""
    if volumes.is_volume(path):
        return [(path, i) for i in range(volumes.num_slices(path, axis))]
    if path.suffix.lower() in TIFF_SUFFIXES:
        pages = tiff_pages(path)
        if pages > 1:
            return [(path, i) for i in range(pages)]
    return [(path, None)]


def read_raw(path: Path, page: int | None = None, axis: int | None = None) -> np.ndarray:
    """The stored array (HxW or HxWxC, RGB order, original dtype); of a volume, slice ``page``
    along ``axis`` (default :data:`DEFAULT_SLICE_AXIS`)."""
    path = Path(path)
    if volumes.is_volume(path):
        return volumes.read_slice(path, page, DEFAULT_SLICE_AXIS if axis is None else axis)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    if path.suffix.lower() in TIFF_SUFFIXES:
        try:
            array = tifffile.imread(path, key=page if page is not None else 0)
        except Exception as err:
            raise DataError(f"{path}: cannot read TIFF ({err})") from None
    else:
        array = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        if array is None:
            raise DataError(f"{path}: not a readable image (corrupt, truncated or unsupported format)")
        if array.ndim == 3 and array.shape[2] in (3, 4):
            array = cv2.cvtColor(array, cv2.COLOR_BGR2RGB if array.shape[2] == 3 else cv2.COLOR_BGRA2RGBA)
        array = upright(array, path)
    if array.ndim == 3 and array.shape[0] in (3, 4) and array.shape[2] not in (3, 4):
        array = np.moveaxis(array, 0, -1)  # planar TIFF (C, H, W)
    if array.ndim not in (2, 3) or min(array.shape[:2]) < 1:
        raise DataError(f"{path}: expected a 2D image, got an array of shape {array.shape}")
    return array


def exif_orientation(path: Path) -> int:
    """The EXIF orientation tag (1 = as stored) of a JPEG or PNG; 1 where there is none.

    Phones and some microscope cameras store pixels as the sensor read them and say in EXIF
    how to turn them. Viewers (and annotation tools) show the turned image, so a mask drawn
    on it only lines up with the image once the image is turned the same way."""
    if path.suffix.lower() not in EXIF_SUFFIXES:
        return 1
    from PIL import Image  # only the header is read

    try:
        with Image.open(path) as handle:
            if path.suffix.lower() == ".png" and "exif" not in handle.info:
                return 1  # no eXIf chunk before the pixels; Pillow's getexif would decode them all to look after
            value = handle.getexif().get(0x0112, 1)
    except Exception:  # unreadable metadata: the pixels as stored (OpenCV read them already)
        return 1
    return value if value in ORIENTATIONS else 1


def upright(array: np.ndarray, path: Path) -> np.ndarray:
    """The pixels of ``path`` turned as its EXIF orientation says, as every viewer shows them."""
    turn = ORIENTATIONS.get(exif_orientation(path))
    return np.ascontiguousarray(turn(array)) if turn else array


def _scale_by_dtype(array: np.ndarray) -> np.ndarray:
    if array.dtype == np.bool_:
        return array.astype(np.float32)
    if np.issubdtype(array.dtype, np.integer):
        info = np.iinfo(array.dtype)
        if info.min == 0:  # one pass without temporaries, the same float32 values: 11x faster on 24 MP
            return np.divide(array, np.float32(info.max), dtype=np.float32)
        return (array.astype(np.float32) - info.min) / float(info.max - info.min)
    return array.astype(np.float32)


def prepare_image(
    array: np.ndarray,
    channels: int,
    normalize: str | Normalization,
    path: Path | str = "<array>",
    scaling: Scaling | None = None,
) -> np.ndarray:
    """Float32 HxWxC with ``channels`` channels and the configured intensity scaling.

    An image with exactly ``channels`` channels is taken as it is. Otherwise alpha is dropped;
    colour becomes grey by luminance (ITU-R 601) when one channel is wanted; grey is repeated
    when three are. The normalisation is fitted to the image itself unless ``scaling`` (fitted
    to a whole volume) is given.
    """
    normalization = Normalization.of(normalize)
    if array.ndim == 3 and array.shape[2] in (2, 4) and array.shape[2] != channels:
        array = array[..., :-1]  # drop alpha
    image = _scale_by_dtype(array) if normalization.mode == "dtype" else array.astype(np.float32)
    if image.ndim == 2:
        image = image[..., None]
    if image.shape[2] != channels and not (image.shape[2] in (1, 3) and channels in (1, 3)):
        raise DataError(
            f"{path}: image has {image.shape[2]} channels but data.channels is {channels} "
            "(grey and colour convert into each other; other counts must match)"
        )
    if array.dtype.kind == "f" and not np.isfinite(image).all():  # integers are always finite
        raise DataError(f"{path}: image contains NaN or infinite values")
    if channels == 1 and image.shape[2] == 3:
        image = image @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
        image = image[..., None]
    elif channels == 3 and image.shape[2] == 1:
        image = np.repeat(image, 3, axis=2)
    if normalization.mode != "dtype":
        image = (scaling or normalization.fit(image)).apply(image)
    return np.ascontiguousarray(image, dtype=np.float32)


def read_image(
    path: Path, channels: int, normalize: str | Normalization, page: int | None = None, axis: int | None = None
) -> np.ndarray:
    """A prepared image (see :func:`prepare_image`); a volume's slice is normalised with
    statistics of the whole volume, so that all its slices are scaled alike."""
    normalization = Normalization.of(normalize)
    scaling = volumes.volume_scaling(path, normalization) if volumes.is_volume(path) else None
    return prepare_image(read_raw(path, page, axis), channels, normalization, path, scaling)


def is_lossy(path: Path) -> bool:
    """Whether a mask file's format is lossy (JPEG), so its stored values are not its labels."""
    return Path(path).suffix.lower() in LOSSY_SUFFIXES


def snap_lossy(raw: np.ndarray) -> np.ndarray:
    """A JPEG mask's labels: every pixel set to the nearer of its two commonest values.

    JPEG stores a 0/255 mask with a halo of in-between values along every edge (and a grey
    mask saved in colour with slightly different channels); read as labels, the halo becomes
    foreground (20 % instead of 9 % on a vessel set) and thin structures look twice as wide.
    The two commonest values are the flat background and foreground, whatever they are
    (0/255, 0/1); a JPEG of more than two classes cannot be recovered this way, which the
    note that goes with it says."""
    grey = raw[..., : 3 if raw.shape[2] >= 3 else 1].mean(axis=2) if raw.ndim == 3 else raw
    grey = np.round(grey).astype(raw.dtype if raw.ndim == 2 else np.uint8)
    values, counts = np.unique(grey, return_counts=True)
    if len(values) < 2:
        return grey
    low, high = np.sort(values[np.argsort(counts)[-2:]])
    return np.where(grey.astype(np.float64) >= (float(low) + float(high)) / 2, high, low).astype(grey.dtype)


def lossy_note(path: Path, raw: np.ndarray) -> str:
    """What snapping a JPEG mask did, for ``data check`` and ``init``."""
    snapped = snap_lossy(raw)
    grey = raw[..., 0] if raw.ndim == 3 else raw
    halo = float(np.mean(~np.isin(grey, np.unique(snapped))))
    return (
        f"a JPEG (lossy) mask: {halo:.1%} of its pixels hold in-between values; each is set to the nearer of "
        f"its two commonest values {np.unique(snapped).tolist()}. Save masks as PNG (JPEG cannot keep "
        "labels, and more than two classes cannot be recovered)"
    )


def read_mask_raw(path: Path, page: int | None = None, axis: int | None = None) -> np.ndarray:
    """The stored label values of a mask file; a JPEG mask's halo snapped (:func:`snap_lossy`)."""
    raw = read_raw(path, page, axis)
    return snap_lossy(raw) if is_lossy(path) else raw


def read_mask(
    path: Path, label_map: dict[int, int] | None, page: int | None = None, axis: int | None = None
) -> np.ndarray:
    """Class indices (HxW, int64). Without a label map, 0 is background and anything else 1."""
    return mask_classes(read_mask_raw(path, page, axis), label_map, path)


def mask_classes(raw: np.ndarray, label_map: dict[int, int] | None, path: Path | str = "<array>") -> np.ndarray:
    """Class indices of a stored mask array (see :func:`read_mask`); the dataset check calls
    it on the raw array it has already read, to also look at the raw values."""
    if raw.ndim == 3:
        if raw.shape[2] in (2, 4):
            raw = raw[..., :-1]
        if not (raw == raw[..., :1]).all():
            raise DataError(f"{path}: colour mask with differing channels; save masks as single-channel label images")
        raw = raw[..., 0]
    if np.issubdtype(raw.dtype, np.floating) and (not np.isfinite(raw).all() or not (raw == np.round(raw)).all()):
        raise DataError(f"{path}: mask must hold integer labels, found fractional or non-finite values")
    if label_map is None:  # no int64 copy first: this runs on every mask before training starts
        return (raw != 0).astype(np.int64)
    raw = raw.astype(np.int64)
    lut_keys = np.array(sorted(label_map), dtype=np.int64)
    found = np.unique(raw)
    unknown = np.setdiff1d(found, lut_keys)
    if unknown.size:
        raise DataError(
            f"{path}: mask values {unknown.tolist()[:10]} are not in data.label_map (known: {lut_keys.tolist()})"
        )
    classes = np.array([label_map[int(k)] for k in lut_keys], dtype=np.int64)
    return classes[np.searchsorted(lut_keys, raw)]


def label_values(classes: np.ndarray, label_map: dict[int, int] | None) -> np.ndarray:
    """Class indices in the dataset's own label values (inverse of the label map), as uint8
    where they fit, else uint16; any shape (a 2D mask or a whole volume)."""
    if label_map is None:
        values = np.array([0, 255], dtype=np.int64)
    else:
        values = np.zeros(max(label_map.values()) + 1, dtype=np.int64)
        for raw, cls in sorted(label_map.items(), reverse=True):  # first raw value wins per class
            values[cls] = raw
    used = values[np.bincount(classes.ravel(), minlength=len(values))[: len(values)] > 0]
    dtype = np.uint8 if used.max(initial=0) <= 255 and used.min(initial=0) >= 0 else np.uint16
    return values.astype(dtype)[classes]  # indexed in the small type: no int64 copy of a large mask


def write_mask(path: Path, classes: np.ndarray, label_map: dict[int, int] | None) -> None:
    """Write class indices back in the dataset's own label values (inverse of the label map)."""
    write_array(path, label_values(classes, label_map))


def write_array(path: Path, array: np.ndarray) -> None:
    """PNG for 8/16-bit integer images, TIFF otherwise (float probability maps); written by
    rename (:mod:`unetseg.atomic`), so a link at ``path`` is replaced, never written through."""
    path = Path(path)

    def write(tmp: Path) -> None:
        if path.suffix.lower() in TIFF_SUFFIXES:
            tifffile.imwrite(tmp, array)
        elif not cv2.imwrite(str(tmp), array):
            raise OSError("OpenCV could not encode the file")

    try:
        replace_by_rename(path, write)
    except OSError as err:
        raise DataError(f"{path}: cannot write ({err})") from None
