"""After training: choose the post-processing on the validation images (``train.postprocess:
choose``) and store it where ``predict`` finds it, in ``best.pt``'s config, and beside the run
as ``postprocessing.json`` with the Dice of every candidate tried.

The validation images are predicted as ``predict`` will predict (the run's test-time
augmentation included), as nnU-Net chooses on its mirrored cross-validation predictions: a step
measured on the plainer predictions of validation during training answers another question. On
the panel's lesion photographs keeping the largest component raised the Dice of those plainer
predictions on all five seeds and lowered the test Dice on three (docs/your_data.md, rule 9)."""

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
    """Load ``best.pt``'s weights into ``predictor`` (holding the inference settings ``predict``
    will use), predict the validation images without post-processing, choose the steps, and
    write them into ``best.pt`` and the run folder."""
    state = load_checkpoint(best_path)
    predictor.model.load_state_dict(state["model"])
    views = {"none": "once each", "flips": "each with its 3 flips", "d4": "each with its 7 flips and rotations"}
    log(
        f"choosing post-processing on the {len(val_ds.samples)} validation images ({views[predictor.cfg.tta]}, as predict will)"
    )
    predictions: list[np.ndarray] = []
    targets: list[np.ndarray] = []
    for index in range(len(val_ds.samples)):
        item = val_ds[index]
        predictions.append(predictor.classes(predictor.probabilities(item["image"])))
        targets.append(item["mask"].numpy())
    choice = choose_postprocess(predictions, targets, predictor.num_classes, log)
    state["config"].setdefault("inference", {})["postprocess"] = choice.config.model_dump()
    save_checkpoint(best_path, state)
    predicted = {"tta": predictor.cfg.tta, "mode": predictor.cfg.mode}
    text = json.dumps({"checkpoint": best_path.name, "predicted_with": predicted, **choice.record()}, indent=2) + "\n"
    replace_by_rename(best_path.parent.parent / RECORD, lambda tmp: tmp.write_text(text))
    return choice
