"""Running the command line in-process, and what a user error must look like."""

from __future__ import annotations

from click.testing import CliRunner, Result

from unetseg.cli import main


def invoke(*args: object) -> Result:
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=True)


def assert_clean_failure(result, *fragments: str) -> None:
    """Non-zero exit, the message shown, and no traceback (a user error, not a crash)."""
    assert result.exit_code != 0, result.output
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in result.output, (fragment, result.output)
