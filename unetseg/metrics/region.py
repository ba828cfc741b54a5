"""Segmentation metrics on class-index maps.

Overlap measures come from MONAI (``compute_dice``, ``compute_iou``); the ISBI 2012
challenge measures (foreground-restricted adapted Rand error and variation of information)
from scikit-image, computed on the regions that the membranes separate.
"""

from __future__ import annotations

import numpy as np
import torch
from skimage.measure import label as connected_components
from skimage.metrics import adapted_rand_error, variation_of_information

LOWER_IS_BETTER = frozenset({"pixel_error", "rand_error", "vi", "vi_split", "vi_merge", "loss", "hd95"})


def _one_hot(classes: np.ndarray, num_classes: int) -> torch.Tensor:
    t = torch.as_tensor(classes, dtype=torch.long)
    return torch.nn.functional.one_hot(t, num_classes).permute(2, 0, 1)[None].float()


def overlap_metrics(pred: np.ndarray, target: np.ndarray, num_classes: int) -> dict[str, float]:
    """Dice and IoU averaged over the foreground classes, and the pixel error.

    A class absent from both maps counts as a perfect match (1.0), so an empty image predicted
    empty is not penalised.
    """
    from monai.metrics import compute_dice, compute_iou  # here: importing MONAI takes seconds

    p, t = _one_hot(pred, num_classes), _one_hot(target, num_classes)
    dice = compute_dice(p, t, include_background=False, ignore_empty=False)
    iou = compute_iou(p, t, include_background=False, ignore_empty=False)
    return {"dice": float(dice.mean()), "iou": float(iou.mean()), "pixel_error": float((pred != target).mean())}


def regions_of(classes: np.ndarray, which: str) -> np.ndarray:
    """Label map of 4-connected regions; 0 marks the separating pixels (ignored by the scores).

    ``background``: regions are the connected parts of class 0 (ISBI: cell interiors between
    membranes). ``foreground``: the connected parts of every class above 0 (nuclei).
    """
    inside = classes == 0 if which == "background" else classes > 0
    return connected_components(inside, connectivity=1).astype(np.int64)


def region_metrics(pred: np.ndarray, target: np.ndarray, which: str) -> dict[str, float]:
    """Foreground-restricted adapted Rand error and variation of information (split + merge)."""
    true_regions, pred_regions = regions_of(target, which), regions_of(pred, which)
    if true_regions.max() == 0:
        return {"rand_error": float("nan"), "vi": float("nan"), "vi_split": float("nan"), "vi_merge": float("nan")}
    rand_error, _, _ = adapted_rand_error(true_regions, pred_regions, ignore_labels=(0,))
    # skimage returns (H(pred | true), H(true | pred)): over-segmentation (split), then merge.
    split, merge = variation_of_information(true_regions, pred_regions, ignore_labels=(0,))
    return {
        "rand_error": float(rand_error),
        "vi": float(merge + split),
        "vi_split": float(split),
        "vi_merge": float(merge),
    }


def _overlaps(true_regions: np.ndarray, pred_regions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pixels shared by every (true, predicted) object pair, and each object's area."""
    n_true, n_pred = int(true_regions.max()), int(pred_regions.max())
    joint = np.bincount((true_regions * (n_pred + 1) + pred_regions).ravel(), minlength=(n_true + 1) * (n_pred + 1))
    inter = joint.reshape(n_true + 1, n_pred + 1)[1:, 1:].astype(np.float64)
    area_true = np.bincount(true_regions.ravel(), minlength=n_true + 1)[1:, None].astype(np.float64)
    area_pred = np.bincount(pred_regions.ravel(), minlength=n_pred + 1)[None, 1:].astype(np.float64)
    return inter, area_true, area_pred


def object_f1(pred_regions: np.ndarray, true_regions: np.ndarray, iou_threshold: float = 0.5) -> float:
    """Object-level F1: a predicted and a true object match when their IoU exceeds the threshold
    (above 0.5 a match is necessarily one-to-one); F1 = 2 TP / (2 TP + FP + FN), 1.0 when both
    maps hold no object. Regions are label maps with 0 as background."""
    n_true, n_pred = int(true_regions.max()), int(pred_regions.max())
    if n_true == 0 and n_pred == 0:
        return 1.0
    inter, area_true, area_pred = _overlaps(true_regions, pred_regions)
    iou = inter / np.maximum(area_true + area_pred - inter, 1)
    tp = int((iou > iou_threshold).sum())
    return 2 * tp / (n_true + n_pred) if n_true + n_pred else 1.0


def object_errors(pred_regions: np.ndarray, true_regions: np.ndarray) -> dict[str, float]:
    """Counts of the two topological errors of blob segmentation: ``merges``, predicted objects
    that hold the larger part (over half) of two or more true objects, and ``splits``, true
    objects of which two or more predicted objects lie mostly (over half) inside. They tell a
    merge from a split where the object F1 sees only unmatched objects."""
    if true_regions.max() == 0 or pred_regions.max() == 0:
        return {"merges": 0.0, "splits": 0.0}
    inter, area_true, area_pred = _overlaps(true_regions, pred_regions)
    merges = int(((inter / area_true > 0.5).sum(axis=0) >= 2).sum())
    splits = int(((inter / area_pred > 0.5).sum(axis=1) >= 2).sum())
    return {"merges": float(merges), "splits": float(splits)}


def segmentation_metrics(
    pred: np.ndarray, target: np.ndarray, num_classes: int, regions: str = "none"
) -> dict[str, float]:
    """All metrics of one image; ``regions`` enables the region-based ones."""
    if pred.shape != target.shape:
        raise ValueError(f"prediction {pred.shape} and target {target.shape} differ in shape")
    scores = overlap_metrics(pred, target, num_classes)
    if regions != "none":
        scores.update(region_metrics(pred, target, regions))
        scores["object_f1"] = object_f1(regions_of(pred, regions), regions_of(target, regions))
    return scores


def mean_metrics(rows: list[dict[str, float]]) -> dict[str, float]:
    """Mean of every metric over images, skipping NaN (images where a metric is undefined)."""
    if not rows:
        return {}
    keys = [k for k, v in rows[0].items() if isinstance(v, (int, float))]
    return {
        k: float(np.nanmean([r[k] for r in rows])) if any(np.isfinite(r[k]) for r in rows) else float("nan")
        for k in keys
    }


def is_better(metric: str, value: float, best: float | None) -> bool:
    if best is None or not np.isfinite(best):
        return bool(np.isfinite(value))
    return value < best if metric in LOWER_IS_BETTER else value > best
