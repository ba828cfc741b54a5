"""``unetseg evaluate --report``: the failure gallery, worst image first, as one HTML file,
and what a browser shows of it."""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import pytest
from cli_helpers import assert_clean_failure, invoke


def test_report_lists_images_worst_first_with_four_pictures_each(trained, tiny_cfg_dict, tmp_path):
    data = tiny_cfg_dict["data"]
    best = trained / "checkpoints" / "best.pt"
    page = tmp_path / "report.html"
    scores = tmp_path / "scores.json"
    args = ["evaluate", "--checkpoint", best, "--images", data["images"], "--masks", data["masks"]]
    result = invoke(*args, "--report", page, "--json", scores)
    assert result.exit_code == 0, result.output
    text = page.read_text()
    rows = json.loads(scores.read_text())["images"]
    worst_first = [r["name"] for r in sorted(rows, key=lambda r: r["dice"])]
    linked = re.findall(r"<a href='#img\d+'>([^<]+)</a>", text)
    assert linked == worst_first and len(linked) == 6
    assert text.count("<div class='card'") == 6
    # self-contained, no file beside it: pictures as JPEG, masks as PNG
    assert text.count("src='data:image/jpeg;base64,") == 2 * 6 and text.count("src='data:image/png;base64,") == 2 * 6
    assert "false positive" in text and text.startswith("<!DOCTYPE html>")
    again = invoke(*args, "--report", page)
    assert_clean_failure(again, "already exists")


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


@pytest.mark.skipif(_chromium() is None, reason="no Chromium on this machine (apt-get install chromium)")
def test_report_renders_in_headless_chromium(trained, tiny_cfg_dict, tmp_path):
    import cv2

    data = tiny_cfg_dict["data"]
    page = tmp_path / "report.html"
    result = invoke(
        "evaluate", "--checkpoint", trained / "checkpoints" / "best.pt", "--images", data["images"],
        "--masks", data["masks"], "--report", page,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    shot = tmp_path / "shot.png"
    subprocess.run(
        [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", f"--screenshot={shot}",
         "--window-size=1280,2400", page.as_uri()],
        check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    picture = cv2.imread(str(shot))
    assert picture is not None and picture.shape[1] == 1280
    # The embedded pictures were drawn: many distinct colours, not a blank or broken page.
    assert len({tuple(p) for p in picture[::7, ::7].reshape(-1, 3)}) > 50
