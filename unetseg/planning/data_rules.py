"""Planning the ``data`` section from the fingerprint: where the pairs are, the input channels,
which mask values are which class, the intensity normalisation, the slice axis and the split.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from unetseg.planning.anchors import BLOBS, PANEL_FRAME_SIZE
from unetseg.planning.fingerprint import Fingerprint
from unetseg.planning.plan import Plan
from unetseg.planning.shapes import ShapeSummary

MAX_CLASS_VALUES = 8  # more distinct mask values than this are instance ids, not classes
DTYPE_RANGE_USED = 0.25  # integer images using less of their type's range are rescaled per image
ANISOTROPY = 2.0  # a voxel axis this much coarser than the others is the slice axis
CACHE_SHARE = 0.25  # cache decoded images while they take at most this share of the memory
SMALL_SET = 50  # below this many 2D images (not cases of a volume), every image trains (rule 15, the panel)
LARGE_OBJECTS = 2.0  # blobs this many times the blob recipe's extent are shrunk back to it
CROP = 256  # the crop both recipes train on; an image is never shrunk below one crop
FRAMED_PARTS = 2  # at most this many objects per image (median) ...
FRAMED_EXTENT = 0.25  # ... spanning at least this share of the median image's shorter side: a framed object


@dataclass(frozen=True)
class Structure:
    """What the foreground is, as the planner reads the masks."""

    kind: str  # "walls", "lines" or "blobs"
    shape: ShapeSummary | None
    zero_is_foreground: bool  # value 0 draws the structure (ISBI: black membranes on white cells)


def _pct(share: float) -> str:
    return f"{100 * share:.0f} %" if share >= 0.01 else f"{100 * share:.2f} %"


def read_structure(fp: Fingerprint) -> Structure:
    """Walls, lines or blobs; and, for two-valued masks without dataset.json labels, whether
    value 0 is the structure."""
    zero, nonzero = fp.zero, fp.nonzero
    if fp.labels is None and zero is not None and zero.walls and not (nonzero is not None and nonzero.walls):
        return Structure("walls", zero, True)
    if nonzero is None:
        return Structure("blobs", None, False)
    return Structure(nonzero.kind, nonzero, False)


def _label_map(plan: Plan, fp: Fingerprint, structure: Structure) -> None:
    values = fp.mask_values
    shares = ", ".join(f"{v}: {_pct(s)}" for v, s in list(values.items())[:6])
    if fp.labels:
        label_map = {value: index for index, value in enumerate(fp.labels)}
        names = ", ".join(f"{value} {name}" for value, name in fp.labels.items())
        plan.set(
            "data.label_map",
            label_map,
            f"dataset.json's labels ({names}) as classes 0..{len(label_map) - 1}; measured pixel shares {shares}",
        )
        return
    if structure.zero_is_foreground:
        other = next(v for v in values if v != 0)
        assert structure.shape is not None
        plan.set(
            "data.label_map",
            {0: 1, other: 0},
            f"mask value 0 covers {_pct(values[0])} of the pixels as thin walls (median width "
            f"{structure.shape.width:.0f} px) that cut the value-{other} area into {structure.shape.regions:.0f} "
            f"regions per image: the walls are the structure to segment, so 0 is the foreground class 1 (as in "
            f"ISBI 2012's membrane labels). Use {{0: 0, {other}: 1}} if the regions are what you want",
        )
        return
    nonzero = [v for v in values if v != 0]
    if 1 < len(nonzero) <= MAX_CLASS_VALUES:
        label_map = {value: index for index, value in enumerate(values)}
        plan.set(
            "data.label_map",
            label_map,
            f"masks hold {len(values)} values ({shares}): each is a class, in the order of its value",
        )
        return
    why = (
        f"masks hold {len(values)} distinct values (a median {fp.values_per_mask:.0f} per mask): instance ids, "
        "so any non-zero value is foreground"
        if len(nonzero) > MAX_CLASS_VALUES
        else f"mask values {shares}: 0 is background, the other value foreground"
    )
    plan.set("data.label_map", None, f"{why} (the default map)")


def _channels(plan: Plan, fp: Fingerprint) -> None:
    if fp.channel_names:
        why = f"dataset.json names {len(fp.channel_names)} channel(s) ({', '.join(fp.channel_names)}): " + (
            "each channel file or 4th-axis volume is one input channel, normalised on its own"
            if fp.multichannel
            else "one input channel per name"
        )
    elif fp.multichannel:
        why = (
            f"the volumes hold {fp.channels} channels on their 4th axis: one input channel each, normalised on its own"
        )
    elif fp.colour:
        why = (
            f"{fp.colour} of {fp.measured} measured images are in colour: every image is read as 3 channels "
            "(grey ones repeated), as nuclei_cpu.yaml reads its mixed set"
        )
    else:
        why = f"all {fp.measured} measured images are grey (one channel, or R = G = B)"
    plan.set("data.channels", fp.channels, why)


def _is_ct(fp: Fingerprint) -> bool:
    if fp.channel_names:
        return any(name.strip().upper() == "CT" for name in fp.channel_names)
    return fp.volumes and fp.value_range[0] <= -500 and not any(d.startswith("uint") for d in fp.dtypes)


def _normalisation(plan: Plan, fp: Fingerprint) -> None:
    low, high = fp.percentiles
    if _is_ct(fp):
        lo, hi = fp.foreground_percentiles or fp.percentiles
        center, width = round((lo + hi) / 2, 1), round(max(hi - lo, 1.0), 1)
        plan.set(
            "data.normalize",
            "window",
            "CT: values in Hounsfield units, which mean the same in every scan, so one fixed window for all "
            "(as nnU-Net clips CT to its foreground's 0.5-99.5th percentiles)",
        )
        plan.set(
            "data.window",
            [center, width],
            f"[center, width] spanning the labelled voxels' 0.5-99.5th percentiles, {lo:.0f} to {hi:.0f} HU",
        )
        return
    if fp.volumes or fp.multichannel:
        plan.set(
            "data.normalize",
            "percentile",
            f"{'volumes' if fp.volumes else 'modalities'} without a fixed intensity unit (values {low:.4g} to "
            f"{high:.4g}, dtype {', '.join(fp.dtypes)}): clip to each {'volume' if fp.volumes else 'image'}'s "
            "0.5-99.5th percentiles and z-score, per channel (nnU-Net's scheme for MR and other non-CT images)",
        )
        return
    dtype = max(fp.dtypes, key=fp.dtypes.get)
    mixed = len(fp.dtypes) > 1
    if not mixed and np.issubdtype(np.dtype(dtype), np.integer):
        top = float(np.iinfo(np.dtype(dtype)).max)
        if high >= DTYPE_RANGE_USED * top:
            plan.set(
                "data.normalize",
                "dtype",
                f"{dtype} images using {low:.0f}-{high:.0f} of 0-{top:.0f} "
                f"(0.5-99.5th percentiles): divided by {top:.0f}, as both anchors read their 8-bit images",
            )
            return
        why = f"{dtype} images using only {low:.0f}-{high:.0f} of 0-{top:.0f}: dividing by {top:.0f} would leave them dark,"
    elif not mixed and low >= 0.0 and fp.value_range[1] <= 1.0:
        plan.set("data.normalize", "dtype", f"{dtype} images already in [0, 1]: taken as they are")
        return
    else:
        why = f"images of {'mixed types ' + ', '.join(fp.dtypes) if mixed else dtype} ({low:.4g} to {high:.4g}):"
    plan.set(
        "data.normalize", "percentile", f"{why} so each image is clipped to its 0.5-99.5th percentiles and z-scored"
    )


def _slice_axis(plan: Plan, fp: Fingerprint) -> None:
    if fp.spacing is None:
        return
    spacing = np.asarray(fp.spacing)
    coarse = int(np.argmax(spacing))
    sizes = " x ".join(f"{v:.2g}" for v in spacing)
    if spacing[coarse] >= ANISOTROPY * np.median(spacing):
        plan.set(
            "data.slice_axis",
            coarse,
            f"voxels are {sizes} mm: 2D slices across the coarse axis {coarse} keep "
            "the fine in-plane detail (nnU-Net's 2D configuration slices the same way)",
        )
    else:
        plan.set(
            "data.slice_axis", 2, f"voxels are {sizes} mm, about isotropic: slices along the last axis (axial in RAS)"
        )


def _split(plan: Plan, fp: Fingerprint) -> None:
    data = fp.data
    if data.split.mode == "file":
        plan.set(
            "data.split",
            {"mode": "file", "file": str(data.split.file), "fold": 0},
            "nnU-Net's splits_final.json beside dataset.json: its fold 0 (the one nnU-Net trains first)",
        )
    elif data.split.mode == "manifest":
        plan.set(
            "data.split",
            {"mode": "manifest"},
            "the manifest's split column: its val rows validate, test rows are left out",
        )
    elif fp.cases < fp.planes and fp.cases >= 2:
        folds = min(5, fp.cases)
        plan.set(
            "data.split",
            {"mode": "cases", "folds": folds, "fold": -1},
            f"{fp.cases} cases of {fp.planes / fp.cases:.0f} slices or pages each: the last 1/{folds} of the cases "
            "validates, each case whole, so no scan has slices on both sides",
        )
    elif fp.planes < SMALL_SET:
        plan.set(
            "data.split",
            {"mode": "none"},
            f"{fp.planes} images, a small set: every one trains and none validates (a validation block would take "
            "a sixth of them away); the final weights predict. Planning panel, seed 0: MoNuSeg (30 images) "
            "0.800 against 0.783 with a validation block; CHASE (20) 0.786 against 0.790",
        )
    else:
        unit = "slices of the one volume" if fp.cases == 1 and fp.planes > 1 else "images"
        plan.set(
            "data.split",
            {"mode": "block", "folds": 5, "fold": -1},
            f"{fp.planes} {unit}: the last {fp.planes // 5} (1/5) validate, a contiguous block of the "
            "naturally sorted names, so neighbouring slices or tiles of one acquisition stay on one side",
        )


def working_scale(plan: Plan, fp: Fingerprint) -> float:
    """The planned resize factor of the median image (``data.scale``, or what ``data.short_side``
    makes of the median image)."""
    short_side = plan.get("data.short_side", None)
    return short_side / min(fp.median_size) if short_side else float(plan.get("data.scale", 1.0))


def _cache(plan: Plan, fp: Fingerprint, memory_gb: float) -> None:
    """Cache what the dataset keeps: planes at the working resolution (``data.scale``), so
    a set of large photographs shrunk 4x is cached instead of decoded and shrunk per crop."""
    scale = working_scale(plan, fp)
    need = fp.decoded_bytes() * scale**2 / 2**30
    short_side = plan.get("data.short_side", None)
    at = (
        f" at a shorter side of {short_side} px"
        if short_side
        else f" at the working scale {scale:g}"
        if scale < 1
        else ""
    )
    if need <= CACHE_SHARE * memory_gb:
        plan.set(
            "data.cache",
            True,
            f"the decoded set{at} takes about {need:.2g} GiB of this machine's {memory_gb:.0f}: "
            "kept in memory after the first read",
        )
    else:
        plan.set(
            "data.cache",
            False,
            f"the decoded set{at} would take about {need:.0f} GiB of this machine's "
            f"{memory_gb:.0f}: read from disk each time",
        )


def plan_data(plan: Plan, fp: Fingerprint, memory_gb: float) -> Structure:
    """Fill the ``data`` section; returns the structure the other sections plan for."""
    data = fp.data
    if data.layout == "folders":
        plan.note("data", f"image/mask folders read in place, paired by name; {fp.planes} pairs")
        plan.set("data.images", str(data.images), "the image folder")
        plan.set("data.masks", str(data.masks), "the mask folder")
    else:
        what = {
            "nnunet": "an nnU-Net v2 raw dataset (dataset.json, imagesTr, labelsTr)",
            "msd": "a Medical Segmentation Decathlon dataset (dataset.json's training list)",
            "csv": "a CSV manifest (image,mask[,split] per row, paths relative to it)",
        }[data.layout]
        plan.note("data", f"{what}, read in place; {fp.cases} cases, {fp.planes} 2D samples")
        plan.set("data.layout", data.layout, "the dataset's own layout, detected by unetseg init")
        plan.set("data.root", str(Path(data.root)), "the dataset folder" if data.layout != "csv" else "the manifest")
    _channels(plan, fp)
    structure = read_structure(fp)
    _label_map(plan, fp, structure)
    _normalisation(plan, fp)
    _slice_axis(plan, fp)
    _split(plan, fp)
    _scale(plan, fp, structure)
    _cache(plan, fp, memory_gb)
    return structure


def _scale(plan: Plan, fp: Fingerprint, structure: Structure) -> None:
    """The working resolution: objects brought to the size the blob recipe was measured at
    when they are much larger, so a crop holds them with their surroundings (nnU-Net plans a
    target spacing; a photograph has none, so the object's own size stands in for it)."""
    shape = structure.shape
    if structure.kind != "blobs" or shape is None or BLOBS.extent is None:
        what = (
            "thin walls" if structure.kind == "walls" else "thin lines" if structure.kind == "lines" else "no objects"
        )
        plan.set(
            "data.scale",
            1.0,
            f"full resolution: {what} of {shape.width:.0f} px would thin out or vanish if shrunk"
            if shape is not None
            else "full resolution: no labelled objects measured",
        )
        return
    if shape.parts <= FRAMED_PARTS and shape.extent >= FRAMED_EXTENT * min(fp.median_size):
        _framed(plan, fp, shape.extent)
        return
    ratio = shape.extent / BLOBS.extent
    if ratio < LARGE_OBJECTS:
        plan.set(
            "data.scale",
            1.0,
            f"full resolution: objects of {shape.extent:.0f} px, within {LARGE_OBJECTS:g}x of the {BLOBS.extent:.0f} px "
            f"the blob recipe was measured at ({BLOBS.anchor})",
        )
        return
    floor = min(1.0, CROP / fp.min_side)
    limited = floor >= BLOBS.extent / shape.extent
    scale = round(max(floor, BLOBS.extent / shape.extent), 3)
    h, w = fp.median_size
    plan.set(
        "data.scale",
        scale,
        f"objects of {shape.extent:.0f} px are {ratio:.1f}x the {BLOBS.extent:.0f} px the blob recipe was measured at "
        f"({BLOBS.anchor}): images are shrunk to {scale:g} (median {round(w * scale)}x{round(h * scale)}) so a crop "
        "holds objects with their surroundings"
        + (f", no smaller than one {CROP} crop on the smallest side ({fp.min_side} px)" if limited else "")
        + "; predictions are resized back to each image's own size",
    )


def _framed(plan: Plan, fp: Fingerprint, extent: float) -> None:
    """One object per image, filling a share of the frame (a lesion photographed through a
    dermoscope, a fundus, a leaf): the framing, not the camera's pixel count, sets how large it
    is, so each image is brought to one shorter side instead of all by one factor. That side puts
    the median frame's longer side at one recipe crop: the network sees the whole frame (the
    object, its surroundings, the vignette) at the price of one crop, and the budget buys more
    passes over the frames than at a larger size (rule 18's row in docs/your_data.md)."""
    short, long = min(fp.median_size), max(fp.median_size)
    side = min(short, round(CROP * short / long))
    plan.set(
        "data.short_side",
        side,
        f"one object per image spanning {extent:.0f} px, {extent / short:.0%} of the median image's shorter side "
        f"({short} px): the framing sets the object's size, so every image is resized to a shorter side of {side} px, "
        f"which brings the median frame's longer side ({long} px) to one {CROP} crop, and predictions are resized "
        f"back to each image's own size (images from {fp.min_side} px on the shorter side); {PANEL_FRAME_SIZE}",
    )
