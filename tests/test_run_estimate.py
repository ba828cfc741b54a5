"""How long a run will take, guessed before its first step and timed after its first steps: the
estimates, the "epoch k of N, ETA" progress, and the question a GPU-sized run on the CPU is
stopped at."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from conftest import REPO, repo_pythonpath
from torch.utils.flop_counter import FlopCounterMode

import unetseg.cli.train as cli_train
import unetseg.training.forecast as forecast
from unetseg.cli import main
from unetseg.cli.train import cpu_alternative
from unetseg.config import UNetConfig, config_from_dict, load_config
from unetseg.models import build_model
from unetseg.training import Trainer
from unetseg.training.forecast import FirstGuess, flops_per_crop, loader_workers, matmul_rate
from unetseg.training.progress import RunProgress, duration


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def run_steps(progress: RunProgress, clock: FakeClock, steps: int, first_s: float, step_s: float) -> list[bool]:
    announced = []
    for _ in range(steps):
        clock.now += first_s if progress.steps == 0 else step_s
        announced.append(progress.step())
    return announced


def test_duration_reads_like_a_person_would_say_it() -> None:
    assert [duration(s) for s in (42, 480, 3 * 3600 + 1800, 30 * 3600, 3 * 86400)] == [
        "42 s",
        "8 min",
        "3.5 h",
        "30.0 h",
        "3.0 days",
    ]


def test_estimate_from_the_first_steps_when_the_epochs_end_the_run() -> None:
    clock = FakeClock()
    progress = RunProgress(epochs=50, start_epoch=0, steps_per_epoch=10, budget_s=None, clock=clock)
    assert progress.epoch_label(1) == "epoch 1 of 50"
    # The first step (warm-up, compilation) is slow; the rate is read from the steps after it.
    assert run_steps(progress, clock, 4, first_s=30.0, step_s=0.5) == [False, False, True, False]
    assert progress.seconds_per_step() == pytest.approx(0.5)
    assert not progress.budget_bound() and progress.seconds_left() == pytest.approx(496 * 0.5)
    assert progress.estimate() == "expected duration: about 5 min for epochs 1..50 (10 steps an epoch at 0.5 s a step)"
    assert progress.status() == "ETA 4 min"


def test_estimate_when_the_time_budget_ends_the_run_first() -> None:
    clock = FakeClock()
    progress = RunProgress(epochs=1000, start_epoch=0, steps_per_epoch=13, budget_s=480.0, clock=clock)
    assert progress.epoch_label(1) == "epoch 1 of up to 1000"  # not timed yet
    run_steps(progress, clock, 3, first_s=2.0, step_s=0.28)
    assert progress.budget_bound()
    expected = progress.expected_epochs()
    assert expected == pytest.approx(480 / 0.28 / 13, abs=1.5)
    assert progress.epoch_label(1) == f"epoch 1 of ~{expected}"
    assert progress.estimate() == (
        "expected duration: about 8 min; the time budget (train.max_time_s = 480 s) ends the run after about "
        f"{expected} of 1000 epochs (13 steps an epoch at 0.28 s a step)"
    )
    clock.now += 100
    assert progress.status() == f"{duration(102.56)} of the 8 min budget, ETA 6 min"


def test_resumed_run_counts_the_epochs_and_time_already_spent() -> None:
    clock = FakeClock()
    progress = RunProgress(epochs=20, start_epoch=15, steps_per_epoch=2, budget_s=None, spent_s=300.0, clock=clock)
    assert run_steps(progress, clock, 3, first_s=1.0, step_s=1.0)[-1]
    assert progress.estimate().startswith("expected duration: about 10 s for epochs 16..20")
    budgeted = RunProgress(epochs=20, start_epoch=15, steps_per_epoch=2, budget_s=308.0, spent_s=300.0, clock=clock)
    run_steps(budgeted, clock, 3, first_s=1.0, step_s=1.0)
    assert budgeted.budget_bound() and budgeted.seconds_left() == pytest.approx(308 - 300 - 3)


def test_a_run_shorter_than_the_measurement_is_estimated_at_its_end() -> None:
    clock = FakeClock()
    progress = RunProgress(epochs=1, start_epoch=0, steps_per_epoch=2, budget_s=None, clock=clock)
    assert run_steps(progress, clock, 2, first_s=1.0, step_s=1.0) == [False, True]


def invoke(*args: object, **kwargs):
    return CliRunner().invoke(main, [str(a) for a in args], **kwargs)


def test_train_announces_the_duration_and_counts_epochs_of_the_real_total(tiny_cfg_file: Path, tmp_path: Path) -> None:
    result = invoke("train", "--config", tiny_cfg_file, "--out", tmp_path / "run", "--set", "train.device=cpu")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[1].startswith("expected duration: about ") and "(a first guess before any step: " in lines[1]
    assert lines[2].startswith("expected duration: about ") and "for epochs 1..2 (4 steps an epoch at" in lines[2]
    assert lines[3].startswith("epoch 1 of 2 | loss ") and " | ETA " in lines[3]
    assert lines[4].startswith("epoch 2 of 2 | ") and lines[4].endswith(" | ETA 0 s")


def test_the_first_guess_comes_before_the_slow_imports(tiny_cfg_file: Path, tmp_path: Path) -> None:
    """A newcomer should read the expected duration within seconds of the command: the first line
    and the first guess need the split and the model only, so albumentations (about a second to
    import) and MONAI (seconds) are imported after them, in a fresh interpreter as on the command
    line. The run still trains: decoding comes right after the guess."""
    script = f"""
import sys
from unetseg.config import load_config
from unetseg.training import Trainer
seen = []
def log(line):
    if line.startswith("expected duration: about ") and "a first guess" in line:
        seen.append(sorted(m for m in ("albumentations", "monai") if m in sys.modules))
summary = Trainer(load_config({str(tiny_cfg_file)!r}, ["output_dir={tmp_path / "run"}"]), log=log).fit()
print(seen, sorted(m for m in ("albumentations", "monai") if m in sys.modules), len(summary["history"]))
"""
    env = {**os.environ, "PYTHONPATH": repo_pythonpath()}
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[-2] == "[[]] ['albumentations', 'monai'] 2"  # both epochs of the tiny config


def test_a_gpu_sized_run_on_the_cpu_stops_at_the_question(tiny_cfg_file: Path, tmp_path: Path, monkeypatch) -> None:
    """A real estimate: 10^8 epochs of 4 steps take far over an hour on any CPU (at 1 ms a step, 4.6 days)."""
    monkeypatch.setattr(cli_train, "interactive", lambda: True)
    run = tmp_path / "run"
    result = invoke(
        "train",
        "--config",
        tiny_cfg_file,
        "--out",
        run,
        "--set",
        "train.device=cpu",
        "--set",
        "train.epochs=100000000",
        input="n\n",
    )
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    lines = result.output.splitlines()
    assert lines[1].startswith("expected duration: about ")
    assert lines[2].startswith(f"{tiny_cfg_file} looks meant for a GPU: on this CPU the run would take about ")
    assert "; for a CPU shorten it: --set train.max_time_s=1800" in lines[2]
    assert lines[3] == "Train on this CPU anyway? [y/N]: n"
    assert lines[4] == "Error: stopped before training further; pass --yes to train this config on the CPU anyway"
    assert not (run / "checkpoints" / "last.pt").exists()


@pytest.mark.parametrize(
    "flags, answer, said",
    [
        (["--yes"], None, "going on (--yes)"),
        ([], "y\n", "Train on this CPU anyway? [y/N]: y"),
        ([], None, "going on: stdin is not a terminal"),
    ],
)
def test_a_long_cpu_run_goes_on_when_told_to(
    tiny_cfg_file: Path, tmp_path: Path, monkeypatch, flags, answer, said
) -> None:
    monkeypatch.setattr(cli_train, "GPU_RUN_S", 0.0)  # every run counts as long: the tiny one finishes
    monkeypatch.setattr(cli_train, "interactive", lambda: answer is not None or bool(flags))
    result = invoke(
        "train",
        "--config",
        tiny_cfg_file,
        "--out",
        tmp_path / "run",
        "--set",
        "train.device=cpu",
        "--set",
        "train.epochs=1",
        *flags,
        input=answer,
    )
    assert result.exit_code == 0, result.output
    assert "looks meant for a GPU" in result.output and said in result.output
    assert "done: best dice" in result.output


def test_the_cpu_config_for_the_same_data_is_named(monkeypatch) -> None:
    monkeypatch.chdir(REPO)
    isbi = Path("configs/isbi.yaml")
    assert (
        cpu_alternative(isbi, load_config(isbi))
        == "for a CPU use `unetseg train --config configs/isbi_cpu.yaml` (about 8 minutes)"
    )
    nuclei = Path("configs/nuclei.yaml")
    assert cpu_alternative(nuclei, load_config(nuclei)).endswith("configs/nuclei_cpu.yaml` (about 8 minutes)")
    own = Path("configs/isbi_cpu.yaml")  # already the CPU config: shorten it instead
    assert cpu_alternative(own, load_config(own)).startswith("for a CPU shorten it: --set train.max_time_s=1800")


# ---------------------------------------------------------------- before the first step


@pytest.mark.parametrize(
    "model",
    [
        {"depth": 3, "base_width": 4, "encoder": "residual", "norm": "batch", "dropout": 0.5},
        {"depth": 5, "base_width": 8, "stem_stride": 4, "downsample": "conv", "head": "shuffle", "norm": "instance"},
    ],
)
@pytest.mark.parametrize("height, width", [(32, 32), (256, 256), (300, 200)])
def test_the_first_guess_counts_the_flops_of_a_training_step_and_leaves_the_model_as_it_was(model, height, width):
    """Counted on a small input and scaled by area, the FLOPs match those of a real forward and
    backward pass at the crop's size (padded to the network's multiple, 300x200 included), and
    counting them moves no batch-norm statistic, draws no random number and leaves no gradient."""
    torch.manual_seed(0)
    net = build_model(UNetConfig(arch="unet", **model), 1, 1).train()
    with FlopCounterMode(display=False) as counter:
        net(torch.rand(1, 1, height, width)).sum().backward()
    net.zero_grad(set_to_none=True)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    rng = torch.get_rng_state()
    counted = flops_per_crop(net, 1, height, width, torch.device("cpu"))
    assert counted == pytest.approx(counter.get_total_flops(), rel=0.05)
    assert net.training and all(p.grad is None for p in net.parameters())
    assert all(torch.equal(v, before[k]) for k, v in net.state_dict().items())
    assert torch.equal(torch.get_rng_state(), rng)


def test_the_matrix_rate_is_measured_in_a_fraction_of_a_second() -> None:
    start = time.perf_counter()
    rate = matmul_rate(torch.device("cpu"))
    assert time.perf_counter() - start < 2.0  # 0.1 s of products after a warm-up one, on a busy machine
    assert 1e8 < rate < 1e14  # any CPU: 0.1 GFLOP/s to 100 TFLOP/s


def test_the_first_guess_reads_flops_crops_and_rate_as_a_duration() -> None:
    cpu = torch.device("cpu")
    # 40,000 crops of 288 GFLOP at half of 100 GFLOP/s: 230,400 s.
    day = FirstGuess(288e9, 40_000, 100e9, cpu, first_epoch=1, epochs=200)
    assert day.seconds == pytest.approx(230_400) and not day.budget_bound
    assert day.line() == (
        "expected duration: about 2.7 days for epochs 1..200 (a first guess before any step: 288 GFLOP a crop "
        "x 40,000 crops at half of this CPU's 100 GFLOP/s matrix rate; the first steps will time it)"
    )
    budget = FirstGuess(288e9, 40_000, 100e9, cpu, first_epoch=11, epochs=200, budget_s=480, spent_s=80)
    assert budget.budget_bound and budget.seconds == 400
    assert budget.line().startswith(
        "expected duration: about 7 min; the time budget (train.max_time_s = 480 s) ends the run before epoch 200 ("
    )
    short = FirstGuess(288e9, 10, 100e9, cpu, first_epoch=1, epochs=2, budget_s=480)
    assert not short.budget_bound and short.seconds == pytest.approx(57.6)


def test_loader_workers_are_cut_to_the_cores(tiny_cfg_dict, monkeypatch, recwarn) -> None:
    """More loader processes than cores: cut, said in one line, and PyTorch has nothing to warn about."""
    lines: list[str] = []
    assert loader_workers(2, lines.append) == 2 and lines == []  # within the cores of any machine running this
    monkeypatch.setattr(forecast, "available_cores", lambda: 1)
    tiny_cfg_dict["train"].update(num_workers=3, epochs=1)
    trainer = Trainer(config_from_dict(tiny_cfg_dict), log=lines.append)
    trainer.fit()
    assert "train.num_workers: 3 loader processes on 1 core; using 1" in lines
    assert trainer._loader(0).num_workers == 1
    assert not [w for w in recwarn if "worker processes" in str(w.message)]


def test_a_gpu_config_on_the_cpu_is_named_before_the_first_step(isbi, tmp_path: Path, monkeypatch) -> None:
    """The issue's first command, ``unetseg train --config configs/isbi.yaml`` on a CPU: the
    duration and the CPU config to use instead come before any step (the classic U-Net takes
    about a minute for the three steps the timed estimate needs on 2 cores); the question stops
    it there."""
    monkeypatch.chdir(REPO)
    monkeypatch.setattr(forecast, "matmul_rate", lambda device, dtype=None: 100e9)  # a 2-core CPU's
    monkeypatch.setattr(cli_train, "interactive", lambda: True)
    steps: list[int] = []
    monkeypatch.setattr(Trainer, "_train_epoch", lambda self, epoch, deadline: steps.append(epoch))
    run = tmp_path / "run"
    result = invoke("train", "--config", "configs/isbi.yaml", "--out", run, "--set", "train.device=cpu", input="n\n")
    assert result.exit_code == 1, result.output
    assert steps == [] and not (run / "checkpoints").exists()
    lines = [line for line in result.output.splitlines() if not line.startswith("train.num_workers: ")]
    assert lines[0].startswith("training 31,036,481 parameters on cpu")
    # 200 epochs of 25 steps of 8 crops, 289 GFLOP each, at half of 100 GFLOP/s: 2.7 days.
    assert lines[1].startswith("expected duration: about 2.7 days for epochs 1..200 (a first guess before any step: ")
    assert lines[2] == (
        "configs/isbi.yaml looks meant for a GPU: on this CPU the run would take about 2.7 days; "
        "for a CPU use `unetseg train --config configs/isbi_cpu.yaml` (about 8 minutes)"
    )
    assert lines[3] == "Train on this CPU anyway? [y/N]: n"
    assert "worker" not in result.output.replace("train.num_workers: ", "")


def test_a_run_that_went_on_is_not_asked_again_after_its_timed_steps(
    tiny_cfg_file: Path, tmp_path: Path, monkeypatch
) -> None:
    monkeypatch.setattr(cli_train, "GPU_RUN_S", 0.0)  # both estimates find the run long
    monkeypatch.setattr(cli_train, "interactive", lambda: True)
    result = invoke(
        "train", "--config", tiny_cfg_file, "--out", tmp_path / "run", "--set", "train.device=cpu", input="y\n"
    )
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert "(a first guess before any step: " in lines[1] and "looks meant for a GPU" in lines[2]
    assert lines[3] == "Train on this CPU anyway? [y/N]: y"
    assert "steps an epoch at" in lines[4]  # the timed estimate, then no second question
    assert result.output.count("looks meant for a GPU") == 1 and result.output.count("anyway?") == 1
