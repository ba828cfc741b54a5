"""After training: choose the post-processing on the validation images (``train.postprocess:
choose``) and store it where ``predict`` finds it, in ``best.pt``'s config, and beside the run
as ``postprocessing.json`` with the Dice of every candidate tried."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np

from unetseg.atomic import replace_by_rename
from unetseg.data import SegmentationDataset
from unetseg.inference.postprocess import Choice, choose_postprocess
from unetseg.inference.predictor import Predictor
from unetseg.models.checkpoint import load_checkpoint, save_checkpoint

RECORD = "postprocessing.json"


def choose_for_run(
    best_path: Path, predictor: Predictor, val_ds: SegmentationDataset, log: Callable[[str], None]
) -> Choice:
    """Load ``best.pt``'s weights into ``predictor``, predict the validation images without
    post-processing, choose the steps, and write them into ``best.pt`` and the run folder."""
    state = load_checkpoint(best_path)
    predictor.model.load_state_dict(state["model"])
    predictions: list[np.ndarray] = []
    targets: list[np.ndarray] = []
    for index in range(len(val_ds.samples)):
        item = val_ds[index]
        predictions.append(predictor.classes(predictor.probabilities(item["image"])))
        targets.append(item["mask"].numpy())
    choice = choose_postprocess(predictions, targets, predictor.num_classes, log)
    state["config"].setdefault("inference", {})["postprocess"] = choice.config.model_dump()
    save_checkpoint(best_path, state)
    text = json.dumps({"checkpoint": best_path.name, **choice.record()}, indent=2) + "\n"
    replace_by_rename(best_path.parent.parent / RECORD, lambda tmp: tmp.write_text(text))
    return choice
