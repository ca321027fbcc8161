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


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, known: set[str]) -> set[str]:
    """The persd modules ``path`` imports anywhere in it (inside functions and under
    TYPE_CHECKING too: a cycle there is still two ideas that need each other)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [f"{node.module}.{a.name}" for a in node.names] + [node.module]
        else:
            continue
        for name in names:
            if name in known:
                out.add(name)
                break
    return out


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            part = []
            while True:
                w = stack.pop()
                part.append(w)
                if w == v:
                    break
            if len(part) > 1:
                found.append(sorted(part))

    for v in graph:
        if v not in index:
            visit(v)
    return found


def test_no_modules_import_each_other() -> None:
    """No import cycles between modules: the package reads bottom up (docs/ARCHITECTURE.md,
    "Import direction"). A package's ``__init__`` only hands its modules' names on, so the
    edges into it are followed to the modules it names."""
    modules = {_module_name(p): p for p in _modules()}
    known = set(modules)
    graph = {name: _imports(path, known) - {name} for name, path in modules.items()}
    faces = {n for n, p in modules.items() if p.name == "__init__.py"}
    for name in graph:  # a face's own imports are where an edge into it really goes
        graph[name] = {
            target
            for dep in graph[name]
            for target in (graph[dep] - {name} if dep in faces else {dep})
        }
    assert not _cycles(graph), f"modules that import each other: {_cycles(graph)}"


def test_the_default_models_are_named_once() -> None:
    """models.yaml's ``defaults`` name the run's student and teacher; the shipped run config
    (pipeline/default.yaml) repeats them for its readers and must agree."""
    import yaml

    from persd.config import RunConfig
    from persd.llm.registry import default_model

    shipped = yaml.safe_load((PACKAGE / "pipeline" / "default.yaml").read_text())
    student, teacher = default_model("student"), default_model("teacher")
    assert shipped["student"]["model"] == student == RunConfig().student.model
    assert shipped["teacher"]["model"] == shipped["teacher"]["server"]["model"] == teacher
    assert RunConfig().teacher.model == RunConfig().teacher.server.model == teacher
