"""The package's layout holds by tools, not memory: import layers (import-linter), lint and
format (ruff), no long functions, and a command line that starts without torch."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
MAX_FUNCTION_LINES = 60


def tool(name: str) -> str:
    found = BIN / name if (BIN / name).exists() else shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is not installed: pip install -e '.[dev]'")
    return str(found)


def lint_imports(root: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [tool("lint-imports")],
        cwd=root,
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"},
    )


def test_import_layers_are_kept() -> None:
    result = lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def test_the_layer_contract_catches_a_command_importing_back_from_the_group(tmp_path: Path) -> None:
    """The cycle the old cli.py had: a command module importing a helper from the module that
    registers it. Made again in a copy, the contract must break."""
    shutil.copytree(ROOT / "unetseg", tmp_path / "unetseg", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    with open(tmp_path / "unetseg" / "cli" / "data.py", "a") as fh:
        fh.write("\n\ndef _helper():\n    from unetseg.cli.main import main\n\n    return main\n")
    result = lint_imports(tmp_path)
    assert result.returncode != 0
    assert "unetseg.cli.data -> unetseg.cli.main" in result.stdout


@pytest.mark.parametrize("command", [["check"], ["format", "--check"]])
def test_ruff(command: list[str]) -> None:
    result = subprocess.run([tool("ruff"), *command, "--no-cache", "."], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_no_function_is_longer_than_a_screen() -> None:
    long = []
    for path in sorted((ROOT / "unetseg").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({lines} lines)")
    assert not long, "functions over 60 lines: " + "; ".join(long)


def test_the_root_holds_only_the_parts_and_a_few_process_wide_modules() -> None:
    modules = {p.stem for p in (ROOT / "unetseg").glob("*.py")}
    assert modules == {"__init__", "__main__", "atomic", "meter", "runtime"}
    parts = {p.name for p in (ROOT / "unetseg").iterdir() if (p / "__init__.py").exists()}
    assert parts == {
        "ablation",
        "cli",
        "config",
        "data",
        "inference",
        "metrics",
        "models",
        "planning",
        "report",
        "studies",
        "training",
    }


def test_the_command_line_and_the_config_load_without_torch() -> None:
    """``unetseg --help`` and a config error must not wait for torch (about 2 s to import)."""
    code = "import sys, unetseg.cli, unetseg.config; print('torch' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"


def test_no_module_imports_itself_through_others() -> None:
    """No import cycle anywhere in the package, within a layer either (the layers contract
    only forbids upward imports between folders)."""
    import grimp

    graph = grimp.build_graph("unetseg")
    imports = {m: graph.find_modules_directly_imported_by(m) for m in graph.modules}
    done: set[str] = set()

    def cycle_from(module: str, path: list[str]) -> list[str] | None:
        if module in path:
            return path[path.index(module) :] + [module]
        if module in done:
            return None
        for target in sorted(imports[module]):
            found = cycle_from(target, [*path, module])
            if found:
                return found
        done.add(module)
        return None

    for module in sorted(imports):
        cycle = cycle_from(module, [])
        assert cycle is None, " -> ".join(cycle)
