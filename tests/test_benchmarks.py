"""The benchmark scripts: their measurements on hand-checkable cases and a race end to end."""

from __future__ import annotations

import json
import sys
import time
from itertools import chain
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from torch import nn

from unetseg import runtime
from unetseg.config import LossConfig, UNetConfig
from unetseg.models import build_model, count_parameters
from unetseg.training.losses import build_loss

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import common
import isbi_race
import throughput
from conftest import write_yaml


def test_step_flops_of_one_conv_is_forward_plus_weight_gradient():
    conv = nn.Conv2d(2, 3, kernel_size=3, padding=1, bias=False)
    x = torch.randn(1, 2, 8, 8)  # the input needs no gradient: backward computes the weight's only
    forward = 2 * (3 * 8 * 8) * (2 * 3 * 3)  # 2 FLOPs per multiply-add, per output value
    assert common.step_flops(conv, x, None, lambda out, _: out.sum()) == 2 * forward
    assert conv.weight.grad is None  # the count leaves no gradient behind


class FakeClock:
    """Stands in for the ``time`` module inside benchmarks/common.py: ``perf_counter`` reads a
    clock that moves only when a test moves it, so every duration a benchmark measures is known."""

    def __init__(self) -> None:
        self.now = 0.0

    def perf_counter(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds

    def __getattr__(self, name: str) -> Any:  # strftime and the rest: the real module's
        return getattr(time, name)


@pytest.fixture
def clock(monkeypatch) -> FakeClock:
    fake = FakeClock()
    monkeypatch.setattr(common, "time", fake)
    return fake


@pytest.mark.parametrize(("min_s", "timed_steps"), [(0.0, 5), (2.0, 8)])
def test_time_steps_runs_warmup_then_min_steps_and_min_seconds(clock, min_s, timed_steps):
    """Each step takes 0.25 s of fake time: at least 5 timed steps, and at least ``min_s`` seconds of them."""
    calls: list[int] = []

    def step() -> None:
        calls.append(1)
        clock.advance(0.25)

    seconds = common.time_steps(step, torch.device("cpu"), warmup=2, min_steps=5, min_s=min_s)
    assert len(calls) == 2 + timed_steps  # the warm-up steps are run but not timed
    assert seconds == 0.25


def test_matmul_peak_is_the_best_rate_over_sizes_and_rounds(clock, monkeypatch):
    """The products run on the meta device (no arithmetic) and each timed pass takes a known fake
    time, so the peak must be exactly the fastest pass's ``repeats * 2 n^3 / seconds``."""
    sizes, repeats = (1024, 2048, 3072), 3  # matmul_peak's sizes off a GPU
    passes = [1.0, 0.5, 4.0, 2.0, 0.25, 8.0]  # seconds of each timed pass: round 1's sizes, then round 2's
    # Two syncs per size: after the warm-up (the timer then starts) and after the timed products.
    advances = iter(chain.from_iterable((0.0, seconds) for seconds in passes))
    monkeypatch.setattr(common, "sync", lambda device: clock.advance(next(advances)))
    peak = common.matmul_peak(torch.device("meta"), repeats=repeats, rounds=2)
    assert next(advances, None) is None  # every pass was timed
    assert peak == repeats * 2 * 2048**3 / 0.25  # round 2's 2048: neither the largest size nor the first round
    assert peak == max(repeats * 2 * n**3 / seconds for n, seconds in zip(sizes * 2, passes))


def test_throughput_measure_numbers_follow_from_the_timed_steps(monkeypatch, clock):
    """Every forward pass costs fake time in proportion to its pixels (a training forward stands
    for forward + backward + step, 3x an inference one), so each rate is known exactly."""
    seconds_per_256_image = 0.25

    def build_charging_model(*args: Any) -> nn.Module:
        model = build_model(*args)

        def charge(module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
            x = inputs[0]
            images = x.shape[0] * x.shape[-2] * x.shape[-1] / 256**2
            clock.advance(images * seconds_per_256_image * (3 if module.training else 1))

        model.register_forward_pre_hook(charge)
        return model

    config, batch = UNetConfig(depth=2, base_width=2), 2
    monkeypatch.setitem(throughput.MODELS, "tiny", ("small", lambda: config))
    monkeypatch.setattr(throughput, "build_model", build_charging_model)
    r = throughput.measure(
        "tiny", torch.device("cpu"), "off", channels_last=True, compile_=False, min_s=0.0, batch=batch
    )
    assert r["params"] == count_parameters(build_model(config, 1, 1)) and r["group"] == "small"
    # A training step: `batch` images of 256², or half as many of 512² (4x the pixels); inference: one 512² image.
    step_256, step_512 = batch * 3 * seconds_per_256_image, batch // 2 * 4 * 3 * seconds_per_256_image
    assert r["train_img_s_256"] == batch / step_256
    assert r["train_img_s_512"] == batch // 2 / step_512
    assert r["infer_img_s_512"] == 1 / (4 * seconds_per_256_image)
    # The FLOPs of one step at 256 are the model's own; its rate is those FLOPs over the step's seconds.
    x, y = torch.randn(batch, 1, 256, 256), (torch.rand(batch, 256, 256) > 0.5).float()
    flops = common.step_flops(build_model(config, 1, 1), x, y, build_loss(LossConfig(), 1))
    assert r["train_flops_per_image_256"] == flops / batch
    assert r["train_gflops_s_256"] == flops / step_256 / 1e9
    peak_gflops = 10 * r["train_gflops_s_256"]
    text = throughput.markdown(
        {
            "environment": common.environment(torch.device("cpu")),
            "amp": "off",
            "channels_last": True,
            "compile": False,
            "matmul_peak_gflops": peak_gflops,
            "models": [r],
        }
    )
    # The table row shows those very numbers: img/s 256 | 512 | inference, then GFLOP/s at 10% of the peak.
    row = f"| {batch / step_256:.2f} | {batch // 2 / step_512:.2f} | 1.00 | {flops / step_256 / 1e9:.0f} (10%) |"
    assert "| tiny | small |" in text and row in text, text


def test_throughput_children_get_the_settings_but_not_the_model_list():
    """``--models a,b`` (space-separated) once reached the per-model processes as a stray argument."""
    parser = throughput.build_parser()
    for flags in (["--channels-last", "--compile", "--threads", "3"], []):
        args = parser.parse_args(
            [
                "--device",
                "cuda",
                "--models",
                "unetseg_cpu,monai_unet",
                "--amp",
                "bf16",
                "--batch",
                "32",
                "--min-seconds",
                "0.5",
                *flags,
            ]
        )
        child = parser.parse_args([*throughput.child_args(args), "--one", "unetseg_cpu"])  # no stray argument: parses
        for key in ("device", "amp", "batch", "min_seconds", "threads", "channels_last", "compile"):
            assert getattr(child, key) == getattr(args, key), (key, flags)
        assert child.models is None and child.one == "unetseg_cpu"


def test_unknown_throughput_model_is_named():
    with pytest.raises(SystemExit):
        throughput.main(["--models", "unetseg_cpu,nonesuch"])


def test_race_runs_entrants_under_one_config_end_to_end(tiny_cfg_dict, tmp_path, capsys):
    tiny_cfg_dict["train"].update(epochs=2, samples_per_epoch=4, val_every=1)
    base = write_yaml(tmp_path / "base.yaml", tiny_cfg_dict)
    out = tmp_path / "race"
    result = isbi_race.main(
        ["--config", str(base), "--budget", "30", "--seeds", "0", "--entrants", "unetseg,monai_unet", "--out", str(out)]
    )
    assert set(result["summary"]) == {"unetseg", "monai_unet"}
    for run in result["runs"]:
        assert 0.0 <= run["dice"] <= 1.0 and run["img_per_s"] > 0 and run["flops_per_image"] > 0
        assert run["epochs"] == 2 and run["dice_curve"]
    saved = json.loads((out / "race.json").read_text())
    assert saved["params"]["unetseg"] != saved["params"]["monai_unet"]
    mine = yaml.safe_load((out / "runs" / "unetseg_seed0.yaml").read_text())
    peer = yaml.safe_load((out / "runs" / "monai_unet_seed0.yaml").read_text())
    # Everything but the model and the run's name and folder is the same for both entrants.
    for key in ("data", "augment", "train", "inference", "eval", "seed"):
        assert mine[key] == peer[key], key
    assert mine["model"] == tiny_cfg_dict["model"] and peer["model"]["arch"] == "monai_unet"
    assert mine["train"]["max_time_s"] == 30 and mine["train"]["threads"] == 2
    assert "MONAI UNet" in (out / "race.md").read_text()
    with pytest.raises(SystemExit, match="already holds a run"):  # a second race never overwrites the first
        isbi_race.main(["--config", str(base), "--seeds", "0", "--entrants", "unetseg", "--out", str(out)])


def test_issue_recipe_entrants_change_the_recipe_not_the_loop(tiny_cfg_dict, tmp_path):
    base = yaml.safe_load(yaml.safe_dump(tiny_cfg_dict, sort_keys=False))
    base["augment"]["elastic"] = {"p": 0.5}
    base["augment"]["affine"] = {"p": 0.5}
    base["train"].update(
        lr=0.02, scheduler="cosine", loss={"name": "dice_ce", "border_weight": {"sigma": 3}}, ema=0.99, grad_clip=1.0
    )
    base["inference"] = {"tta": "d4"}
    base["train"]["amp"] = "bf16"
    own = isbi_race.entrant_config(base, "monai_unet", 1, 480, 2, tmp_path)
    issue = isbi_race.entrant_config(base, "monai_unet_issue", 1, 480, 2, tmp_path)
    assert own["model"] == issue["model"] == isbi_race.PEERS["monai_unet"]
    assert own["train"]["lr"] == 0.02 and own["augment"]["elastic"]["p"] == 0.5 and own["inference"]["tta"] == "d4"
    assert issue["train"]["lr"] == 1e-3 and issue["train"]["scheduler"] == "none"
    assert issue["train"]["loss"] == {"name": "dice_ce"} and issue["augment"]["elastic"]["p"] == 0.0
    assert own["augment"]["affine"] == {"p": 0.5} and "affine" not in issue["augment"]
    assert (
        issue["augment"]["crop_size"] == 256
        and issue["train"]["batch_size"] == 4
        and issue["inference"]["tta"] == "none"
    )
    assert own["train"]["ema"] == 0.99 and "ema" not in issue["train"] and "grad_clip" not in issue["train"]
    assert "amp" not in issue["train"]  # the issue's figures are fp32; the config's amp is unetseg's recipe
    assert issue["train"]["samples_per_epoch"] == own["train"]["samples_per_epoch"]
    assert issue["train"]["val_every"] == own["train"]["val_every"]
    for key in ("data", "eval", "seed"):  # the loop itself stays the config's
        assert issue[key] == own[key], key
    assert issue["train"]["max_time_s"] == own["train"]["max_time_s"] == 480
    assert base["train"]["lr"] == 0.02  # the base config is not modified
    assert "issue's recipe" in isbi_race.label("monai_unet_issue") and "unetseg's recipe" in isbi_race.label(
        "monai_unet"
    )


def test_race_counts_each_entrants_flops_at_its_own_crop(tiny_cfg_dict, tmp_path):
    """A config that trains on 384x384 crops must not count the issue recipe's 256x256 crops as 384."""
    base = yaml.safe_load(yaml.safe_dump(tiny_cfg_dict, sort_keys=False))
    base["augment"]["crop_size"] = 384
    paths = {}
    for entrant in ("monai_unet", "monai_unet_issue"):
        paths[entrant] = write_yaml(
            tmp_path / f"{entrant}.yaml", isbi_race.entrant_config(base, entrant, 0, 30, 2, tmp_path)
        )
    own_flops, own_params, own_crop = isbi_race.flops_per_image(paths["monai_unet"])
    issue_flops, issue_params, issue_crop = isbi_race.flops_per_image(paths["monai_unet_issue"])
    assert (own_crop, issue_crop) == (384, 256) and own_params == issue_params
    assert own_flops / issue_flops == pytest.approx((384 / 256) ** 2, rel=0.02)


def test_race_rejects_unknown_entrant(tmp_path):
    with pytest.raises(SystemExit):
        isbi_race.main(["--entrants", "unetseg,deeplab", "--out", str(tmp_path)])


def test_race_judges_a_bf16_entrant_against_both_peaks(tiny_cfg_dict, tmp_path, monkeypatch):
    """A bf16 entrant's row says bf16 and its FLOP/s against both the fp32 and the bf16 peak
    (each measured once); an fp32 entrant's only against fp32. Training is stubbed: the
    arithmetic and the tables are under test, not the runs."""
    tiny_cfg_dict["train"]["amp"] = "bf16"
    base = write_yaml(tmp_path / "bf16.yaml", tiny_cfg_dict)
    monkeypatch.setattr(runtime, "cpu_has_native_bf16", lambda: True)
    peaks = {torch.float32: 100e9, torch.bfloat16: 250e9}
    measured: list[torch.dtype] = []
    monkeypatch.setattr(
        isbi_race, "matmul_peak", lambda device, dtype=torch.float32: measured.append(dtype) or peaks[dtype]
    )
    monkeypatch.setattr(isbi_race, "flops_per_image", lambda *_: (int(2e9), 1000, 256))
    fake = {**dict.fromkeys(isbi_race.METRICS, 0.5), **{f"{m}_tta": 0.5 for m in isbi_race.METRICS}}
    monkeypatch.setattr(isbi_race, "run_entrant", lambda *_: {**fake, "img_per_s": 60.0, "epochs": 1, "dice_curve": []})
    result = isbi_race.main(
        [
            "--config",
            str(base),
            "--seeds",
            "0",
            "--entrants",
            "unetseg,monai_unet_issue",
            "--out",
            str(tmp_path / "race"),
        ]
    )
    assert measured == [torch.float32, torch.bfloat16]  # the bf16 peak once, for the one bf16 entrant
    assert result["matmul_peaks_gflops"] == {"fp32": 100.0, "bf16": 250.0}
    ours, peer = result["summary"]["unetseg"], result["summary"]["monai_unet_issue"]
    assert (ours["precision"], peer["precision"]) == ("bf16", "fp32")
    assert ours["peak_fraction"] == pytest.approx(1.2) and ours["own_peak_fraction"] == pytest.approx(
        0.48
    )  # 120 GFLOP/s
    assert peer["own_peak_fraction"] == peer["peak_fraction"]
    table = (tmp_path / "race" / "race.md").read_text()
    assert (
        "| bf16 | 256² | 60.0 | 120 (120% of fp32, 48% of bf16) |" in table
        and "| fp32 | 256² | 60.0 | 120 (120%) |" in table
    )
    monkeypatch.setattr(runtime, "cpu_has_native_bf16", lambda: False)
    assert isbi_race.compute_dtype(base) == torch.float32  # what such a CPU would really run
