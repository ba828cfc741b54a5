"""TensorBoard (when installed): scalars every epoch and, now and then, small pictures of the
first validation samples (image | ground truth | prediction); a failing writer never stops
training."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from unetseg.config import config_from_dict
from unetseg.training import Trainer
from unetseg.training.logger import PICTURE_EPOCHS, PICTURE_HEIGHT, shrink, side_by_side


def test_side_by_side_panels():
    image = np.linspace(0, 2, 12, dtype=np.float32).reshape(3, 4, 1)
    truth = np.array([[0, 1, 2, 2]] * 3)
    pred = np.zeros((3, 4), np.int64)
    picture = side_by_side(image, truth, pred, num_classes=3)
    assert picture.shape == (3, 3 * 4 + 2 * 2, 3) and picture.dtype == np.uint8
    assert picture[0, 0].tolist() == [0, 0, 0] and picture[2, 3].tolist() == [255, 255, 255]  # min-max scaled input
    assert (picture[:, 4:6] == 255).all()  # white bar
    assert picture[0, 6:10, 0].tolist() == [0, 128, 255, 255]  # class k of 3 at k / 2
    assert (picture[:, 12:] == 0).all()
    assert side_by_side(image, None, pred, 2).shape == (3, 2 * 4 + 2, 3)  # no truth: input | prediction


def test_training_writes_scalars_and_validation_pictures(tiny_cfg_dict):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    Trainer(config_from_dict(tiny_cfg_dict), log=lambda *_: None).fit()
    events = EventAccumulator(str(Path(tiny_cfg_dict["output_dir"]) / "tensorboard"), size_guidance={"images": 0})
    events.Reload()
    tags = events.Tags()
    assert {"train_loss", "lr", "val_dice"} <= set(tags["scalars"])
    assert sorted(tags["images"]) == ["val/img_4", "val/img_5"]  # the last of 3 folds of 6 pairs is validation
    pictures = events.Images("val/img_4")
    assert [p.step for p in pictures] == [1]  # the first validation, then one per PICTURE_EPOCHS epochs
    decoded = cv2.imdecode(np.frombuffer(pictures[-1].encoded_image_string, np.uint8), cv2.IMREAD_COLOR)
    assert decoded.shape == (64, 3 * 64 + 2 * 2, 3)
    truth = decoded[:, 66:130, 0]
    assert set(np.unique(truth).tolist()) == {0, 255}  # the blobs of the ground-truth mask


def test_pictures_are_small_and_sparse(tiny_cfg_dict):
    """Issue #27: 3.7 MB of event file per two tiny epochs (three 512x1540 pictures per validation)."""
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    picture = np.zeros((512, 1540, 3), np.uint8)
    assert shrink(picture).shape == (PICTURE_HEIGHT, 770, 3) and shrink(picture[:64]).shape == (64, 1540, 3)
    tiny_cfg_dict["train"]["epochs"] = PICTURE_EPOCHS + 2
    tiny_cfg_dict["train"]["samples_per_epoch"] = 2
    Trainer(config_from_dict(tiny_cfg_dict), log=lambda *_: None).fit()
    events = EventAccumulator(str(Path(tiny_cfg_dict["output_dir"]) / "tensorboard"), size_guidance={"images": 0})
    events.Reload()
    assert [p.step for p in events.Images("val/img_4")] == [1, 1 + PICTURE_EPOCHS]
    assert [s.step for s in events.Scalars("val_dice")] == list(range(1, PICTURE_EPOCHS + 3))  # scalars every epoch


def test_a_failing_tensorboard_writer_does_not_stop_training(tiny_cfg_dict, monkeypatch):
    """Issue #27: a full disk (or a file size limit) under tensorboard/ killed training with
    'OSError: [Errno 27] File too large' from the writer's thread."""
    pytest.importorskip("tensorboard")
    import errno

    from tensorboard.summary.writer import record_writer

    real, calls = record_writer.RecordWriter.write, []

    def write(self, data):
        calls.append(len(data))
        if len(calls) > 3:  # the file's header and the first events go through
            raise OSError(errno.EFBIG, "File too large")
        return real(self, data)

    monkeypatch.setattr(record_writer.RecordWriter, "write", write)
    tiny_cfg_dict["train"]["epochs"] = 3
    messages: list[str] = []
    summary = Trainer(config_from_dict(tiny_cfg_dict), log=messages.append).fit()
    assert len(calls) > 3
    notes = [m for m in messages if "TensorBoard" in m]
    assert notes == [
        "note: TensorBoard logging stopped (File too large); training goes on, metrics.csv and "
        "checkpoints are still written"
    ]
    out = Path(tiny_cfg_dict["output_dir"])
    assert summary["history"][-1]["epoch"] == 3
    assert len((out / "metrics.csv").read_text().strip().splitlines()) == 1 + 3
    assert (out / "checkpoints" / "last.pt").is_file()
