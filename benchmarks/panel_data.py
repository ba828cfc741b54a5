"""The planning panel's datasets: where each one's train and test folders are, how its masks
mark the foreground, and how a folder of predicted masks is scored against its test truth.

Every dataset is laid out as ``<root>/{train,test}/{images,masks}`` (and ``test/fov`` where a
field-of-view mask limits the scoring), so that ``unetseg init <root>/train`` and
``unetseg predict <root>/test/images`` are exactly what a user types. Two are made here:

- ``isbi``: ISBI 2012 has no labelled test set, so slices 0-24 are the training folder and
  25-29 (the hand-tuned config's validation slices) the test folder: the planner never sees
  them and picks its own validation images among 0-24.
- ``dsb_x4``: the DSB 2018 nuclei upscaled 4x (bicubic images, nearest masks): the same task
  with objects 4x larger and 16x the pixels. Its predictions are scaled back (area, then a
  majority vote) and scored on the original test masks, so x1 and x4 are scored on the same
  pixels.
- ``lesions``: synthetic colour photographs with one large lesion each, drawn after
  dermoscopy (``panel_lesions.py``): the kind the shipped and licensed sets lack.
- ``polyps``: synthetic endoscopy frames with one polyp each (``panel_polyps.py``): a second
  framed kind, told from its surroundings by shading rather than darkness, so the framed-object
  rules are measured on two kinds.
- ``ultrasound``: synthetic grey breast-ultrasound scans with one lesion each
  (``panel_ultrasound.py``): a third framed kind, grey, speckled, with dark fat lobules that are
  not labelled.

The licensed panel sets (CHASE_DB1, MoNuSeg) are read in place from ``--panel``; nothing of
them is copied into the repository.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from panel_lesions import make as make_lesions
from panel_polyps import make as make_polyps
from panel_ultrasound import make as make_ultrasound

ROOT = Path(__file__).resolve().parents[1]
IMAGE_SUFFIXES = (".png", ".tif", ".tiff", ".jpg", ".jpeg", ".bmp")
ISBI_TEST = range(25, 30)
UPSCALE = 4


@dataclass(frozen=True)
class PanelSet:
    """One dataset of the panel, laid out for ``init`` and ``predict``."""

    name: str
    kind: str  # what it is, in words, for the report
    root: Path
    foreground_zero: bool = False  # the structure is drawn as value 0 (ISBI's membranes)
    score_scale: int = 1  # predictions are this many times the truth's size (dsb_x4)
    truth: Path | None = None  # test masks to score on, when not root/test/masks
    hand_tuned: str | None = None  # the shipped config tuned on this data, if any
    photographs: bool = False  # a peer resizes whole images rather than cropping

    @property
    def train(self) -> Path:
        return self.root / "train"

    @property
    def test_images(self) -> Path:
        return self.root / "test" / "images"

    @property
    def test_masks(self) -> Path:
        return self.truth or self.root / "test" / "masks"

    @property
    def fov(self) -> Path | None:
        folder = self.root / "test" / "fov"
        return folder if folder.is_dir() else None


def images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)


def _copy(source: Path, target: Path) -> None:
    """A copy of a shipped file in the work folder: a link would point into the checkout the grid
    ran from, and the frozen clones the panel runs from are deleted after it."""
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.is_symlink() or not target.exists():
        target.unlink(missing_ok=True)
        shutil.copyfile(source, target)


def _isbi(cache: Path) -> Path:
    root = cache / "isbi"
    source = ROOT / "data" / "isbi2012" / "train"
    for index in range(30):
        split = "test" if index in ISBI_TEST else "train"
        _copy(source / "image" / f"{index}.png", root / split / "images" / f"{index:02d}.png")
        _copy(source / "label" / f"{index}.png", root / split / "masks" / f"{index:02d}.png")
    return root


def _upscaled(source: Path, cache: Path) -> Path:
    """``source``'s train and test pairs upscaled ``UPSCALE`` times (written once)."""
    root = cache / "dsb_x4"
    done = root / ".complete"
    if done.exists():
        return root
    for split in ("train", "test"):
        for folder, interpolation in (("images", cv2.INTER_CUBIC), ("masks", cv2.INTER_NEAREST)):
            out = root / split / folder
            out.mkdir(parents=True, exist_ok=True)
            for path in images_in(source / split / folder):
                array = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
                if array is None:
                    raise SystemExit(f"{path}: cannot be read")
                big = cv2.resize(array, None, fx=UPSCALE, fy=UPSCALE, interpolation=interpolation)
                cv2.imwrite(str(out / f"{path.stem}.png"), big)
    done.write_text("")
    return root


def panel_sets(panel: Path, cache: Path, names: list[str] | None = None) -> dict[str, PanelSet]:
    """The panel's datasets by name (all, or ``names``); the made ones are built in ``cache`` the
    first time they are asked for."""
    dsb = ROOT / "data" / "dsb2018_nuclei"
    makers = {
        "isbi": lambda: PanelSet(
            "isbi",
            "EM membranes (walls), grey, 512x512, slices 25-29 as test",
            _isbi(cache),
            foreground_zero=True,
            hand_tuned="configs/isbi_cpu.yaml",
        ),
        "dsb": lambda: PanelSet(
            "dsb",
            "light-microscopy nuclei (blobs), grey and colour, 256-1388 px",
            dsb,
            hand_tuned="configs/nuclei_cpu.yaml",
        ),
        "dsb_x4": lambda: PanelSet(
            "dsb_x4",
            "the DSB nuclei upscaled 4x (objects 4x larger, 16x the pixels)",
            _upscaled(dsb, cache),
            score_scale=UPSCALE,
            truth=dsb / "test" / "masks",
        ),
        "chase": lambda: PanelSet(
            "chase", "retinal vessels (thin lines) in colour fundus photographs, 999x960", panel / "chase_db1"
        ),
        "monuseg": lambda: PanelSet("monuseg", "H&E nuclei (dense blobs), colour, 1000x1000", panel / "monuseg"),
        "lesions": lambda: PanelSet(
            "lesions",
            "synthetic photographs, one large lesion each (after dermoscopy), colour, 560-1600 px",
            make_lesions(cache),
            photographs=True,
        ),
        "polyps": lambda: PanelSet(
            "polyps",
            "synthetic endoscopy frames, one polyp each (after colonoscopy), colour, 576-1920 px",
            make_polyps(cache),
            photographs=True,
        ),
        "ultrasound": lambda: PanelSet(
            "ultrasound",
            "synthetic breast-ultrasound scans, one lesion each (after BUSI), grey, 450-900 px",
            make_ultrasound(cache),
            photographs=True,
        ),
    }
    unknown = sorted(set(names or []) - set(makers))
    if unknown:
        raise SystemExit(f"unknown panel dataset(s) {', '.join(unknown)}: choose from {', '.join(makers)}")
    return {name: make() for name, make in makers.items() if names is None or name in names}


def foreground(mask: np.ndarray, zero: bool) -> np.ndarray:
    """The structure's pixels of a mask in the dataset's own convention."""
    if mask.ndim == 3:
        mask = mask.max(axis=2)
    return mask == 0 if zero else mask > 0


def _read(path: Path) -> np.ndarray:
    array = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if array is None:
        raise FileNotFoundError(f"{path}: cannot be read")
    return array


def _downscale(pred: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """A boolean map back to ``shape`` by area averaging and a majority vote."""
    small = cv2.resize(pred.astype(np.float32), (shape[1], shape[0]), interpolation=cv2.INTER_AREA)
    return small >= 0.5


def dice(pred: np.ndarray, truth: np.ndarray) -> float:
    """Dice of two boolean maps; 1 when both are empty (nothing to find, nothing found)."""
    total = pred.sum() + truth.sum()
    return 1.0 if total == 0 else float(2.0 * np.logical_and(pred, truth).sum() / total)


def score_folder(panel_set: PanelSet, predictions: Path) -> dict[str, object]:
    """Per-image Dice of the predicted masks in ``predictions`` (named as the test images),
    inside the field of view where the dataset has one; pooled Dice over all pixels too."""
    per_image: dict[str, float] = {}
    inter = total = 0
    for truth_path in images_in(panel_set.test_masks):
        matches = [p for p in predictions.glob(f"{truth_path.stem}.*") if p.suffix.lower() in IMAGE_SUFFIXES]
        if not matches:
            raise FileNotFoundError(f"no prediction for {truth_path.stem} in {predictions}")
        truth = foreground(_read(truth_path), panel_set.foreground_zero)
        pred = foreground(_read(matches[0]), panel_set.foreground_zero)
        if panel_set.score_scale != 1 or pred.shape != truth.shape:
            pred = _downscale(pred, truth.shape)
        if panel_set.fov is not None:
            inside = _read(panel_set.fov / truth_path.name) > 0
            pred, truth = pred[inside], truth[inside]
        per_image[truth_path.stem] = round(dice(pred, truth), 5)
        inter += int(np.logical_and(pred, truth).sum())
        total += int(pred.sum() + truth.sum())
    values = list(per_image.values())
    return {
        "dice": round(float(np.mean(values)), 5),
        "worst": round(float(np.min(values)), 5),
        "pooled_dice": round(2 * inter / total, 5) if total else 1.0,
        "per_image": per_image,
    }
