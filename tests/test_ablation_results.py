"""A stored ``result.json`` that cannot be true is named and treated as not run, never
averaged into the report (probe #7 of issue #35)."""

from __future__ import annotations

import copy
import json
import shutil

import pytest
import yaml
from click.testing import CliRunner
from conftest import REPO, write_yaml

from unetseg.ablation.results import read_result, result_problem
from unetseg.cli import main

COMMITTED = REPO / "docs" / "results" / "ablation_nuclei"
ONE = COMMITTED / "results" / "add" / "seed1" / "result.json"


@pytest.fixture
def stored() -> dict:
    if not ONE.is_file():
        pytest.skip("no committed nuclei ablation results")
    return json.loads(ONE.read_text())


def _damaged(result: dict, how: str) -> object:
    damaged = copy.deepcopy(result)
    if how == "a list":
        return []
    if how == "a string":
        return "dice 0.9"
    if how == "key missing":
        del damaged["mean"]
    elif how == "string for a number":
        damaged["mean"]["dice"] = "0.9"
    elif how == "Dice 7.5":
        damaged["mean"]["dice"] = 7.5
    elif how == "NaN Dice":
        damaged["mean"]["dice"] = float("nan")
    elif how == "inf boundary F1 of an image":
        damaged["images"][0]["bf1_1px"] = float("inf")
    elif how == "negative distance":
        damaged["mean"]["hd95"] = -3.0
    elif how == "another variant":
        damaged["variant"] = "gated"
    return damaged


CASES = {
    "a list": "holds list",
    "a string": "holds str",
    "key missing": "key 'mean' is missing",
    "string for a number": "mean.dice is str '0.9', not a number",
    "Dice 7.5": "mean.dice is 7.5, outside 0..1",
    "NaN Dice": "mean.dice is NaN",
    "inf boundary F1 of an image": "images[0].bf1_1px is inf, outside 0..1",
    "negative distance": "mean.hd95 is -3, below 0",
    "another variant": "result of 'gated' seed 1, not of 'add' seed 1",
}


def test_the_committed_results_are_all_usable():
    files = sorted(COMMITTED.glob("results/*/*/result.json"))
    if not files:
        pytest.skip("no committed nuclei ablation results")
    for path in files:
        result = json.loads(path.read_text())
        assert result_problem(result, path.parents[1].name, int(path.parent.name.removeprefix("seed"))) is None


@pytest.mark.parametrize("how", list(CASES))
def test_a_damaged_result_is_named_and_not_used(stored, tmp_path, how):
    path = tmp_path / "result.json"
    path.write_text(json.dumps(_damaged(stored, how)))
    result, why = read_result(path, "add", 1)
    assert result is None and why is not None
    assert why.startswith(f"{path}: damaged, treated as not run (") and CASES[how] in why


def test_missing_or_cut_short_is_simply_not_run(stored, tmp_path):
    assert read_result(tmp_path / "none.json", "add", 1) == (None, None)
    cut = tmp_path / "cut.json"
    cut.write_text(json.dumps(stored)[:100])
    assert read_result(cut, "add", 1) == (None, None)
    whole = tmp_path / "whole.json"
    whole.write_text(json.dumps(stored))
    assert read_result(whole, "add", 1) == (stored, None)


def test_report_only_over_a_damaged_result_lists_it_and_reports_the_rest(stored, tmp_path):
    shutil.copytree(COMMITTED / "results", tmp_path / "results")
    (tmp_path / "results" / "add" / "seed1" / "result.json").write_text(json.dumps(_damaged(stored, "Dice 7.5")))
    tree = yaml.safe_load((REPO / "configs" / "ablation_nuclei.yaml").read_text())
    tree.update(base=str(REPO / "configs" / tree["base"]), results_dir=str(tmp_path), output_dir=str(tmp_path / "runs"))
    spec_file = write_yaml(tmp_path / "spec.yaml", tree)
    result = CliRunner().invoke(main, ["ablate", "--config", str(spec_file), "--report-only"])
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output
    assert "missing: add seed 1: " in result.output and "mean.dice is 7.5, outside 0..1" in result.output
    report = json.loads((tmp_path / "report.json").read_text())
    assert 1 not in report["summary"]["add"]["seeds"]
    assert all(v <= 1 for run in report["summary"].values() for v in [run.get("dice", {}).get("mean", 0)])


def test_markdown_report_defuses_html_from_stored_names():
    """Probe #13: a variant or image name holding raw HTML (from result.json or a file name)
    was written into report.md as HTML, which a Markdown viewer renders."""
    from unetseg.report.document import Report, Table, render_markdown

    report = Report(title="t")
    report.section("Results").blocks += [
        "variant <img src=x onerror=alert(1)> & more",
        Table(["variant", "dice"], [["<script>x</script>|y", 0.5]]),
    ]
    text = render_markdown(report, "fig")
    assert "<img" not in text and "<script>" not in text
    assert "&lt;img src=x onerror=alert(1)&gt; &amp; more" in text
    assert "| &lt;script&gt;x&lt;/script&gt;\\|y | 0.5 |" in text


def test_a_local_run_ends_when_its_launcher_is_killed(tmp_path):
    """Probe #9: `kill -9` of `ablate --executor local` left its submitit runs training (they are
    grandchildren under a controller meant to outlive the launcher). A run now watches its
    launcher and ends within a second or two of it."""
    import subprocess
    import sys
    import time

    from conftest import repo_pythonpath

    launcher = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
    code = (
        f"from unetseg.ablation.runner import exit_with; import time; exit_with({launcher.pid}, 0.1); "
        "print('watching', flush=True); time.sleep(300)"
    )
    env = {**__import__("os").environ, "PYTHONPATH": repo_pythonpath()}
    run = subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, text=True)
    try:
        assert run.stdout.readline().strip() == "watching"  # imports done (slow on a busy machine)
        time.sleep(0.5)
        assert run.poll() is None  # alive while its launcher is
        launcher.kill()
        launcher.wait()
        assert run.wait(timeout=10) == 1
    finally:
        launcher.kill()
        run.kill()
