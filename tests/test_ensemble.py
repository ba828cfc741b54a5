"""Ensembles: ``predict`` with several checkpoints averages their class probabilities, and
refuses members whose classes, label map, channels or normalisation differ."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ckpt_helpers import write_checkpoint
from cli_helpers import assert_clean_failure, invoke

from unetseg.config import InferenceConfig
from unetseg.data.io import read_raw
from unetseg.inference.predictor import Ensemble, Predictor


class Constant(torch.nn.Module):
    def __init__(self, logits: list[float]) -> None:
        super().__init__()
        self.logits = torch.tensor(logits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits[None, :, None, None].expand(x.shape[0], -1, *x.shape[2:])


def test_ensemble_averages_probabilities_not_logits():
    members = [Predictor(Constant([a, b, 0.0]), InferenceConfig(), 3) for a, b in ((4.0, 0.0), (0.0, 2.0))]
    probs = Ensemble(members).probabilities(torch.zeros(1, 5, 6))
    expected = (torch.softmax(torch.tensor([4.0, 0, 0]), 0) + torch.softmax(torch.tensor([0.0, 2, 0]), 0)) / 2
    assert torch.allclose(probs[:, 2, 3], expected, atol=1e-6)
    assert Ensemble(members).classes(probs).shape == (5, 6)


def test_two_checkpoints_average_to_the_mean_of_their_probability_maps(tmp_path, pair_dirs, tiny_cfg_dict):
    images, _ = pair_dirs
    a = write_checkpoint(tmp_path / "a.pt", tiny_cfg_dict, seed=0)
    b = write_checkpoint(tmp_path / "b.pt", tiny_cfg_dict, seed=1)
    for name, ckpts in (("a", [a]), ("b", [b]), ("ab", [a, b])):
        args = [x for ckpt in ckpts for x in ("--checkpoint", ckpt)]
        result = invoke("predict", images, *args, "--out", tmp_path / name, "--prob", "--tta", "flips")
        assert result.exit_code == 0, result.output
    for i in range(6):
        pa, pb, pab = (read_raw(tmp_path / n / f"img_{i}_prob.tif") for n in ("a", "b", "ab"))
        assert not np.allclose(pa, pb, atol=1e-3)  # two different models
        np.testing.assert_allclose(pab, (pa + pb) / 2, atol=1e-6)
        mask = read_raw(tmp_path / "ab" / f"img_{i}.png")
        assert ((mask == 255) == (pab > 0.5)).all()


@pytest.mark.parametrize(
    "changes, fragment",
    [
        ({"label_map": {0: 0, 128: 1, 255: 2}}, "data.num_classes 3 vs 2"),
        ({"channels": 3}, "data.channels 3 vs 1"),
        ({"label_map": {0: 1, 255: 0}}, "data.label_map"),
    ],
)
def test_members_that_disagree_are_refused(changes, fragment, tmp_path, pair_dirs, tiny_cfg_dict):
    images, _ = pair_dirs
    a = write_checkpoint(tmp_path / "a.pt", tiny_cfg_dict)
    other = write_checkpoint(tmp_path / "other.pt", tiny_cfg_dict, data_changes=changes)
    result = invoke("predict", images, "--checkpoint", a, "--checkpoint", other, "--out", tmp_path / "o")
    assert_clean_failure(result, "other.pt: cannot be averaged with", fragment)
    assert not (tmp_path / "o").exists()
