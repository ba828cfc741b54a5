"""The documentation: the configuration reference is the schema's, every link resolves, and the
README stays a front door whose set-up commands are the ones CI runs."""

from __future__ import annotations

import difflib
import re
import shlex
from pathlib import Path

import pytest

from unetseg.config.docs import render

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")


def test_configuration_reference_is_up_to_date():
    page = ROOT / "docs" / "configuration.md"
    written, expected = page.read_text(encoding="utf-8"), render()
    if written != expected:
        diff = "".join(
            list(
                difflib.unified_diff(
                    written.splitlines(True), expected.splitlines(True), "docs/configuration.md", "schema"
                )
            )[:40]
        )
        pytest.fail(
            f"docs/configuration.md is out of date; run\n"
            f"  python -m unetseg.config.docs > docs/configuration.md\n{diff}"
        )


def test_configuration_reference_describes_every_key():
    undocumented = [
        line.split("|")[1].strip()
        for line in render().splitlines()
        if line.startswith("| `") and line.rstrip().endswith("|  |")
    ]
    assert not undocumented, f"config keys without a description in the schema: {undocumented}"


def _prose(text: str) -> str:
    """Markdown without fenced code blocks and inline code, whose brackets are not links."""
    text = re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)
    return re.sub(r"`[^`\n]*`", "", text)


def _anchors(page: Path) -> set[str]:
    """GitHub's anchors of a page's headings."""
    found: set[str] = set()
    for line in page.read_text(encoding="utf-8").splitlines():
        heading = re.match(r"#{1,6}\s+(.*)", line)
        if heading:
            title = heading.group(1).strip().lower().replace("`", "")
            slug = re.sub(r"[^\w\- ]", "", title).replace(" ", "-")
            anchor, n = slug, 0
            while anchor in found:
                n += 1
                anchor = f"{slug}-{n}"
            found.add(anchor)
    return found


def _links(page: Path) -> list[str]:
    return LINK.findall(_prose(page.read_text(encoding="utf-8")))


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_links_resolve(page: Path):
    broken = []
    for target in _links(page):
        if re.match(r"[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if not dest.exists():
            broken.append(f"{target}: no such file")
        elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest):
            broken.append(f"{target}: no heading with that anchor")
    assert not broken, f"{page.relative_to(ROOT)}: " + "; ".join(broken)


def test_docs_pages_are_reachable_from_the_readme():
    """Every hand-written page under docs/ is linked from the README or from a page it links."""
    seen, todo = set(), [ROOT / "README.md"]
    while todo:
        page = todo.pop()
        if page in seen or page.suffix != ".md" or not page.is_file():
            continue
        seen.add(page)
        for target in _links(page):
            path = target.partition("#")[0]
            if path and not re.match(r"[a-z][a-z0-9+.-]*:", path):
                dest = (page.parent / path).resolve()
                todo.append(dest / "README.md" if dest.is_dir() else dest)
    pages = list((ROOT / "docs").glob("*.md")) + list((ROOT / "docs" / "results").glob("*.md"))
    unreachable = [str(p.relative_to(ROOT)) for p in pages if p.resolve() not in seen]
    assert not unreachable, f"pages no link from the README leads to: {unreachable}"


def test_readme_fits_on_a_screen():
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= 250, f"README.md has {len(lines)} lines; move detail into docs/"


def _setup_commands() -> list[str]:
    """The README's set-up commands: the bash blocks of its 'Set-up' section."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = re.search(r"^## Set-up\n(.*?)^## ", readme, flags=re.S | re.M)
    assert section, "README.md has no '## Set-up' section"
    return [block.strip() for block in re.findall(r"```bash\n(.*?)```", section.group(1), flags=re.S)]


def _pip(command: str) -> list[str]:
    words = shlex.split(command)
    if words[:3] == ["python", "-m", "pip"]:
        words = words[2:]
    return [w for w in words if w != "-q"]


def test_ci_runs_the_readme_set_up():
    """.ci/run installs as the README's first command does and runs its test command."""
    install, tests = _setup_commands()
    ci = [
        line.strip()
        for line in (ROOT / ".ci" / "run").read_text().splitlines()
        if line.strip() and not line.lstrip().startswith(("#", "set ", "cd "))
    ]
    readme_pips = [_pip(part) for part in install.split(" && ") if part.startswith("pip install")]
    ci_pips = [_pip(line) for line in ci if "pip install" in line]
    assert ci_pips == readme_pips
    assert ci[-1] == tests
