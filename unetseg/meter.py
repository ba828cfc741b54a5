"""Overall progress of the long commands (``ablate``, ``analyze-*``): a bar with an ETA.

Those commands run for minutes to hours over units of work that only the library functions
know (runs of a grid, knock-outs of a skip, models of a gradient study). The functions take a
:class:`Meter`, announce the work as they find it (``expect``) and count it done
(``advance``); the CLI hands them a tqdm bar, the library defaults to :data:`QUIET`, so a
function called from code or a test prints nothing.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Protocol

from tqdm.auto import tqdm


class Meter(Protocol):
    def expect(self, units: int) -> None:
        """``units`` more units of work are known to lie ahead."""

    def advance(self, units: int = 1) -> None:
        """``units`` units of work are done."""

    def write(self, message: str) -> None:
        """A line of log that does not break the bar."""


class _Quiet:
    def expect(self, units: int) -> None:
        pass

    def advance(self, units: int = 1) -> None:
        pass

    def write(self, message: str) -> None:
        print(message)


QUIET: Meter = _Quiet()


class _Bar:
    def __init__(self, bar: tqdm) -> None:
        self.bar = bar

    def expect(self, units: int) -> None:
        self.bar.total = (self.bar.total or 0) + units
        self.bar.refresh()

    def advance(self, units: int = 1) -> None:
        self.bar.update(units)

    def write(self, message: str) -> None:
        tqdm.write(message)


@contextmanager
def progress_bar(desc: str, unit: str) -> Iterator[Meter]:
    """A bar on stderr when it is a terminal (none in logs and pipes), closed on the way out."""
    bar = tqdm(total=0, desc=desc, unit=unit, disable=None, dynamic_ncols=True)
    try:
        yield _Bar(bar)
    finally:
        bar.close()
