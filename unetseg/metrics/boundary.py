"""Fine-detail measures for the skip-connection ablation: boundaries, thin structures, and errors
by distance to the true boundary.

Overlap scores (Dice, IoU) are dominated by the bulk of large regions, so they barely move when a
model blurs 2-6 px membranes or rounds off nuclei outlines; these measures look at exactly that
detail. All functions take class-index maps (HxW integer arrays) of a binary task, class 1 being
the foreground; :func:`detail_metrics` treats every class above 0 as foreground.

Libraries do the heavy lifting: MONAI for the Hausdorff distance, ``scipy.ndimage`` for
boundaries and Euclidean distance transforms, ``skimage.morphology.skeletonize`` for clDice.

Boundary conventions (see :func:`boundary_mask`): a boundary pixel is a foreground pixel with a
4-neighbour *inside the image* that is background, so the image border is not a boundary. MONAI's
Hausdorff distance instead treats pixels outside the image as background; its image-border edges
occur in both maps at the same places and only pull ``hd95`` towards 0 slightly.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
import torch
from scipy.ndimage import binary_dilation, binary_erosion, distance_transform_edt
from skimage.morphology import skeletonize


def _foreground(classes: np.ndarray) -> np.ndarray:
    return np.asarray(classes) > 0


def _check_shapes(pred: np.ndarray, target: np.ndarray) -> None:
    if np.shape(pred) != np.shape(target):
        raise ValueError(f"prediction {np.shape(pred)} and target {np.shape(target)} differ in shape")


def boundary_mask(mask: np.ndarray) -> np.ndarray:
    """Inner boundary of a binary mask: pixels of the mask with a 4-neighbour outside it.

    Erosion by the 4-neighbour cross with ``border_value=1``, so that the image border itself does
    not create boundary pixels (ISBI membranes run off every side of the slice).
    """
    mask = np.asarray(mask, dtype=bool)
    return mask & ~binary_erosion(mask, border_value=1)


def _distance_to(mask: np.ndarray) -> np.ndarray:
    """Euclidean distance of every pixel to the nearest ``True`` pixel of ``mask`` (inf if none)."""
    if not mask.any():
        return np.full(mask.shape, np.inf)
    return distance_transform_edt(~mask)


def boundary_f1(pred: np.ndarray, target: np.ndarray, tolerance: int) -> float:
    """Boundary F1 score (BF score; Csurka et al., BMVC 2013, "What is a good evaluation measure
    for semantic segmentation?") of the foreground.

    Precision is the fraction of predicted boundary pixels within ``tolerance`` px (Euclidean,
    inclusive) of a true boundary pixel, recall the converse; the score is their harmonic mean.
    Unlike Dice it scores only the outlines, so it reacts to displaced or blurred boundaries of thin
    membranes, and the tolerance separates 1-2 px jitter (annotation noise) from real misses.
    Both boundaries empty: 1.0; exactly one empty: 0.0.
    """
    _check_shapes(pred, target)
    bp, bt = boundary_mask(_foreground(pred)), boundary_mask(_foreground(target))
    if not bp.any() and not bt.any():
        return 1.0
    if not bp.any() or not bt.any():
        return 0.0
    precision = float((_distance_to(bt)[bp] <= tolerance).mean())
    recall = float((_distance_to(bp)[bt] <= tolerance).mean())
    if precision + recall == 0:
        return 0.0
    return 2 * precision * recall / (precision + recall)


def hausdorff95(pred: np.ndarray, target: np.ndarray) -> float:
    """Symmetric 95th-percentile Hausdorff distance of the foreground in pixels, from
    ``monai.metrics.compute_hausdorff_distance(percentile=95)`` (Huttenlocher et al., 1993; the 95th
    percentile makes it robust to a few outlier pixels).

    It measures the worst (bar 5 %) boundary displacement, which Dice hides for thin structures.
    NaN when either map has no foreground, where the distance is undefined (MONAI would return
    inf/NaN with a warning); ``mean_metrics`` skips NaN.
    """
    from monai.metrics import compute_hausdorff_distance  # here: importing MONAI takes seconds

    _check_shapes(pred, target)
    fp, ft = _foreground(pred), _foreground(target)
    if not fp.any() or not ft.any():
        return float("nan")
    p = torch.as_tensor(fp)[None, None].float()
    t = torch.as_tensor(ft)[None, None].float()
    with warnings.catch_warnings():
        # MONAI 1.5-1.6 passes its own deprecated ``always_return_as_numpy`` internally.
        warnings.filterwarnings("ignore", message=".*always_return_as_numpy.*", category=FutureWarning)
        hd = compute_hausdorff_distance(p, t, include_background=True, percentile=95)
    return float(hd.item())


def _topology_scores(pred: np.ndarray, target: np.ndarray) -> tuple[float, float]:
    """(Tprec, Tsens) of clDice. An empty skeleton gives 1.0 if the other mask is empty too,
    else 0.0 (so one empty map scores 0, both empty 1)."""
    fp, ft = _foreground(pred), _foreground(target)
    sp, st = skeletonize(fp), skeletonize(ft)
    tprec = float((sp & ft).sum() / sp.sum()) if sp.any() else float(not ft.any())
    tsens = float((st & fp).sum() / st.sum()) if st.any() else float(not fp.any())
    return tprec, tsens


def cldice(pred: np.ndarray, target: np.ndarray) -> float:
    """clDice (Shit et al., CVPR 2021, "clDice - a novel topology-preserving loss function for
    tubular structure segmentation") of the foreground.

    Tprec = |skel(pred) ∩ target| / |skel(pred)|, Tsens = |skel(target) ∩ pred| / |skel(target)|,
    clDice = 2·Tprec·Tsens / (Tprec + Tsens), with ``skimage.morphology.skeletonize``. Scoring
    centrelines rather than area makes a break in a 2 px membrane (which merges two cells) cost
    as much as its length, however thin it is. Both maps empty: 1.0; exactly one empty: 0.0.
    """
    _check_shapes(pred, target)
    tprec, tsens = _topology_scores(pred, target)
    if tprec + tsens == 0:
        return 0.0
    return 2 * tprec * tsens / (tprec + tsens)


def skeleton_recall(pred: np.ndarray, target: np.ndarray) -> float:
    """Tsens of clDice (Shit et al., CVPR 2021): the fraction of the true skeleton covered by the
    predicted foreground, i.e. how much of the membrane network survives (gaps lower it, extra
    foreground does not). Empty true skeleton: 1.0 if the prediction is empty too, else 0.0, as in
    :func:`cldice`.
    """
    _check_shapes(pred, target)
    return _topology_scores(pred, target)[1]


THIN_WIDTH_PX = 2.0
THIN_RECALL = "the share of the true pixels of structures at most 2 px wide that the prediction covers"


def thin_structure(target: np.ndarray, max_width: float = THIN_WIDTH_PX) -> np.ndarray:
    """The true foreground pixels of structures at most ``max_width`` px wide.

    The local width is read off the skeleton: twice the Euclidean distance from a skeleton pixel
    to the nearest background pixel (``distance_transform_edt`` of the foreground, so a pixel
    touching the background is at 1). A 1 px and a 2 px line both come to 2, a 3 px line to 4,
    so ``max_width`` 2 keeps the 1-2 px vessels and nothing wider. Every foreground pixel within
    half that width of such a skeleton pixel is thin (the medial-axis reconstruction of the thin
    parts): the line's own pixels, not the thick vessel it branches from. Where the skeleton of a
    wider structure reaches its rim (the blunt tip of a 3 px vessel) a few tip pixels count too.
    """
    ft = _foreground(target)
    if not ft.any():
        return ft
    skeleton = skeletonize(ft)
    thin_axis = skeleton & (2 * distance_transform_edt(ft) <= max_width)
    return ft & (_distance_to(thin_axis) <= max_width / 2)


def thin_recall(pred: np.ndarray, target: np.ndarray, max_width: float = THIN_WIDTH_PX) -> float:
    """The share of the true pixels of structures at most ``max_width`` px wide
    (:func:`thin_structure`) that the prediction covers: how much of the thinnest vessels
    survives. Dice and even clDice are carried by the wide vessels, which hold most pixels and
    most of the skeleton's length; this recall looks only at the 1-2 px ones, the detail a
    full-resolution skip is credited with. NaN where the truth has no such structure (the
    measure does not apply; ``mean_metrics`` skips NaN)."""
    _check_shapes(pred, target)
    thin = thin_structure(target, max_width)
    if not thin.any():
        return float("nan")
    return float((_foreground(pred) & thin).sum() / thin.sum())


def error_by_distance(pred: np.ndarray, target: np.ndarray, bins: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """Pixel error rate binned by Euclidean distance to the nearest true boundary.

    The true boundary is two-sided: target pixels with a 4-neighbour of the other side of the
    foreground/background split (inner and outer boundary pixels both sit at distance 0).
    Distances come from ``scipy.ndimage.distance_transform_edt`` of the complement of that mask;
    without any true boundary every pixel is at distance inf. ``bins`` are increasing edges in px,
    e.g. ``[0, 1, 2, 3, 4, 6, 8, 12, 16, inf]``; bin i holds ``bins[i] <= d < bins[i+1]``, the
    last bin also its right edge (as in ``np.histogram``), and pixels outside the edges are
    dropped. An error is ``pred != target``.

    Returns (error rate per bin, NaN where the bin is empty; pixel count per bin). A curve per
    model shows where errors sit: long skips should cut errors close to boundaries.
    """
    _check_shapes(pred, target)
    edges = np.asarray(bins, dtype=float)
    if edges.ndim != 1 or len(edges) < 2 or np.any(np.diff(edges) <= 0):
        raise ValueError(f"bins must be at least two strictly increasing edges, got {list(bins)}")
    ft = _foreground(target)
    # Foreground pixels next to background, plus background pixels next to foreground.
    true_boundary = binary_dilation(ft) & ~binary_erosion(ft, border_value=1)
    distance = _distance_to(true_boundary).ravel()
    errors = (np.asarray(pred) != np.asarray(target)).ravel()
    n_bins = len(edges) - 1
    index = np.searchsorted(edges, distance, side="right") - 1
    index[distance == edges[-1]] = n_bins - 1  # the last bin is closed, as in np.histogram
    keep = (index >= 0) & (index < n_bins)
    counts = np.bincount(index[keep], minlength=n_bins).astype(np.int64)
    wrong = np.bincount(index[keep], weights=errors[keep], minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        rate = np.where(counts > 0, wrong / counts, np.nan)
    return rate, counts


def pool_error_by_distance(curves: Sequence[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    """Error rate per distance bin over several images: each image's rates weighted by its pixel
    counts (the pooled rate over all pixels, not a mean of per-image rates). NaN where no image
    has a pixel in the bin."""
    if not curves:
        raise ValueError("no curves to pool")
    rates = np.stack([np.asarray(r, dtype=float) for r, _ in curves])
    counts = np.stack([np.asarray(c, dtype=float) for _, c in curves])
    wrong = np.where(counts > 0, rates * counts, 0.0).sum(axis=0)
    total = counts.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, wrong / total, np.nan)


def detail_metrics(pred: np.ndarray, target: np.ndarray, tolerances: Sequence[int] = (1, 2)) -> dict[str, float]:
    """Fine-detail scores of one image: ``bf1_<t>px`` per tolerance, ``hd95``, ``cldice``,
    ``skeleton_recall`` and ``thin_recall``. Every class above 0 counts as foreground. Only
    ``hd95`` is lower-is-better (listed in ``metrics.LOWER_IS_BETTER``); it is NaN when either map
    has no foreground, ``thin_recall`` when the truth has no structure 2 px wide or less."""
    _check_shapes(pred, target)
    fp, ft = _foreground(pred), _foreground(target)
    scores = {f"bf1_{t}px": boundary_f1(fp, ft, t) for t in tolerances}
    scores["hd95"] = hausdorff95(fp, ft)
    tprec, tsens = _topology_scores(fp, ft)
    scores["cldice"] = 0.0 if tprec + tsens == 0 else 2 * tprec * tsens / (tprec + tsens)
    scores["skeleton_recall"] = tsens
    scores["thin_recall"] = thin_recall(fp, ft)
    return scores
