"""train.compile on a CPU: a compiled step is tried in a child process first where the model has
a strided 1x1 convolution (torch 2.14.1's inductor was reported to segfault in its backward);
a child that crashes or fails means training without torch.compile and one line saying so."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from conftest import REPO, repo_pythonpath, write_yaml

import unetseg.training.compile_check as compile_check
from unetseg.cli import main
from unetseg.config import config_from_dict
from unetseg.models import build_model

SEGFAULT = [sys.executable, "-c", "import os, signal; os.kill(os.getpid(), signal.SIGSEGV)"]


def strided(tree: dict) -> dict:
    """The tiny config with the case of the report: strided down-sampling, so the first block of
    every deeper level has a stride-2 1x1 projection shortcut, and train.compile on."""
    tree["model"]["downsample"] = "conv"
    tree["train"].update(compile=True, device="cpu", epochs=1)
    return tree


@pytest.mark.parametrize("downsample, expected", [("conv", True), ("maxpool", False)])
def test_the_strided_projection_is_recognised(tiny_cfg_dict, downsample: str, expected: bool) -> None:
    tiny_cfg_dict["model"]["downsample"] = downsample
    cfg = config_from_dict(tiny_cfg_dict)
    model = build_model(cfg.model, cfg.data.channels, cfg.data.out_channels)
    assert compile_check.has_strided_pointwise_conv(model) is expected


def test_a_crashing_compile_trial_means_training_without_compile(tiny_cfg_dict, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(compile_check, "TRIAL", SEGFAULT)

    def no_compile(*args, **kwargs):
        raise AssertionError("torch.compile called after its trial crashed")

    monkeypatch.setattr(torch, "compile", no_compile)
    config = write_yaml(tmp_path / "compiled.yaml", strided(tiny_cfg_dict))
    result = CliRunner().invoke(main, ["train", "--config", str(config)])
    assert result.exit_code == 0, result.output
    notes = [line for line in result.output.splitlines() if line.startswith("train.compile:")]
    assert notes == [
        f"train.compile: a compiled training step of this model crashed (SIGSEGV) on this CPU "
        f"(torch {torch.__version__}); training without torch.compile"
    ]
    assert "done: best dice" in result.output


def test_a_failing_or_hanging_trial_is_described(monkeypatch) -> None:
    monkeypatch.setattr(compile_check, "TRIAL", [sys.executable, "-c", "import sys; sys.exit('inductor said no')"])
    assert compile_check.compile_failure({}) == "failed (inductor said no)"
    monkeypatch.setattr(compile_check, "TRIAL", [sys.executable, "-c", "import time; time.sleep(30)"])
    monkeypatch.setattr(compile_check, "TRIAL_TIMEOUT_S", 1.0)
    assert compile_check.compile_failure({}) == "did not finish in 1 s"


@pytest.mark.slow
def test_compiled_training_with_strided_projections_runs_to_the_end(tiny_cfg_dict, tmp_path: Path) -> None:
    """The real thing, in a child process so that a segfault fails this test instead of pytest:
    compiled where the trial passes (as on the machines this was tried on), eager where it crashes."""
    config = write_yaml(tmp_path / "compiled.yaml", strided(tiny_cfg_dict))
    proc = subprocess.run(
        [sys.executable, "-m", "unetseg", "train", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=900,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": repo_pythonpath()},
    )
    assert proc.returncode == 0, (proc.returncode, proc.stderr[-3000:])
    assert "done: best dice" in proc.stdout


def test_compiled_graphs_are_static_per_shape(tiny_cfg_dict, tmp_path: Path, monkeypatch) -> None:
    """A second input shape must not bring torch's symbolic-shape recompilation, which fails for
    the space-to-depth stem (InductorError: cannot determine truth value of Relational)."""
    calls = []
    monkeypatch.setattr(torch, "compile", lambda module, **options: calls.append(options) or module)
    tiny_cfg_dict["train"].update(compile=True, epochs=1)  # max pooling: no trial, compiled directly
    result = CliRunner().invoke(main, ["train", "--config", str(write_yaml(tmp_path / "c.yaml", tiny_cfg_dict))])
    assert result.exit_code == 0, result.output
    assert calls == [{"dynamic": False}]


TWO_SHAPES = r"""
import sys, torch
from unetseg.models.layers import ConvNormAct
from unetseg.training.compile_check import COMPILE_OPTIONS
options = COMPILE_OPTIONS if sys.argv[1] == "ours" else {}
step = torch.compile(torch.nn.Sequential(ConvNormAct(8, 16, "instance", "relu"), ConvNormAct(16, 16, "instance", "relu")), **options)
for size in (32, 48):
    step(torch.randn(2, 8, size, size, requires_grad=True)).square().mean().backward()
print("both shapes trained")
"""


@pytest.mark.slow
def test_a_second_input_shape_compiles_with_our_options() -> None:
    """The minimal case of the symbolic-shape fault: conv -> instance norm -> ReLU twice, a
    training step at 32x32, then one at 48x48. torch's default fails in its second compilation
    (torch 2.14.1: InductorError, cannot determine truth value of Relational); ours compiles."""
    env = {**os.environ, "PYTHONPATH": repo_pythonpath()}
    ours = subprocess.run(
        [sys.executable, "-c", TWO_SHAPES, "ours"], capture_output=True, text=True, timeout=600, env=env
    )
    assert ours.returncode == 0 and "both shapes trained" in ours.stdout, ours.stderr[-2000:]
