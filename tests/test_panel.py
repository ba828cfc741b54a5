"""The planning panel (benchmarks/planning_panel.py) on generated stand-ins for its licensed
datasets: the scoring by hand, and one planned and one peer run end to end, reused when rerun."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import yaml
from conftest import write_pairs

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import panel_data
import planning_panel
from panel_data import PanelSet, dice, score_folder

from unetseg.runtime import cpu_model


def _write(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), array)


def test_dice_inside_the_field_of_view_and_on_the_truths_pixels(tmp_path):
    truth = np.zeros((4, 4), np.uint8)
    truth[:2, :2] = 255  # 4 px
    pred = np.zeros((4, 4), np.uint8)
    pred[:2, :3] = 255  # 6 px, 4 of them right
    fov = np.full((4, 4), 255, np.uint8)
    fov[:, 2:] = 0  # outside the field of view, the 2 wrong pixels do not count
    root = tmp_path / "set"
    _write(root / "test" / "masks" / "a.png", truth)
    _write(root / "test" / "fov" / "a.png", fov)
    _write(tmp_path / "pred" / "a.png", pred)
    assert dice(pred > 0, truth > 0) == 2 * 4 / (6 + 4)
    scores = score_folder(PanelSet("s", "", root), tmp_path / "pred")
    assert scores["dice"] == 1.0 and scores["per_image"] == {"a": 1.0}
    # a prediction 4x the truth's size is scored on the truth's pixels (area, then majority)
    big = cv2.resize(pred, None, fx=4, fy=4, interpolation=cv2.INTER_NEAREST)
    _write(tmp_path / "big" / "a.png", big)
    (root / "test" / "fov" / "a.png").unlink()
    (root / "test" / "fov").rmdir()  # no field of view: the whole image counts
    scaled = score_folder(PanelSet("s", "", root, score_scale=4), tmp_path / "big")
    assert scaled["dice"] == round(0.8, 5)
    # ISBI's convention: the structure is drawn as 0
    assert panel_data.foreground(np.array([[0, 255]]), zero=True).tolist() == [[True, False]]


def test_a_planned_and_a_peer_run_end_to_end_and_reused(tmp_path, monkeypatch):
    root = tmp_path / "standin"
    write_pairs(root / "train", n=6, h=64, w=64, seed=1)
    write_pairs(root / "test", n=2, h=64, w=64, seed=2)
    stand_in = PanelSet("standin", "generated blobs", root)
    out = tmp_path / "out"
    jobs = [
        planning_panel.Job(stand_in, method, 0, 1.0, tmp_path / "work", out, threads=1, clock="cpu")
        for method in ("planned", "monai")
    ]
    results = [job.run() for job in jobs]
    for result in results:
        assert 0.0 <= result["dice"] <= 1.0 and set(result["per_image"]) == {"img_0", "img_1"}
        assert result["run_budget_s"] == 2.0 and result["threads"] == 1
    assert "data:" in results[0]["config"] and results[0]["overrides"][-1] == "train.max_time_s=2"
    panel = planning_panel.report(out)
    assert panel == {"standin": {"monai": [results[1]["dice"]], "planned": [results[0]["dice"]]}}
    assert "| standin | planned | 0 |" in (out / "panel.md").read_text()
    # a budget in seconds buys what this CPU does in them: every trained run names its machine
    assert {r["machine"] for r in results} == {cpu_model()}
    row = next(line for line in (out / "panel.md").read_text().splitlines() if line.startswith("| standin | monai"))
    assert row.endswith(f"| {planning_panel._machines(results[1:])} |")

    # rerun: both results are reused (nothing trains: a training run would fail here)
    class Trained(Exception):
        """Raised where a run would train: reuse must not get there."""

    monkeypatch.setattr(planning_panel.Job, "_train_unetseg", lambda *_: (_ for _ in ()).throw(Trained))
    monkeypatch.setattr(planning_panel.Job, "_train_peer", lambda *_: (_ for _ in ()).throw(AssertionError))
    assert [job.run() for job in jobs] == results
    with pytest.raises(AssertionError):  # --again: a finished run is trained anew, not reused
        jobs[1].run(reuse=False)
    stored = json.loads(jobs[0].result_path.read_text())
    assert stored["method"] == "planned" and stored["key"] == results[0]["key"]
    # a screen that changes only how the test images are predicted re-predicts the planned
    # run's checkpoint under its settings: the training numbers are the planned run's
    # (the planned config averages flips, rule 17; the screen notta predicts each image once)
    tta = planning_panel.Job(stand_in, "planned:notta", 0, 1.0, tmp_path / "work", out, threads=1, clock="cpu")
    screened = tta.run()
    assert screened["trained_by"] == "planned" and screened["key"] != results[0]["key"]
    assert {k: screened[k] for k in ("crops", "epochs", "train_s", "machine")} == {
        k: results[0][k] for k in ("crops", "epochs", "train_s", "machine")
    }
    assert "--tta none" in tta.log.read_text() and set(screened["per_image"]) == {"img_0", "img_1"}
    # the screen of the adopted rule is the planned run itself, reused as stored
    assert (
        planning_panel.Job(stand_in, "planned:tta", 0, 1.0, tmp_path / "work", out, 1, "cpu").run()["reused_from"]
        == "planned"
    )
    # a screen that changes the training is trained (and here fails, as training is switched off)
    with pytest.raises(Trained):
        planning_panel.Job(stand_in, "planned:lr1e3", 0, 1.0, tmp_path / "work", out, threads=1, clock="cpu").run()
    # the checkpoint is found by the training its embedded config describes, not by its folder:
    # planned/seed0/run holding another config's weights is passed over for the run-<key> folder
    # (an earlier config's finished run, kept) that holds these
    run, kept = jobs[0].dir / "run", jobs[0].dir / "run-earlier"
    shutil.copytree(run, kept)
    best = run / "checkpoints" / results[0]["checkpoint"]
    state = torch.load(best, map_location="cpu", weights_only=False)
    state["config"]["train"]["lr"] *= 2
    torch.save(state, best)
    tta.result_path.unlink()
    assert tta.run()["trained_by"] == "planned"
    predicted = [line for line in tta.log.read_text().splitlines() if line.startswith("$ ") and " predict " in line]
    assert f"{kept.name}/checkpoints/{best.name}" in predicted[-1]
    shutil.rmtree(kept)
    tta.result_path.unlink()
    with pytest.raises(Trained):  # no checkpoint of this training left: it would train
        tta.run()


def test_a_screen_whose_rule_was_adopted_is_the_planned_run(tmp_path):
    """Keys are what a run trained (config values with the overrides applied, not its name or
    folder): the planned config that now writes a screen's override reuses that screen's run,
    marked as such, instead of training the same thing again; a different config does not."""
    written = "name: x_planned\noutput_dir: /w/x/planned-stem2/seed0/run\nmodel: {depth: 6}\n"
    base = ["seed=0", "train.threads=1"]
    screen = {
        "dataset": "x",
        "method": "planned:stem2",
        "seed": 0,
        "budget_s": 480.0,
        "config": written,
        "overrides": [*base, "model.stem_stride=2"],
        "dice": 0.8,
    }
    out = tmp_path / "out"
    (out / "runs" / "x" / "planned-stem2").mkdir(parents=True)
    (out / "runs" / "x" / "planned-stem2" / "seed0.json").write_text(json.dumps(screen))
    job = planning_panel.Job(PanelSet("x", "", tmp_path), "planned", 0, 480.0, tmp_path / "work", out, 1, "cpu")
    planned = "name: x_planned\noutput_dir: /w/x/planned/seed0/run\nmodel: {depth: 6, stem_stride: 2}\n"
    same = {"dataset": "x", "seed": 0, "budget": 480.0}
    same["config"] = planning_panel._effective(planning_panel._values(planned), base)
    reused = job.stored(planning_panel._digest(same))
    assert reused is not None and reused["dice"] == 0.8
    assert reused["method"] == "planned" and reused["reused_from"] == "planned:stem2"
    assert json.loads((out / "runs" / "x" / "planned" / "seed0.json").read_text()) == reused
    other = dict(same, config=planning_panel._effective(planning_panel._values(planned), [*base, "train.lr=0.1"]))
    (out / "runs" / "x" / "planned" / "seed0.json").unlink()
    assert job.stored(planning_panel._digest(other)) is None


def test_shipped_data_keys_alike_from_any_clone():
    """A run planned in one frozen clone is the same run for the next clone: the shipped data's
    paths key from the repository root wherever the clone was; other paths stay as written."""
    root = planning_panel.ROOT
    ours = f"data: {{images: {root}/data/dsb2018_nuclei/train/images}}\n"
    theirs = "data: {images: /tmp/panel_clone22/data/dsb2018_nuclei/train/images}\n"
    elsewhere = "data: {images: /tmp/panel_clone22/data/my_cells/train/images}\n"
    assert planning_panel._values(ours) == planning_panel._values(theirs)
    assert planning_panel._values(theirs)["data"]["images"] == "<repo>/data/dsb2018_nuclei/train/images"
    assert planning_panel._values(elsewhere)["data"]["images"] == "/tmp/panel_clone22/data/my_cells/train/images"


def test_a_seed_starved_by_load_is_flagged_set_aside_and_kept_as_a_record(tmp_path):
    """Four runs on two cores slowed a MONAI loop's CPU seconds by about a quarter: such a seed
    measures the load. Under 0.8 of the best-fed seed's crops it is flagged, set aside under
    another name (so the runner reruns it) and listed apart; a seed at 0.85 stays."""
    out = tmp_path / "out"

    def result(method: str, seed: int, crops: int, dice: float, machine: str = "cpu a") -> None:
        path = out / "runs" / "x" / method / f"seed{seed}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        numbers = {"dataset": "x", "method": method, "seed": seed, "dice": dice, "worst": dice - 0.1}
        numbers["machine"] = machine
        numbers |= {"train_s": 960.0, "crops": crops, "crops_per_s": crops / 960, "cpu_share": 0.9, "clock": "cpu"}
        path.write_text(json.dumps(numbers))

    result("monai", 0, 9000, 0.80)
    result("monai", 1, 7100, 0.76)  # 0.79 of 9,000: starved
    result("monai", 2, 7650, 0.79)  # 0.85: kept
    result("planned", 0, 7000, 0.78)
    result("planned", 1, 11000, 0.79, machine="cpu b")  # a faster CPU: its seeds weigh only each other
    runs = planning_panel.collect(out)["x"]
    assert [r["seed"] for r in planning_panel.starved(runs["monai"])] == [1]
    assert planning_panel.starved(runs["planned"]) == []
    (out / "runs" / "x" / "planned" / "seed1.json").unlink()
    planning_panel.report(out)
    assert "| 0.7833 | 0.8000 / 0.7600 (starved) / 0.7900 |" in (out / "panel.md").read_text()

    moved = planning_panel.set_aside_starved(out)
    assert moved == [out / "runs" / "x" / "monai" / "seed1.json"]
    assert (out / "runs" / "x" / "monai" / "starved-seed1.json").exists() and not moved[0].exists()
    assert planning_panel.report(out)["x"]["monai"] == [0.80, 0.79]
    text = (out / "panel.md").read_text()
    assert "| 0.7950 | 0.8000 / 0.7900 |" in text and "| x | monai | 1 | 0.7600 | 7100 |" in text


def test_the_made_lesion_photographs_hold_one_large_lesion_each_and_are_drawn_alike_every_time():
    import panel_lesions

    for seed in (0, 1, 10_003):
        image, mask = panel_lesions.draw(seed)
        assert image.dtype == np.uint8 and image.shape == (*mask.shape, 3)
        assert max(mask.shape) in range(560, 1601) and set(np.unique(mask)) == {0, 255}
        count, _ = cv2.connectedComponents((mask > 0).astype(np.uint8))
        assert count == 2  # one lesion
        assert 0.04 < (mask > 0).mean() < 0.5
        lesion, skin = image[mask > 0].mean(), image[cv2.erode(255 - mask, np.ones((41, 41))) > 0].mean()
        assert lesion < skin  # pigment is darker than the skin (vignette included)
    again, _ = panel_lesions.draw(1)
    assert np.array_equal(again, panel_lesions.draw(1)[0])


def test_the_made_polyp_frames_hold_one_polyp_inside_the_scope_and_are_drawn_alike_every_time():
    import panel_polyps

    for seed in (0, 2, 10_001):
        image, mask = panel_polyps.draw(seed)
        assert image.dtype == np.uint8 and image.shape == (*mask.shape, 3)
        h, w = mask.shape
        assert w > h and w in range(576, 1921) and set(np.unique(mask)) == {0, 255}
        count, _ = cv2.connectedComponents((mask > 0).astype(np.uint8))
        assert count == 2  # one polyp
        assert 0.02 < (mask > 0).mean() < 0.35
        assert image[mask > 0].max(axis=1).min() > 20  # never under the black border
        assert image[0, 0].max() < 20 or image[-1, 0].max() < 160  # a black corner, or the overlay box
    assert np.array_equal(panel_polyps.draw(2)[0], panel_polyps.draw(2)[0])


def test_the_made_ultrasound_scans_hold_one_dark_lesion_among_dark_lobules_and_are_drawn_alike_every_time():
    import panel_ultrasound

    for seed in (0, 3, 10_001):
        image, mask = panel_ultrasound.draw(seed)
        assert image.dtype == np.uint8 and image.shape == mask.shape and set(np.unique(mask)) == {0, 255}
        count, _ = cv2.connectedComponents((mask > 0).astype(np.uint8))
        assert count == 2  # one lesion
        assert 0.005 < (mask > 0).mean() < 0.3
        assert image[:5].max() < 10 or image[-5:].max() < 10  # the scanner's black frame
        smooth = cv2.GaussianBlur(image, (0, 0), 6).astype(float)
        scan = smooth > 15  # inside the frame
        lesion = np.median(smooth[mask > 0])
        around = smooth[scan & (mask == 0)]
        assert lesion < np.median(around)  # hypoechoic ...
        assert (around <= lesion * 1.15).mean() > 0.01  # ... but not the only dark thing: lobules, shadow
    assert np.array_equal(panel_ultrasound.draw(2)[0], panel_ultrasound.draw(2)[0])


def test_the_photograph_peer_stacks_whole_images_of_several_shapes():
    """Whole resized photographs come in several shapes; a batch takes one shape and turns together."""
    import panel_peers

    rng = np.random.default_rng(0)
    shapes = [(192, 256), (256, 176), (192, 256)]
    pairs = [(np.zeros((h, w, 3), np.uint8), np.zeros((h, w, 1), np.uint8)) for h, w in shapes]
    seen = set()
    for _ in range(30):
        x, y = panel_peers.batch(pairs, rng, resize=True)
        assert x.shape[0] == y.shape[0] == panel_peers.BATCH and x.shape[-2:] == y.shape[-2:]
        seen.add(tuple(x.shape[-2:]))
    assert seen == {(192, 256), (256, 192), (256, 176), (176, 256)}  # both shapes, turned and not


def test_the_report_pits_planned_against_the_better_peer_image_by_image(tmp_path):
    """Planned 0.02 above the MONAI loop on every image of every seed: the difference and both
    ends of its interval are 0.02, and it is ahead on all images; the weaker smp loop is not the
    one compared."""
    out = tmp_path / "out"
    hardness = {f"img{i}": 0.5 + 0.04 * i for i in range(6)}

    def result(method: str, seed: int, shift: float) -> None:
        path = out / "runs" / "x" / method / f"seed{seed}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        per_image = {name: value + shift for name, value in hardness.items()}
        dice = sum(per_image.values()) / len(per_image)
        numbers = {"dataset": "x", "method": method, "seed": seed, "dice": dice, "worst": min(per_image.values())}
        numbers |= {"train_s": 960.0, "crops": 9000, "crops_per_s": 9.4, "per_image": per_image}
        path.write_text(json.dumps(numbers))

    for seed in range(3):
        result("planned", seed, 0.02)
        result("monai", seed, 0.0)
        result("smp", seed, -0.1)
    planning_panel.report(out)
    assert "| x | monai | +0.0200 [+0.0200, +0.0200] | 6 of 6 |" in (out / "panel.md").read_text()


def test_a_choice_made_the_old_way_is_made_again_before_its_checkpoint_is_re_predicted(tmp_path, monkeypatch):
    """A config that chooses its post-processing keys on how the choice is made: a result whose
    checkpoint chose on validation's predictions without TTA is re-predicted after
    ``unetseg postprocess`` chose again (no retraining); a choice made as now is kept."""
    chooses = "name: x\ntrain: {postprocess: choose}\n"
    stored = {"dataset": "x", "seed": 0, "budget_s": 480.0, "config": chooses, "overrides": []}
    now = planning_panel._digest(
        planning_panel._keyed("x", 0, 480.0, planning_panel._effective({**yaml.safe_load(chooses)}, []))
    )
    assert planning_panel._stored_key(stored) != now  # chosen the first way: made again
    assert planning_panel._stored_key({**stored, "postprocess_choice": planning_panel.POSTPROCESS_CHOICE}) == now
    off = {**stored, "config": "name: x\ntrain: {postprocess: 'off'}\n"}
    assert planning_panel._stored_key(off) == planning_panel._stored_key({**off, "postprocess_choice": 1})
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    checkpoint = run / "checkpoints" / "best.pt"
    checkpoint.touch()
    none = {"fill_holes": False, "keep_largest": False, "min_size": 0}
    (run / "postprocessing.json").write_text(json.dumps({"chosen": {**none, "keep_largest": True}, "tried": []}))
    calls: list[str] = []

    def cli(args: list[str], log: Path, env: dict | None = None) -> None:
        calls.append(args[0])
        if args[0] == "postprocess":
            again = {"predicted_with": {"tta": "flips", "mode": "auto"}, "chosen": none, "tried": []}
            (run / "postprocessing.json").write_text(json.dumps(again))

    monkeypatch.setattr(planning_panel, "_cli", cli)
    monkeypatch.setattr(planning_panel, "score_folder", lambda *_: {"dice": 0.5})
    job = planning_panel.Job(
        PanelSet("x", "", tmp_path), "planned", 1, 480.0, tmp_path / "work", tmp_path / "o", 1, "cpu"
    )
    numbers = job._repredict({"method": "planned", "crops": 10}, checkpoint, {}, True)
    assert calls == ["postprocess", "predict"]  # nothing chosen now: no prediction without it
    assert numbers["crops"] == 10 and "postprocess" not in numbers
    calls.clear()
    job._repredict({"method": "planned"}, checkpoint, {}, True)
    assert calls == ["predict"]
