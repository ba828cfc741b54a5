"""``unetseg ablate --base``: the standard skip variants of a training config, its budget as a
fixed crop budget, and the spec file written once and reused."""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from conftest import write_yaml

from unetseg.ablation import budget as budget_module
from unetseg.ablation.budget import crop_budget, samples_per_epoch, timed_crops_per_s
from unetseg.ablation.spec import AblationSpec, narrowed
from unetseg.ablation.standard import standard_variants
from unetseg.ablation.verdict import dataset_verdict
from unetseg.cli import main
from unetseg.config import ConfigError, config_from_dict

REPO = Path(__file__).resolve().parents[1]


def _with(tree: dict, **model) -> dict:
    out = copy.deepcopy(tree)
    out["model"].update(model)
    return out


def _variants(tree: dict) -> tuple[dict[str, object], list[str]]:
    kept, left_out = standard_variants(tree, "base.yaml")
    return {v["name"]: v["set"] for v in kept}, left_out


# --------------------------------------------------------------------------- variants


def test_standard_variants_split_the_levels_per_depth(tiny_cfg_dict):
    variants, left_out = _variants(_with(tiny_cfg_dict, depth=5))  # four levels with a skip
    assert list(variants) == ["concat", "add", "none", "gated", "shallow-only", "deep-only", "plain-encoder"]
    assert variants["concat"] == {} and variants["plain-encoder"] == {"model.encoder": "plain"}
    assert variants["shallow-only"] == {"model.skips": ["concat", "concat", "none", "none"]}
    assert variants["deep-only"] == {"model.skips": ["none", "none", "concat", "concat"]}
    assert left_out == []
    # Five levels: the middle one is dropped by both halves, so each keeps two skips.
    variants, _ = _variants(_with(tiny_cfg_dict, depth=6))
    assert variants["shallow-only"] == {"model.skips": ["concat", "concat", "none", "none", "none"]}
    assert variants["deep-only"] == {"model.skips": ["none", "none", "none", "concat", "concat"]}


def test_standard_variants_leave_out_what_the_model_cannot_be_with_the_reason(tiny_cfg_dict):
    # Depth 2 has one skip: its halves are the skipless model; stochastic depth needs a residual encoder.
    variants, left_out = _variants(_with(tiny_cfg_dict, depth=2, stochastic_depth=0.1))
    assert list(variants) == ["concat", "add", "none", "gated"]
    assert left_out[:2] == [
        "left out shallow-only: the same model as none here",
        "left out deep-only: the same model as none here",
    ]
    assert left_out[2].startswith("left out plain-encoder: the base's model cannot be it (")
    assert "stochastic_depth needs a residual-type encoder" in left_out[2] and "{" not in left_out[2]


def test_standard_variants_name_the_reference_after_its_skips(tiny_cfg_dict):
    variants, _ = _variants(_with(tiny_cfg_dict, skips="add", encoder="plain"))
    assert list(variants) == ["add", "none", "gated", "shallow-only", "deep-only"]  # no second add, no plain-encoder
    assert variants["shallow-only"] == {"model.skips": ["add", "none"]}
    variants, _ = _variants(_with(tiny_cfg_dict, skips=["gated", "concat"]))
    assert next(iter(variants)) == "configured" and variants["deep-only"] == {"model.skips": ["none", "concat"]}
    variants, _ = _variants(_with(tiny_cfg_dict, encoder="smp:resnet18"))
    assert "plain-encoder" not in variants


def test_a_model_without_long_skips_to_vary_is_one_clear_error(tiny_cfg_dict):
    tree = copy.deepcopy(tiny_cfg_dict)
    tree["model"] = {"arch": "monai_basicunet"}
    with pytest.raises(ConfigError, match="model.arch 'monai_basicunet' has no long skips to vary"):
        standard_variants(tree, "base.yaml")


# --------------------------------------------------------------------------- budget


def _cfg(tree: dict, **train):
    out = copy.deepcopy(tree)
    out["train"].update(train)
    return config_from_dict(out)


def test_a_time_budget_becomes_the_epochs_it_reaches(tiny_cfg_dict):
    rate = lambda cfg: (2.0, "given")  # noqa: E731
    budget = crop_budget(_cfg(tiny_cfg_dict, max_time_s=13, epochs=50, samples_per_epoch=8), rate)
    assert (budget.epochs, budget.samples_per_epoch) == (3, 8)  # 13 s x 2 crops/s / 8 crops = 3.25 epochs
    assert budget.why == "what the base's train.max_time_s = 13 s reaches at 2 crops/s (given)"
    capped = crop_budget(_cfg(tiny_cfg_dict, max_time_s=1000, epochs=50), rate)
    assert capped.epochs == 50 and capped.why.endswith("; its train.epochs = 50 ends the run first")
    assert crop_budget(_cfg(tiny_cfg_dict, max_time_s=1, epochs=50), rate).epochs == 1  # never zero epochs
    plain = crop_budget(_cfg(tiny_cfg_dict, epochs=7), rate)
    assert (plain.epochs, plain.samples_per_epoch, plain.crops) == (7, 8, 56)
    assert plain.why == "the base's own train.epochs x samples per epoch"


def test_samples_per_epoch_default_to_one_crop_per_training_image(tiny_cfg_dict):
    from unetseg.data.layouts import split_data

    cfg = _cfg(tiny_cfg_dict, samples_per_epoch=None)
    assert samples_per_epoch(cfg) == len(split_data(cfg.data)[0]) == 4  # six pairs, the last block validates


def test_the_step_is_timed_at_one_thread_and_scaled_to_the_base_threads(tiny_cfg_dict):
    import torch

    threads = torch.get_num_threads()
    rate, how = timed_crops_per_s(_cfg(tiny_cfg_dict, threads=3, device="cpu"))
    assert rate > 0 and how.endswith("x 3 threads") and "at one thread" in how
    assert torch.get_num_threads() == threads  # left as it was


# --------------------------------------------------------------------------- narrowing


def test_narrowing_keeps_the_reference_and_refuses_what_the_grid_lacks(tiny_cfg_file):
    spec = AblationSpec(
        base=tiny_cfg_file,
        budget={"epochs": 1, "samples_per_epoch": 1},
        variants=[{"name": n} for n in ("concat", "add", "none")],
        seeds=[0, 1, 2],
    )
    small = narrowed(spec, ["none"], [2, 0])
    assert [v.name for v in small.expand()] == ["concat", "none"] and small.seeds == [0, 2]
    assert small.reference_name == "concat" and narrowed(spec) is spec
    with pytest.raises(ConfigError, match="--variants: nnone not in the ablation .*did you mean 'none'"):
        narrowed(spec, ["nnone"])
    with pytest.raises(ConfigError, match=r"--seeds: \[5\] not among the ablation's seeds \[0, 1, 2\]"):
        narrowed(spec, None, [5])


# --------------------------------------------------------------------------- the command


def _ablate(*args: object) -> object:
    return CliRunner().invoke(main, ["ablate", *map(str, args)])


def test_ablate_base_end_to_end_writes_the_spec_once_and_reuses_it(tiny_cfg_dict, tmp_path, monkeypatch):
    tiny_cfg_dict["train"]["max_time_s"] = 30  # a time budget: turned into crops on this machine
    base = write_yaml(tmp_path / "tiny.yaml", tiny_cfg_dict)
    out = tmp_path / "abl"
    args = ["--base", base, "--quick", "--variants", "concat,none", "--seeds", "0", "--out", out]
    first = _ablate(*args)
    assert first.exit_code == 0, first.output
    spec = yaml.safe_load((out / "ablation.yaml").read_text())
    names = ["concat", "add", "none", "gated", "shallow-only", "deep-only", "plain-encoder"]
    assert [v["name"] for v in spec["variants"]] == names
    assert spec["seeds"] == [0, 1, 2] and spec["reference"] == "concat" and spec["base"] == str(base)
    epochs, per_epoch = spec["budget"]["epochs"], spec["budget"]["samples_per_epoch"]
    line = next(line for line in first.output.splitlines() if line.startswith("budget: "))
    assert line.startswith(f"budget: {epochs} epochs x {per_epoch} crops = {epochs * per_epoch:,} crops a run, ")
    assert "train.max_time_s = 30 s reaches at" in line and line in (out / "ablation.yaml").read_text()
    data = json.loads((out / "report.json").read_text())
    assert list(data["summary"]) == ["concat", "none"] and data["seeds"] == [0]
    assert [v["variant"] for v in data["verdict"]["variants"]] == ["none"]
    md = (out / "report.md").read_text()
    assert md.index("## Verdict for this dataset") < md.index("## Results")
    assert data["verdict"] == dataset_verdict("concat", data["comparison"], data["summary"])  # from the numbers
    assert data["verdict"]["sentences"][1] in md and "--quick: 1 epoch(s) x 4 crops a run, seeds [0]" in first.output
    verdict = md.split("## Verdict for this dataset")[1]
    assert verdict.lstrip().startswith("SMOKE TEST (--quick)")  # a few crops say nothing of the skips
    assert data["verdict"]["sentences"][-1].startswith("One seed: these intervals cover the spread over images")

    # Later invocations reuse the spec as written (no second timing) and every finished run.
    monkeypatch.setattr(budget_module, "timed_crops_per_s", lambda cfg: pytest.fail("timed again"))
    second = _ablate(*args)
    assert second.exit_code == 0, second.output
    assert f"as fixed in {out / 'ablation.yaml'}" in second.output and second.output.count("reused") == 2
    shutil.rmtree(out / "runs")
    rebuilt = _ablate(*args, "--report-only")
    assert rebuilt.exit_code == 0, rebuilt.output
    again = json.loads((out / "report.json").read_text())
    assert {k: v for k, v in again.items() if k != "runs"} == {k: v for k, v in data.items() if k != "runs"}

    other = write_yaml(tmp_path / "other.yaml", tiny_cfg_dict)
    refused = _ablate("--base", other, "--quick", "--out", out)
    assert refused.exit_code != 0 and f"is the ablation of {base}, not of {other}" in refused.output


@pytest.mark.parametrize("args", [[], ["--config", "a.yaml", "--base", "b.yaml"]])
def test_ablate_needs_exactly_one_of_config_and_base(args):
    result = _ablate(*args)
    assert result.exit_code == 2 and "pass exactly one of --config" in result.output


@pytest.mark.slow
def test_ablate_base_on_the_nuclei_config_runs_end_to_end_and_report_only_rebuilds_it(tmp_path):
    """The issue's check: the nuclei operating point, quick (two variants, one seed: about 13
    minutes on a 2-core CPU shared with other work, most of it measuring 40 validation images a run)."""
    if not (REPO / "data" / "dsb2018_nuclei" / "train" / "images").is_dir():
        pytest.skip("DSB 2018 nuclei not present")
    args = ["--base", REPO / "configs" / "nuclei_cpu.yaml", "--quick", "--out", tmp_path]
    result = _ablate(*args, "--variants", "concat,none", "--seeds", "0")
    assert result.exit_code == 0, result.output
    spec = yaml.safe_load((tmp_path / "ablation.yaml").read_text())
    assert len(spec["variants"]) == 7 and spec["budget"]["samples_per_epoch"] == 120
    assert spec["budget"]["epochs"] <= 40  # nuclei_cpu's own epochs cap what its 570 s reach
    data = json.loads((tmp_path / "report.json").read_text())
    assert list(data["summary"]) == ["concat", "none"] and data["verdict"]["variants"][0]["change"] == "no long skips"
    rebuilt = _ablate(*args, "--variants", "concat,none", "--seeds", "0", "--report-only")
    assert rebuilt.exit_code == 0, rebuilt.output
    assert json.loads((tmp_path / "report.json").read_text()) == data


def test_a_base_that_trains_on_every_image_is_ablated_on_a_held_out_block(tiny_cfg_dict, tmp_path):
    """init plans small sets with no validation (rule 15); an ablation is measured on held-out
    images, so its runs keep the last 1/5 block, and the spec says so."""
    from unetseg.ablation.spec import load_spec, variant_config
    from unetseg.ablation.standard import standard_spec

    tree = copy.deepcopy(tiny_cfg_dict)
    tree["data"]["split"] = {"mode": "none"}
    tree["train"].update(epochs=2, max_time_s=None)
    base = write_yaml(tmp_path / "base.yaml", tree)
    spec, _, lines = standard_spec(base, tmp_path / "abl")
    assert spec["set"] == {"data.split.mode": "block", "data.split.folds": 5, "data.split.fold": -1}
    assert any("trains on every image" in line for line in lines)
    loaded = load_spec(write_yaml(tmp_path / "abl.yaml", spec))
    cfg = variant_config(loaded, loaded.expand()[0], 0)
    assert cfg.data.split.mode == "block" and cfg.data.split.folds == 5
