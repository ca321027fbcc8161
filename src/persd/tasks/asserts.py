"""Tests from source text: an ``assert`` statement, a ``check`` function, a call and its value.

Structured ``call`` tests are preferred wherever the text allows, because feedback built from
them can say input / expected / actual; anything else stays a raw ``assert`` (or ``check``) and
runs as written.
"""

from __future__ import annotations

import ast
from typing import Any

from persd.pysource import parse_expression, parse_module
from persd.records import Comparison, Test


class TestSyntaxError(ValueError):
    """The text of a test is not what it claims to be (not Python, not an assert, ...).

    The message reads after the test's name: "'tests_hidden[2]' is not valid Python (...)";
    ``part`` names the sub-field at fault ("call", "expected") for structured tests.
    """

    __test__ = False  # not a pytest class

    def __init__(self, message: str, part: str | None = None):
        super().__init__(message)
        self.part = part


def comparison_for(value: Any) -> Comparison:
    """``approx`` when the value holds a float anywhere, else ``eq``.

    Docstrings print floats rounded for humans (``6.00``, ``0.5``); exact ``==`` against a
    computed float would reject right answers.
    """
    return "approx" if _has_float(value) else "eq"


def _has_float(value: Any) -> bool:
    if isinstance(value, float | complex):
        return True
    if isinstance(value, list | tuple | set | frozenset):
        return any(_has_float(v) for v in value)
    if isinstance(value, dict):
        return any(_has_float(k) or _has_float(v) for k, v in value.items())
    return False


def call_test(call: str, value: Any, *, comparison: Comparison | None = None) -> Test:
    """A structured test: ``call`` must evaluate to ``value``.

    ``source`` is the equivalent ``assert`` for people and for runners that only read source;
    for ``approx`` tests the ``comparison`` field, not the ``==`` in ``source``, is the rule.
    """
    expected = repr(value)
    return Test(
        kind="call",
        source=f"assert {call} == {expected}",
        call=call,
        expected=expected,
        comparison=comparison or comparison_for(value),
    )


def calls_name(node: ast.AST, name: str) -> bool:
    """Whether the expression calls the function ``name`` anywhere inside it."""
    return any(
        isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id == name
        for n in ast.walk(node)
    )


def literal_value(node: ast.AST) -> tuple[bool, Any]:
    """``(True, value)`` when the node is a Python literal, else ``(False, None)``."""
    try:
        return True, ast.literal_eval(node)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return False, None


def assert_to_test(
    statement: str, entry_point: str | None, *, comparison: Comparison | None = "eq"
) -> Test:
    """One ``assert`` statement as a test: structured when it is ``<call> == <literal>``.

    The structured form needs one side that calls ``entry_point`` and another that is a
    literal (either order, parentheses allowed, no assert message); everything else keeps the
    raw statement. ``comparison=None`` picks ``approx`` for floats; the default ``eq`` keeps the
    exact ``==`` the statement was written with (MBPP's semantics).
    Raises ``TestSyntaxError`` when the text is not one assert statement.
    """
    text = statement.strip()
    try:
        module = parse_module(text)
    except SyntaxError as e:
        raise TestSyntaxError(f"is not valid Python ({e.msg}, line {e.lineno})") from None
    if len(module.body) != 1 or not isinstance(module.body[0], ast.Assert):
        raise TestSyntaxError("is not one 'assert' statement (nor a 'def check(candidate)')")
    node = module.body[0]
    structured = _split_equality(text, node, entry_point) if entry_point else None
    if structured is None:
        return Test(kind="assert", source=text)
    call, value = structured
    test = call_test(call, value, comparison=comparison)
    # Keep the statement exactly as written: it is the test a person reads in the task.
    return test.model_copy(update={"source": text})


def _split_equality(text: str, node: ast.Assert, entry_point: str) -> tuple[str, Any] | None:
    test = node.test
    if node.msg is not None or not isinstance(test, ast.Compare):
        return None
    if len(test.ops) != 1 or not isinstance(test.ops[0], ast.Eq):
        return None
    left, right = test.left, test.comparators[0]
    for call_side, literal_side in ((left, right), (right, left)):
        ok, value = literal_value(literal_side)
        if ok and calls_name(call_side, entry_point):
            call = ast.get_source_segment(text, call_side)
            if call is None:  # pragma: no cover - positions always exist for parsed source
                return None
            return call.strip(), value
    return None


def check_to_test(source: str) -> Test:
    """A ``def check(candidate)`` source as a ``check`` test; raises ``TestSyntaxError``."""
    try:
        module = parse_module(source)
    except SyntaxError as e:
        raise TestSyntaxError(f"is not valid Python ({e.msg}, line {e.lineno})") from None
    has_check = any(
        isinstance(n, ast.FunctionDef) and n.name == "check" and len(n.args.args) == 1
        for n in module.body
    )
    if not has_check:
        raise TestSyntaxError("defines no 'check(candidate)' function")
    return Test(kind="check", source=source)


def source_to_test(source: str, entry_point: str | None) -> Test:
    """A test given as text: an ``assert`` statement or a ``def check(candidate)`` source."""
    stripped = source.strip()
    if stripped.startswith(("def ", "import ", "from ")) or "\ndef check" in stripped:
        return check_to_test(source)
    # An assert means exactly what it says: ``==``, as Python would run it.
    return assert_to_test(stripped, entry_point)


def structured_test(
    call: str, expected: str, entry_point: str, comparison: Comparison | None = None
) -> Test:
    """A ``call`` test from text fields; raises ``TestSyntaxError`` when they do not fit."""
    try:
        expr = parse_expression(call.strip())
    except SyntaxError as e:
        raise TestSyntaxError(f"is not a Python expression ({e.msg})", "call") from None
    if not calls_name(expr, entry_point):
        raise TestSyntaxError(f"does not call the entry point '{entry_point}'", "call")
    try:
        value = ast.literal_eval(expected.strip())
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        raise TestSyntaxError(
            'is not a Python literal (write the repr of the value: "[1, 2]", "\'abc\'")',
            "expected",
        ) from None
    return call_test(call.strip(), value, comparison=comparison)
