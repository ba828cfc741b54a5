"""Post-processing of predicted masks, chosen on the validation images as nnU-Net chooses it.

A network trained on crops predicts specks far from the object, holes inside it, or a second
object where the data only ever hold one (a skin lesion, an organ); whether removing them helps
depends on the data. nnU-Net settles it empirically after training: each candidate step is
applied to the validation predictions and kept only if the mean Dice goes up. The same is done
here, per foreground class, in a fixed order (fill holes, keep the largest component, drop
components below a size), each step measured on top of the ones kept before it. The choice is
written into ``best.pt``'s config (``inference.postprocess``), so ``predict`` and ``evaluate``
apply it with no option, and ``--no-postprocess`` turns it off.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import ndimage

from unetseg.config import PostprocessConfig

SIZE_FRACTIONS = (0.05, 0.1, 0.25, 0.5)  # drop components below these shares of the median true object
MIN_GAIN = 1e-4  # a step must raise the mean validation Dice by more than float noise


def apply_postprocess(classes: np.ndarray, cfg: PostprocessConfig) -> np.ndarray:
    """``classes`` (H, W class indices) with ``cfg``'s steps applied to each foreground class."""
    if not cfg.active:
        return classes
    out = classes.copy()
    for c in np.unique(classes):
        if c == 0:
            continue
        if cfg.fill_holes:
            out[ndimage.binary_fill_holes(out == c) & (out == 0)] = c
        region = out == c
        if cfg.keep_largest or cfg.min_size:
            labels, count = ndimage.label(region)
            if count:
                sizes = np.bincount(labels.ravel())[1:]
                keep = sizes >= cfg.min_size
                if cfg.keep_largest:
                    keep = np.zeros(count, bool)
                    keep[int(np.argmax(sizes))] = True
                dropped = region & ~np.concatenate([[False], keep])[labels]
                out[dropped] = 0
    return out


def _dice(pred: np.ndarray, target: np.ndarray, num_classes: int) -> float:
    """Mean over foreground classes; 1 where a class is absent from both."""
    scores = []
    for c in range(1, num_classes):
        p, t = pred == c, target == c
        total = p.sum() + t.sum()
        scores.append(1.0 if total == 0 else 2.0 * np.logical_and(p, t).sum() / total)
    return float(np.mean(scores))


@dataclass
class Choice:
    """The chosen steps and the validation Dice of every candidate tried, in order."""

    config: PostprocessConfig
    baseline: float
    tried: list[dict[str, Any]] = field(default_factory=list)

    def summary(self) -> str:
        kept = [t["step"] for t in self.tried if t["kept"]]
        if not kept:
            return f"post-processing: none raised the validation Dice ({self.baseline:.4f}); predict uses none"
        final = max(t["dice"] for t in self.tried if t["kept"])
        return f"post-processing: {', '.join(kept)} (validation Dice {self.baseline:.4f} -> {final:.4f}); in best.pt"

    def record(self) -> dict[str, Any]:
        return {"chosen": self.config.model_dump(), "baseline_dice": self.baseline, "tried": self.tried}


def _candidates(targets: list[np.ndarray]) -> list[tuple[str, dict[str, Any]]]:
    areas = []
    for target in targets:
        labels, count = ndimage.label(target > 0)
        if count:
            areas.extend(np.bincount(labels.ravel())[1:].tolist())
    steps: list[tuple[str, dict[str, Any]]] = [("fill holes", {"fill_holes": True})]
    steps.append(("keep the largest component", {"keep_largest": True}))
    if areas:
        median = float(np.median(areas))
        sizes = sorted({max(2, round(f * median)) for f in SIZE_FRACTIONS})
        steps += [(f"drop components under {s} px", {"min_size": s}) for s in sizes]
    return steps


def choose_postprocess(
    predictions: list[np.ndarray], targets: list[np.ndarray], num_classes: int, log: Callable[[str], None] = print
) -> Choice:
    """The steps that raise the mean Dice of ``predictions`` against ``targets`` (validation)."""

    def score(cfg: PostprocessConfig) -> float:
        return float(np.mean([_dice(apply_postprocess(p, cfg), t, num_classes) for p, t in zip(predictions, targets)]))

    current = PostprocessConfig()
    best = baseline = score(current)
    choice = Choice(current, baseline)
    steps = _candidates(targets)
    for name, update in [s for s in steps if "min_size" not in s[1]]:
        trial = current.model_copy(update=update)
        value = score(trial)
        kept = value > best + MIN_GAIN
        choice.tried.append({"step": name, "dice": round(value, 6), "kept": kept})
        if kept:
            current, best = trial, value
    if not current.keep_largest:  # keeping one component already drops every small one
        sized = []
        for name, update in [s for s in steps if "min_size" in s[1]]:
            value = score(current.model_copy(update=update))
            sized.append((value, name, update))
            choice.tried.append({"step": name, "dice": round(value, 6), "kept": False})
        if sized:
            value, name, update = max(sized, key=lambda item: item[0])
            if value > best + MIN_GAIN:
                current, best = current.model_copy(update=update), value
                next(t for t in choice.tried if t["step"] == name)["kept"] = True
    choice.config = current
    log(choice.summary())
    return choice
