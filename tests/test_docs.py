"""The documentation: the configuration reference is the schema's."""

from __future__ import annotations

import difflib
from pathlib import Path

import pytest

from unetseg.config.docs import render

ROOT = Path(__file__).resolve().parents[1]


def test_configuration_reference_is_up_to_date():
    page = ROOT / "docs" / "configuration.md"
    written, expected = page.read_text(encoding="utf-8"), render()
    if written != expected:
        diff = "".join(list(difflib.unified_diff(
            written.splitlines(True), expected.splitlines(True), "docs/configuration.md", "schema"))[:40])
        pytest.fail(f"docs/configuration.md is out of date; run\n"
                    f"  python -m unetseg.config.docs > docs/configuration.md\n{diff}")


def test_configuration_reference_describes_every_key():
    undocumented = [line.split("|")[1].strip() for line in render().splitlines()
                    if line.startswith("| `") and line.rstrip().endswith("|  |")]
    assert not undocumented, f"config keys without a description in the schema: {undocumented}"
