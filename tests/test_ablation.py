"""The skip ablation: spec validation, variant configs, the end-to-end CLI run and its report."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from click.testing import CliRunner
from conftest import write_yaml

from unetseg.ablation.claims import CLAIMS, claims_table, compare
from unetseg.ablation.figures import disagreement, thin_structure_window
from unetseg.ablation.report import _gate_table
from unetseg.ablation.spec import AblationSpec, load_spec, variant_config
from unetseg.cli import main
from unetseg.config import ConfigError


@pytest.fixture
def ablation_file(tiny_cfg_file: Path, tmp_path: Path) -> Path:
    spec = {
        "name": "tiny_ablation",
        "base": str(tiny_cfg_file),
        "output_dir": str(tmp_path / "abl"),
        "seeds": [0, 1],
        "budget": {"epochs": 1, "samples_per_epoch": 4},
        "variants": [
            {"name": "concat", "set": {"model.skips": "concat"}},
            {"name": "none", "set": {"model.skips": "none"}},
        ],
        "report": {"crop_size": 32, "corruptions": {"noise": [0, 0.3], "blur": [0, 2]}},
    }
    return write_yaml(tmp_path / "ablation.yaml", spec)


def test_grid_expands_to_named_combinations(tiny_cfg_file):
    spec = AblationSpec(
        base=tiny_cfg_file,
        budget={"epochs": 1, "samples_per_epoch": 1},
        grid={"model.skips": ["concat", "none"], "model.encoder": ["plain", "residual"]},
        variants=[{"name": "mask", "set": {"model.skips": ["concat", "none"]}}],
    )
    names = [v.name for v in spec.expand()]
    assert names == [
        "skips-concat_encoder-plain",
        "skips-concat_encoder-residual",
        "skips-none_encoder-plain",
        "skips-none_encoder-residual",
        "mask",
    ]
    assert spec.reference_name == names[0]


def test_variant_config_applies_overrides_and_one_budget(ablation_file, tmp_path):
    spec = load_spec(ablation_file)
    cfgs = [variant_config(spec, v, 1) for v in spec.expand()]
    assert [c.model.skip_modes for c in cfgs] == [["concat", "concat"], ["none", "none"]]
    for cfg in cfgs:
        assert (cfg.seed, cfg.train.epochs, cfg.train.samples_per_epoch, cfg.train.max_time_s) == (1, 1, 4, None)
        assert Path(cfg.output_dir).parent == tmp_path / "abl" / "runs" / cfg.name
        assert Path(cfg.output_dir).name.startswith("seed1-")
        assert (cfg.train.schedule_by, cfg.train.max_time_s) == ("steps", None)  # counted in steps on any machine


@pytest.mark.parametrize(
    "change, message",
    [
        ({"variantz": []}, "variantz: unknown key, did you mean 'variants'?"),
        ({"variants": [{"name": "a"}, {"name": "a"}]}, "variant names must be unique"),
        ({"reference": "nope"}, "reference 'nope' is not a variant"),
        ({"variants": [], "grid": {}}, "needs a grid or a list of variants"),
    ],
)
def test_bad_ablation_config_is_one_clear_error(ablation_file, change, message):
    tree = yaml.safe_load(ablation_file.read_text())
    tree.update(change)
    write_yaml(ablation_file, tree)
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace("?", r"\?")):
        load_spec(ablation_file)


def test_bad_variant_override_fails_before_training(ablation_file):
    tree = yaml.safe_load(ablation_file.read_text())
    tree["variants"].append({"name": "typo", "set": {"model.skipz": "none"}})
    write_yaml(ablation_file, tree)
    result = CliRunner().invoke(main, ["ablate", "--config", str(ablation_file)])
    assert result.exit_code != 0
    assert "model.skipz: unknown key, did you mean 'skips'?" in result.output
    assert not (Path(tree["output_dir"]) / "runs").exists()


def test_unusable_device_fails_before_training(ablation_file):
    """The second of two devices is checked before the first run trains on the first."""
    result = CliRunner().invoke(main, ["ablate", "--config", str(ablation_file), "--devices", "cpu,cuda:99"])
    assert result.exit_code != 0 and "device 'cuda:99'" in result.output, result.output
    assert "Traceback" not in result.output
    assert not (Path(yaml.safe_load(ablation_file.read_text())["output_dir"]) / "runs").exists()


def test_disagreement_counts_pairs_of_variants_that_differ():
    preds = [np.array([[1, 0, 1, 1]]), np.array([[1, 0, 0, 1]]), np.array([[1, 1, 0, 0]])]
    # foreground votes 3, 1, 1, 2 of 3 variants: pairs that differ 0, 2, 2, 2
    assert disagreement(preds).tolist() == [[0, 2, 2, 2]]


def test_claim_verdicts_follow_the_confidence_interval():
    from unetseg.ablation.claims import verdict

    assert verdict({"ci": [0.01, 0.03]}, 1) == "agree"
    assert verdict({"ci": [0.01, 0.03]}, -1) == "disagree"
    assert verdict({"ci": [-0.03, -0.01]}, -1) == "agree"
    assert verdict({"ci": [-0.01, 0.02]}, 1) == "not resolved"
    assert verdict(None, 1) == "not resolved"


SEEDS, IMAGES = 3, 4
# Per (seed, image) difference of the variant a claim favours over the other, for every verdict a claim can
# reach. Distinct sizes, so that no two pairs tie (tied differences make the Wilcoxon test slow).
SIZES = 0.05 + 0.01 * np.arange(SEEDS * IMAGES).reshape(SEEDS, IMAGES)
OUTCOME_DELTAS: dict[str, np.ndarray] = {
    "agree": SIZES,
    "disagree": -SIZES,
    "not resolved": SIZES * (-1.0) ** np.add.outer(np.arange(SEEDS), np.arange(IMAGES)),  # signs alternate
}


def _variant_runs(scores: dict[str, np.ndarray], corruption_loss: np.ndarray | None = None) -> list[dict[str, Any]]:
    """Hand-made finished runs of one variant: per seed, per-image ``scores`` (seeds x images per
    metric) and, where given, the Dice lost from the clean image to the strongest noise."""
    runs = []
    for seed in range(SEEDS):
        images = [{"name": f"img_{i}", **{m: float(v[seed, i]) for m, v in scores.items()}} for i in range(IMAGES)]
        run: dict[str, Any] = {
            "seed": seed,
            "images": images,
            "mean": {m: float(v[seed].mean()) for m, v in scores.items()},
        }
        if corruption_loss is not None:
            run["corruption"] = {"noise": {"strength": [0, 1], "dice": [0.8, 0.8 - float(corruption_loss[seed])]}}
        runs.append(run)
    return runs


@pytest.mark.parametrize("outcome", list(OUTCOME_DELTAS))
def test_every_claim_reaches_every_verdict_from_hand_made_numbers(outcome):
    """Each claim's numbers are built to lean the way ``outcome`` says: concat beats none on boundary F1,
    the partial-skip variants beat concat on Dice, deep-only beats shallow-only, and concat loses more
    Dice than none to corruption on each seed (for "not resolved": the signs are mixed)."""
    delta = OUTCOME_DELTAS[outcome]
    base = 0.5 + 0.05 * np.arange(IMAGES)[None, :] + 0.01 * np.arange(SEEDS)[:, None]
    grouped = {
        "concat": _variant_runs({"dice": base, "bf1_1px": base + delta}, corruption_loss=0.2 + delta[:, 0]),
        "none": _variant_runs({"dice": base + delta, "bf1_1px": base}, corruption_loss=np.full(SEEDS, 0.2)),
        "shallow-only": _variant_runs({"dice": base + delta}),
        "deep-only": _variant_runs({"dice": base + 2 * delta}),
    }
    detail = compare(grouped["concat"], grouped["none"], "bf1_1px")
    assert detail is not None and detail["pairs"] == SEEDS * IMAGES
    assert detail["diff"] == pytest.approx(delta.mean(), abs=1e-12)
    table = claims_table(grouped, "concat")
    assert table is not None
    assert {row["source"]: row["verdict"] for row in table[1]} == {claim.source: outcome for claim in CLAIMS}


def test_claims_without_their_variants_are_left_out():
    base = np.full((SEEDS, IMAGES), 0.5)
    grouped = {"concat": _variant_runs({"dice": base}), "shallow-only": _variant_runs({"dice": base})}
    table = claims_table(grouped, "concat")
    assert table is not None and [row["source"] for row in table[1]] == ["Wang et al. 2022 (UCTransNet)"]
    assert claims_table({"concat": grouped["concat"]}, "concat") is None


def _gate_row(epoch: int, means: list[float], mins: list[float]) -> dict[str, float]:
    """One epoch's row of a gated run's history: per level, the channel-mean gate and the smallest channel's."""
    return (
        {"epoch": epoch}
        | {f"gate{lv}": m for lv, m in enumerate(means)}
        | {f"gate_min{lv}": m for lv, m in enumerate(mins)}
    )


def _gated_runs(final_means: list[float], final_mins: list[float]) -> list[dict[str, Any]]:
    """Two seeds whose gates start at 1 and end, per level, 0.05 either side of the given values."""
    ones = [1.0] * len(final_means)
    return [
        {
            "seed": seed,
            "history": [
                _gate_row(1, ones, ones),
                _gate_row(2, [m + offset for m in final_means], [m + offset for m in final_mins]),
            ],
        }
        for seed, offset in enumerate((-0.05, 0.05))
    ]


@pytest.mark.parametrize(
    ("means", "mins", "sentence"),
    [
        ([1.1, 0.4], [0.9, 0.1], "gated: the gates closed (mean below 0.5) at level(s) [1]."),
        (
            [1.1, 0.7],
            [0.9, 0.3],
            "gated: no level's gates closed (every level's mean stays above 0.5); "
            "some channels fell below 0.5 at level(s) [1].",
        ),
        (
            [1.1, 0.7],
            [0.9, 0.6],
            "gated: no level's gates closed (every level's mean stays above 0.5); no channel fell below 0.5.",
        ),
    ],
)
def test_gate_table_and_sentence_follow_the_final_gates(means, mins, sentence):
    grouped = {"concat": [{"seed": 0, "history": [{"epoch": 1}, {"epoch": 2}]}], "gated": _gated_runs(means, mins)}
    gates = _gate_table(grouped)
    assert gates is not None
    table, notes = gates
    assert notes == [sentence]  # one sentence, for the one variant with gates
    assert table.rows == [["gated"] + [f"{m:.3f} (min {lo:.3f})" for m, lo in zip(means, mins)]]


def test_thin_structure_window_finds_the_thin_lines():
    target = np.zeros((100, 100), dtype=np.int64)
    target[60:90, 10:40] = 1  # a solid blob: a short skeleton
    for x in range(62, 98, 4):
        target[5:35, x] = 1  # many thin lines: a long skeleton
    y, x = thin_structure_window(target, 30)
    assert (y, x) == (5, 62) or (abs(y - 5) <= 5 and abs(x - 62) <= 6)


def test_ablate_end_to_end_report_and_reuse(ablation_file, tmp_path, meters):
    runner = CliRunner()
    first = runner.invoke(main, ["ablate", "--config", str(ablation_file)])
    assert first.exit_code == 0, first.output
    assert [(m.desc, m.unit, m.expected, m.done) for m in meters] == [("ablate", "run", 4, 4)]  # the overall bar
    out = tmp_path / "abl"
    for name in ("report.html", "report.md", "report.json", "figures/crops.png", "figures/distance_curves.png"):
        assert (out / name).is_file(), name
    data = json.loads((out / "report.json").read_text())
    summary = data["summary"]
    assert set(summary) == {"concat", "none"}
    assert summary["concat"]["seeds"] == [0, 1]
    # Dropping every skip removes the concatenated channels from the decoder blocks.
    assert summary["none"]["parameters"] < summary["concat"]["parameters"]
    assert 0 < summary["none"]["flops"] < summary["concat"]["flops"]  # narrower decoder inputs, fewer FLOPs
    for key in ("dice", "bf1_1px", "bf1_2px", "cldice", "hd95", "pixel_error"):
        assert key in summary["concat"]["mean"]
    assert len(data["runs"]) == 4 and all(len(r["distance"]["error"]) == 10 for r in data["runs"])
    comparison = data["comparison"]["none"]["dice"]
    assert comparison["pairs"] == 2 * 2  # two seeds x two validation images
    assert comparison["ci"][0] <= comparison["diff"] <= comparison["ci"][1]
    assert 0.0 <= comparison["p"] <= 1.0
    page = (out / "report.html").read_text()
    # crops where the variants disagree and in the thinnest structure, distance, corruption, loss and validation curves
    assert page.count("data:image/png;base64,") == 6 and "<table>" in page
    ci = summary["concat"]["ci"]["dice"]
    assert ci[0] <= summary["concat"]["mean"]["dice"] <= ci[1]
    claims = {c["source"]: c for c in data["claims"]}
    detail = claims["Ronneberger et al. 2015; Drozdzal et al. 2016"]
    # The claim is "concat beats none on bf1_1px"; the stored comparison is none − concat, so the claim
    # holds where that CI lies below 0 and fails where it lies above.
    lo, hi = data["comparison"]["none"]["bf1_1px"]["ci"]
    assert detail["verdict"] == ("agree" if hi < 0 else "disagree" if lo > 0 else "not resolved")
    assert "concat − none, bf1_1px" in detail["evidence"]
    assert "What this says about published claims" in (out / "report.md").read_text()
    sweep = data["runs"][0]["corruption"]
    assert set(sweep) == {"noise", "blur"} and sweep["noise"]["strength"] == [0, 0.3]
    clean = data["runs"][0]["mean"]["dice"]
    assert sweep["noise"]["dice"][0] == pytest.approx(clean)  # strength 0 is the clean image
    assert "](figures/crops.png)" in (out / "report.md").read_text()

    # Re-running reuses every finished run instead of training again.
    second = runner.invoke(main, ["ablate", "--config", str(ablation_file)])
    assert second.exit_code == 0, second.output
    assert second.output.count("reused") == 4


def test_report_only_rebuilds_the_report_from_stored_results_alone(ablation_file, tmp_path):
    """Checkpoints are a cache: with them gone, the stored results rebuild the same numbers;
    a run whose result is missing is listed, and the report says it is partial."""
    runner = CliRunner()
    assert runner.invoke(main, ["ablate", "--config", str(ablation_file)]).exit_code == 0
    out = tmp_path / "abl"
    before = json.loads((out / "report.json").read_text())
    shutil.rmtree(out / "runs")
    rebuilt = runner.invoke(main, ["ablate", "--config", str(ablation_file), "--report-only"])
    assert rebuilt.exit_code == 0, rebuilt.output
    after = json.loads((out / "report.json").read_text())
    assert after["summary"] == before["summary"] and after["comparison"] == before["comparison"]
    assert not (out / "runs").exists()  # nothing was trained

    shutil.rmtree(out / "results" / "none" / "seed1")
    partial = runner.invoke(main, ["ablate", "--config", str(ablation_file), "--report-only"])
    assert partial.exit_code == 0, partial.output
    assert "missing: none seed 1: not run" in partial.output
    data = json.loads((out / "report.json").read_text())
    assert data["missing"] == ["none seed 1: not run"] and data["summary"]["none"]["seeds"] == [0]
    assert "PARTIAL: 1 of the grid's runs" in (out / "report.md").read_text()


def test_report_only_without_results_is_one_clear_error(ablation_file):
    result = CliRunner().invoke(main, ["ablate", "--config", str(ablation_file), "--report-only"])
    assert result.exit_code != 0 and "no finished runs" in result.output and "Traceback" not in result.output


def test_finished_run_is_reused_across_invocations_and_a_changed_config_retrained(ablation_file, tmp_path):
    from unetseg.ablation.runner import Job, run_job

    job = Job(str(ablation_file), False, "concat", 0, "cpu", 1)
    run_job(job, log=lambda m: None)
    logs: list[str] = []
    run_job(Job(str(ablation_file), False, "concat", 0, "cpu", 2), log=logs.append)  # other threads: same run
    assert logs == ["[concat seed 0] finished before, reused"]

    tree = yaml.safe_load(ablation_file.read_text())
    tree["set"] = {"train.lr": 0.005}
    write_yaml(ablation_file, tree)
    logs = []
    result = run_job(job, log=logs.append)
    assert "stored result is out of date (train.lr); training again" in logs[0]
    assert result["config"]["train"]["lr"] == 0.005
    assert len(list((tmp_path / "abl" / "runs" / "concat").iterdir())) == 2  # the old checkpoints are kept apart


def test_submitit_local_executor_runs_the_grid_and_reuses_it(ablation_file, tmp_path):
    """--executor local: each run is a submitit subprocess (their logs under output_dir/submitit);
    the results are the same files the pool executor writes, so a rerun reuses them."""
    tree = yaml.safe_load(ablation_file.read_text())
    tree["seeds"] = [0]
    write_yaml(ablation_file, tree)
    runner = CliRunner()
    first = runner.invoke(main, ["ablate", "--config", str(ablation_file), "--executor", "local", "--workers", "2"])
    assert first.exit_code == 0, first.output
    assert first.output.count("(local job ") == 2
    out = tmp_path / "abl"
    assert len(list((out / "submitit").glob("*_log.out"))) == 2  # one log per job
    assert (out / "results" / "none" / "seed0" / "result.json").is_file()
    again = runner.invoke(main, ["ablate", "--config", str(ablation_file)])
    assert again.exit_code == 0 and again.output.count("reused") == 2, again.output


def test_slurm_executor_options_reach_submitit(tmp_path, monkeypatch):
    """Without a cluster here (a stub srun stands in for one), the SLURM path is checked up to
    submission: the CLI's options become the parameters of the sbatch script submitit writes."""
    from unetseg.ablation.runner import SlurmOptions, _submitit_executor

    stub = tmp_path / "bin"
    stub.mkdir()
    (stub / "srun").write_text("#!/bin/sh\nexit 0\n")
    (stub / "srun").chmod(0o755)
    monkeypatch.setenv("PATH", f"{stub}:{os.environ['PATH']}")
    executor = _submitit_executor("slurm", tmp_path / "logs", 3, SlurmOptions("gpu", 90, 1, 8, {"account": "lab"}))
    params = executor._executor.parameters
    assert (params["partition"], params["time"], params["gpus_per_node"], params["cpus_per_task"]) == ("gpu", 90, 1, 8)
    assert params["account"] == "lab" and params["array_parallelism"] == 3


def test_interrupted_run_is_resumed(ablation_file, tmp_path):
    spec = load_spec(ablation_file)
    from unetseg.ablation.runner import Job, run_job

    job = Job(str(ablation_file), False, "concat", 0, "cpu", 1)
    run_job(job, log=lambda m: None)
    stored = tmp_path / "abl" / "results" / "concat" / "seed0"
    (stored / "result.json").unlink()  # as if killed after training, before measuring
    logs: list[str] = []
    result = run_job(job, log=logs.append)
    assert any("resuming" in line for line in logs)
    assert result["variant"] == "concat" and (stored / "result.json").is_file()
    assert sorted(p.name for p in (stored / "pred").iterdir()) == ["img_4.png", "img_5.png"]
    assert spec.budget.epochs == len(result["history"])


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


@pytest.mark.skipif(_chromium() is None, reason="headless Chromium is not installed")
def test_report_renders_in_headless_chromium(ablation_file, tmp_path):
    result = CliRunner().invoke(main, ["ablate", "--config", str(ablation_file)])
    assert result.exit_code == 0, result.output
    shot = tmp_path / "shot.png"
    cmd = [
        _chromium(),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        f"--user-data-dir={tmp_path / 'chrome'}",
        f"--screenshot={shot}",
        "--window-size=1200,2400",
        (tmp_path / "abl" / "report.html").as_uri(),
    ]
    subprocess.run(cmd, check=True, timeout=120, capture_output=True)
    import cv2

    image = cv2.imread(str(shot))
    assert image is not None and image.shape[:2] == (2400, 1200)
    # The page is not blank: a table and the embedded figures put dark and coloured pixels on it.
    assert (image < 100).mean() > 0.005
    assert image.std() > 20


def test_matched_controls_are_within_tolerance_of_the_reference(ablation_file):
    from unetseg.ablation.spec import parameter_count

    tree = yaml.safe_load(ablation_file.read_text())
    tree["variants"].append({"name": "add", "set": {"model.skips": "add"}})
    plain = load_spec(write_yaml(ablation_file, tree))
    sizes = {v.name: parameter_count(variant_config(plain, v, 0)) for v in plain.expand()}
    assert sizes["none"] < 0.95 * sizes["concat"]  # unmatched: removing skips shrinks the decoder

    tree["match_parameters"] = True
    matched = load_spec(write_yaml(ablation_file, tree))
    for variant in matched.expand():
        cfg = variant_config(matched, variant, 0)
        assert abs(parameter_count(cfg) - sizes["concat"]) <= 0.05 * sizes["concat"], variant.name
        if variant.name != "concat":
            assert (
                cfg.model.decoder_widths is not None
                and cfg.model.skip_modes == variant_config(plain, variant, 0).model.skip_modes
            )


def test_changed_report_settings_measure_again_without_retraining(ablation_file, tmp_path):
    from unetseg.ablation.runner import Job, run_job

    job = Job(str(ablation_file), False, "none", 0, "cpu", 1)
    first = run_job(job, log=lambda m: None)
    ckpt = next((tmp_path / "abl" / "runs" / "none").glob("seed0-*")) / "checkpoints" / "last.pt"
    stamp = ckpt.stat().st_mtime_ns
    tree = yaml.safe_load(ablation_file.read_text())
    tree["report"]["corruptions"] = {"contrast": [0, 0.5]}
    write_yaml(ablation_file, tree)
    logs: list[str] = []
    second = run_job(job, log=logs.append)
    assert any("measuring again" in line for line in logs)
    assert ckpt.stat().st_mtime_ns == stamp  # not retrained
    assert set(second["corruption"]) == {"contrast"}
    assert second["mean"] == pytest.approx(first["mean"], rel=0, abs=0, nan_ok=True)  # thin recall: NaN on blobs


def test_cross_validated_ablation_pools_every_image_once(ablation_file, tmp_path):
    tree = yaml.safe_load(ablation_file.read_text())
    tree.update({"folds": 3, "seeds": [0]})
    write_yaml(ablation_file, tree)
    spec = load_spec(ablation_file)
    cfg = variant_config(spec, spec.expand()[0], 0, 2)
    assert (cfg.data.split.mode, cfg.data.split.folds, cfg.data.split.fold) == ("block", 3, 2)
    assert Path(cfg.output_dir).name.startswith("seed0_fold2-")
    result = CliRunner().invoke(main, ["ablate", "--config", str(ablation_file)])
    assert result.exit_code == 0, result.output
    data = json.loads((tmp_path / "abl" / "report.json").read_text())
    assert len(data["runs"]) == 2  # one pooled result per (variant, seed)
    pooled = data["runs"][0]
    # The three folds' validation blocks together hold each of the six generated images once.
    assert sorted(row["name"] for row in pooled["images"]) == [f"img_{i}" for i in range(6)]
    assert set(pooled["per_fold"]) == {"0", "1", "2"}
    assert "Cross-validation folds" in (tmp_path / "abl" / "report.md").read_text()


def test_report_shows_gradients_and_gates_when_logged(ablation_file, tmp_path):
    tree = yaml.safe_load(ablation_file.read_text())
    tree.update({"seeds": [0], "set": {"train.level_stats": True}, "report": {"crop_size": 32}})
    tree["variants"] = [
        {"name": "concat", "set": {"model.skips": "concat"}},
        {"name": "gated", "set": {"model.skips": ["gated", "gated"]}},
    ]
    write_yaml(ablation_file, tree)
    result = CliRunner().invoke(main, ["ablate", "--config", str(ablation_file)])
    assert result.exit_code == 0, result.output
    out = tmp_path / "abl"
    assert (out / "figures" / "gradients.png").is_file()
    md = (out / "report.md").read_text()
    assert "Gate value of each gated skip after training" in md
    gate_part = md[md.index("Gate value of each gated skip") :]
    gate_row = next(line for line in gate_part.splitlines() if line.startswith("| gated |"))
    cells = [c.strip() for c in gate_row.strip("|").split("|")[1:]]
    values = [float(c.split(" (min ")[0]) for c in cells]
    assert len(values) == 2 and all(0 < v < 2 for v in values)  # gates start at 1 and have moved
    assert values != [1.0, 1.0]
    assert (out / "figures" / "gates.png").is_file()
    data = json.loads((out / "report.json").read_text())
    traces = next(run for run in data["runs"] if run["variant"] == "gated")["history"]
    assert all("gate0" in row and "gate_min1" in row for row in traces)  # the trace of every epoch is stored
    # The table and the sentence follow from the stored last epoch's gates (one seed: no averaging).
    final = [(traces[-1][f"gate{lv}"], traces[-1][f"gate_min{lv}"]) for lv in range(2)]
    assert cells == [f"{mean:.3f} (min {low:.3f})" for mean, low in final]
    closed = [lv for lv, (mean, _) in enumerate(final) if mean < 0.5]
    expected = (
        f"gated: the gates closed (mean below 0.5) at level(s) {closed}."
        if closed
        else "gated: no level's gates closed (every level's mean stays above 0.5)"
    )
    assert data["gates"][0].startswith(expected) and expected in md


REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("name", sorted(p.name for p in (REPO / "configs").glob("ablation_*.yaml")))
def test_shipped_ablation_specs_resolve_every_variant(name):
    spec = load_spec(REPO / "configs" / name)
    for variant in spec.expand():
        cfg = variant_config(spec, variant, spec.seeds[0])
        assert cfg.train.schedule_by == "steps" and cfg.train.max_time_s is None


def test_operating_point_ablation_trains_the_shipped_model_and_recipe():
    """The reference of the ISBI ablation is isbi_cpu as users train it, budget aside; each
    other variant changes only the long skips or the encoder."""
    from unetseg.config import config_changes, load_config

    spec = load_spec(REPO / "configs" / "ablation_isbi.yaml")
    shipped = load_config(REPO / "configs" / "isbi_cpu.yaml")
    reference = variant_config(spec, next(v for v in spec.expand() if v.name == spec.reference_name), 0)
    budget = {"name", "train.epochs", "train.max_time_s", "train.schedule_by", "train.progress"}
    assert set(config_changes(dump(shipped), reference)) <= budget
    assert reference.train.epochs * reference.train.samples_per_epoch >= 12_000
    for variant in spec.expand():
        changed = set(config_changes(dump(reference), variant_config(spec, variant, 0))) - {"name"}
        assert changed <= {"model.skips", "model.encoder"}, (variant.name, changed)
    assert len(spec.expand()) == 7 and spec.seeds == [0, 1, 2]


def dump(cfg):
    from unetseg.config import dump_config

    return dump_config(cfg)


def test_operating_point_ablation_quick_runs_end_to_end(tmp_path):
    result = CliRunner().invoke(
        main, ["ablate", "--config", str(REPO / "configs" / "ablation_isbi.yaml"), "--quick", "--out", str(tmp_path)]
    )
    assert result.exit_code == 0, result.output
    data = json.loads((tmp_path / "report.json").read_text())
    assert list(data["summary"]) == ["concat", "add", "none", "gated", "shallow-only", "deep-only", "plain-concat"]
    assert data["summary"]["shallow-only"]["skips"] == ["concat", "concat", "none", "none"]
    assert sorted(p.name for p in (tmp_path / "results").iterdir()) == sorted(data["summary"])


@pytest.mark.parametrize("name", ["ablation_isbi", "ablation_nuclei"])
def test_committed_report_is_rebuilt_from_its_stored_results(name, tmp_path):
    """The committed operating-point report is what --report-only makes of the committed results:
    the same numbers, from a copy of the results folder alone."""
    committed = REPO / "docs" / "results" / name
    if not (committed / "report.json").is_file():
        pytest.skip(f"no committed {name} report yet")
    shutil.copytree(committed / "results", tmp_path / "results")
    tree = yaml.safe_load((REPO / "configs" / f"{name}.yaml").read_text())
    tree.update(base=str(REPO / "configs" / tree["base"]), results_dir=str(tmp_path), output_dir=str(tmp_path / "runs"))
    spec_file = write_yaml(tmp_path / "spec.yaml", tree)
    result = CliRunner().invoke(main, ["ablate", "--config", str(spec_file), "--report-only"])
    assert result.exit_code == 0, result.output
    rebuilt, stored = (json.loads((d / "report.json").read_text()) for d in (tmp_path, committed))
    for key in ("summary", "comparison", "verdict", "claims", "gates", "missing"):
        assert rebuilt[key] == stored[key], key
