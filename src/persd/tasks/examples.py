"""Reading one docstring example: a call of the entry point and a Python literal value.

Shared by every example style in ``docstring.py``. Forgiving where docstrings are sloppy
(prose after the value, ``true`` for ``True``, dropped quotes), because every reading is
checked against the reference solution before it becomes a seen test.
"""

from __future__ import annotations

import ast
import builtins
from dataclasses import dataclass
from typing import Any

from persd.pysource import parse_expression
from persd.tasks.asserts import calls_name, literal_value

BUILTINS = frozenset(dir(builtins))
# JavaScript-style booleans some docstrings use ("=> true").
_BOOLEANS = {"true": "True", "false": "False"}


@dataclass(frozen=True)
class Example:
    """One docstring example: ``call`` (an expression that calls the entry point) and its value."""

    call: str
    value: Any
    # How it was written: "doctest", "inline" (f(x) => y), "renamed" (another name called),
    # "unquoted" (f(abc) for f("abc")), "for_output", "input_output" or "assign_return".
    style: str


@dataclass(frozen=True)
class Unparsed:
    """Docstring text that looked like an example but could not be read as one."""

    text: str
    reason: str


Found = Example | Unparsed


def make_example(call: str, value_text: str, entry_point: str, style: str, text: str) -> Found:
    """An Example when ``call`` calls the entry point with literal arguments, else Unparsed."""
    try:
        expr = parse_expression(call.strip())
    except SyntaxError:
        return Unparsed(text, "the call is not a Python expression")
    node = expr.body
    if not isinstance(node, ast.Call):
        return Unparsed(text, "not a function call")
    if not calls_name(expr, entry_point):
        return Unparsed(text, f"does not call the entry point '{entry_point}'")
    names = {n.id for n in ast.walk(expr) if isinstance(n, ast.Name)}
    unknown = sorted(names - {entry_point} - BUILTINS)
    if unknown and _unquoted_strings(node, entry_point):
        # "is_happy(abcd) => True": the author dropped the quotes of a string argument.
        args = ", ".join(repr(a.id) for a in node.args if isinstance(a, ast.Name))
        call, style, unknown = f"{entry_point}({args})", "unquoted", []
    if unknown:
        return Unparsed(text, f"the call uses the undefined name '{unknown[0]}'")
    ok, value = read_literal(value_text)
    if not ok:
        return Unparsed(text, "the expected value is not a Python literal")
    return Example(call.strip(), value, style)


def _unquoted_strings(call: ast.Call, entry_point: str) -> bool:
    return (
        isinstance(call.func, ast.Name)
        and call.func.id == entry_point
        and not call.keywords
        and bool(call.args)
        and all(isinstance(a, ast.Name) and a.id not in BUILTINS for a in call.args)
    )


def read_literal(text: str) -> tuple[bool, Any]:
    """The value of ``text``, forgiving prose around it: "16." "24 # sum" "'No' (reason)"."""
    text = text.strip()
    candidates = []
    if text.endswith(".") and not text.endswith(".."):
        candidates.append(text[:-1])  # sentence end: "should return 16." means 16, not 16.0
    candidates.append(text)
    for i, ch in enumerate(text):
        if ch in "#(" and i > 0 and text[i - 1].isspace():
            candidates.append(text[:i])  # a comment or remark after the value
    if "=" in text:
        candidates.append(text.rsplit("=", 1)[1])  # worked arithmetic: "19 - 5 - 6 = 8"
    for candidate in candidates:
        candidate = candidate.strip()
        candidate = _BOOLEANS.get(candidate.lower(), candidate) if candidate else candidate
        try:
            node = parse_expression(candidate).body
        except SyntaxError:
            continue
        ok, value = literal_value(node)
        if ok:
            return True, value
    return False, None
