"""The size caps of the house style (STYLE.md): a module stays under 400 lines, and a
function in pipeline/, cli/ or evaluate/ under 60, so a feature that would break a cap is
split by idea first instead of growing a file nobody reads whole."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "persd"
MODULE_LINES = 400
FUNCTION_LINES = 60
SHORT_FUNCTIONS_IN = ("pipeline", "cli", "evaluate")


def _modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def test_the_package_is_where_the_caps_look() -> None:
    assert (PACKAGE / "__init__.py").is_file() and len(_modules()) > 50


def test_no_module_is_over_the_cap() -> None:
    over = {
        str(p.relative_to(PACKAGE)): n
        for p in _modules()
        if (n := len(p.read_text().splitlines())) > MODULE_LINES
    }
    assert not over, f"modules over {MODULE_LINES} lines (split by idea): {over}"


def test_no_function_in_the_loop_and_the_cli_is_over_the_cap() -> None:
    over = {}
    for p in _modules():
        if not any(part in SHORT_FUNCTIONS_IN for part in p.relative_to(PACKAGE).parts):
            continue
        for node in ast.walk(ast.parse(p.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                length = node.end_lineno - node.lineno + 1  # type: ignore[operator]
                if length > FUNCTION_LINES:
                    over[f"{p.relative_to(PACKAGE)}:{node.name}"] = length
    assert not over, f"functions over {FUNCTION_LINES} lines: {over}"
