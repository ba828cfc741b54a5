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


def _count_two_runs_and_log_a_line(stderr: io.StringIO, monkeypatch) -> tuple[str, str]:
    """What a meter counting two runs and logging one line wrote: (stderr, stdout)."""
    stdout = io.StringIO()  # not a terminal
    monkeypatch.setattr(sys, "stderr", stderr)
    monkeypatch.setattr(sys, "stdout", stdout)
    with progress_bar("ablate", "run") as meter:
        meter.expect(2)
        meter.advance(2)
        meter.write("a log line")
    return stderr.getvalue(), stdout.getvalue()


def test_no_bar_where_nobody_watches(monkeypatch) -> None:
    err, out = _count_two_runs_and_log_a_line(io.StringIO(), monkeypatch)  # a pipe or a log file: no terminal
    assert err == "" and "\r" not in out  # no bar, not even its carriage returns
    assert out == "a log line\n"  # the log line is still written, once and whole
    # The same work on a terminal draws the bar: the silence above is the stream's doing.
    err, out = _count_two_runs_and_log_a_line(Terminal(), monkeypatch)
    assert "\r" in err and "ablate:" in err and "2/2" in err
    assert out == "a log line\n"


def test_quiet_meter_prints_its_lines_and_nothing_else(capsys) -> None:
    QUIET.expect(5)
    QUIET.advance()
    QUIET.write("a log line")
    assert capsys.readouterr() == ("a log line\n", "")
