"""Reports read at a laptop's width: opened in headless Chromium at 1280 px, every table fits
the window (no table scrolls sideways), text columns are left-aligned and wrap, numbers stay
right-aligned, and an ablation report opens with its verdict."""

from __future__ import annotations

import html
import json
import re
import subprocess
from pathlib import Path

import pytest
from test_gallery import _chromium

from unetseg.report.document import Report, Table, numeric_columns, write_report

REPO = Path(__file__).resolve().parents[1]
WIDTH, HEIGHT = 1280, 900

# Appended to a copy of the page: what the browser laid out, written into the DOM for --dump-dom.
MEASURE = """<script>
window.addEventListener('load', () => {
  const align = (cells) => [...new Set(cells.map(c => getComputedStyle(c).textAlign))];
  const out = {
    viewport: document.documentElement.clientWidth,
    page: document.documentElement.scrollWidth,
    headings: [...document.querySelectorAll('h2')].map(h => [h.textContent, h.getBoundingClientRect().top]),
    tables: [...document.querySelectorAll('table')].map(t => ({
      head: [...t.querySelectorAll('th')].map(th => th.textContent),
      right: t.getBoundingClientRect().right,
      scrolls: t.parentElement.scrollWidth > t.parentElement.clientWidth,
      text: align([...t.querySelectorAll('td.text')]),
      numbers: align([...t.querySelectorAll('td.num')]),
      wraps: [...t.querySelectorAll('td.text')].some(c => c.getBoundingClientRect().height > 40),
    })),
  };
  const pre = document.createElement('pre');
  pre.id = 'measured';
  pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
});
</script>"""


def laid_out(page: Path, tmp_path: Path) -> dict:
    """What headless Chromium makes of ``page`` in a 1280 x 900 window."""
    copy = tmp_path / "measured.html"
    copy.write_text(page.read_text() + MEASURE)
    dom = subprocess.run(
        [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
         f"--user-data-dir={tmp_path / 'chrome'}", f"--window-size={WIDTH},{HEIGHT}", "--dump-dom", copy.as_uri()],
        check=True, capture_output=True, text=True, timeout=120,
    ).stdout  # fmt: skip
    found = re.search(r"<pre id=\"measured\">(.*?)</pre>", dom, re.S)
    assert found, "the page did not finish loading"
    return json.loads(html.unescape(found.group(1)))


def assert_fits(layout: dict) -> None:
    assert layout["viewport"] <= WIDTH and layout["page"] <= layout["viewport"]  # no sideways scroll
    for table in layout["tables"]:
        assert table["right"] <= layout["viewport"] and not table["scrolls"], table["head"]
        assert table["text"] in ([], ["left"]) and table["numbers"] in ([], ["right"]), table["head"]


def test_number_columns_are_told_from_text_columns():
    table = Table(
        ["variant", "skips", "Dice", "params", "diff", "verdict", "seeds"],
        [
            ["concat", "c/c", "0.815 [0.793, 0.832]", "7.95 M", "+0.001 [-0.003, +0.004] p=0.57", "agree", 3],
            ["none", "n/n", "–", "7.17 M", "−0.263 [−0.280, −0.243] p=0.0001", "not resolved", float("nan")],
        ],
    )
    assert numeric_columns(table) == [False, False, True, True, True, False, True]


CLAIM = "Long skips recover the fine detail that down-sampling loses: with them boundaries are sharper. " * 2


@pytest.mark.skipif(_chromium() is None, reason="no Chromium on this machine (apt-get install chromium)")
def test_claims_and_paired_differences_fit_a_laptop_window(tmp_path):
    """The two tables that ran off the ISBI report's right edge: long claim sentences beside a
    verdict, and seven columns of differences with CIs and p-values."""
    report = Report("layout")
    report.section("claims").blocks.append(
        Table(["verdict", "claim", "source", "evidence"], [["agree", CLAIM, "Ronneberger et al. 2015", CLAIM]] * 4)
    )
    diff = "+0.0006 [-0.0030, +0.0037] p=0.57"
    report.section("paired").blocks.append(
        Table(["variant"] + [f"m{i}" for i in range(6)], [["shallow-only"] + [diff] * 6] * 6)
    )
    paths = write_report(report, tmp_path, {})
    layout = laid_out(paths["html"], tmp_path)
    assert_fits(layout)
    claims = layout["tables"][0]
    assert claims["head"][0] == "verdict" and claims["wraps"]  # the sentences wrap instead of widening the table


COMMITTED = REPO / "docs" / "results" / "ablation_isbi" / "report.html"


@pytest.mark.skipif(_chromium() is None, reason="no Chromium on this machine (apt-get install chromium)")
@pytest.mark.skipif(not COMMITTED.is_file(), reason="no committed ISBI ablation report")
def test_the_committed_isbi_report_reads_at_a_laptops_width_verdict_first(tmp_path):
    layout = laid_out(COMMITTED, tmp_path)
    assert_fits(layout)
    first, top = layout["headings"][0]
    assert first == "Verdict for this dataset" and top < HEIGHT  # seen without scrolling
    claims = next(t for t in layout["tables"] if "claim" in t["head"])
    assert claims["head"][0] == "verdict"
