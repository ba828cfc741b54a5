"""The overall progress bar of the long commands: units announced as found, an ETA, quiet by default."""

from __future__ import annotations

import io
import sys

from unetseg.meter import QUIET, progress_bar


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_bar_counts_work_announced_as_found_and_shows_an_eta(monkeypatch) -> None:
    screen = Terminal()
    monkeypatch.setattr(sys, "stderr", screen)
    with progress_bar("ablate", "run") as meter:
        meter.expect(3)
        meter.advance()
        meter.expect(1)  # more work found on the way: the total grows
        meter.advance(2)
    drawn = screen.getvalue().replace("\r", "\n")
    assert "ablate:" in drawn and "0/3" in drawn and "1/4" in drawn and "3/4" in drawn
    assert "<" in drawn and "run" in drawn  # tqdm's [elapsed<remaining, rate] part


def test_no_bar_where_nobody_watches(monkeypatch, capsys) -> None:
    with progress_bar("ablate", "run") as meter:  # stderr captured by pytest: not a terminal
        meter.expect(2)
        meter.advance(2)
        meter.write("a log line")
    captured = capsys.readouterr()
    assert captured.err == "" and captured.out == "a log line\n"
    QUIET.expect(5)
    QUIET.advance()
