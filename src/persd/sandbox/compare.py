"""Value comparison in the trusted parent.

Both sides of every comparison are plain data built by the parent itself (the expected value
from ``ast.literal_eval``, the actual value decoded from the child's report), so ``==`` here is
always a builtin type's ``==``: an object whose ``__eq__`` is always true cannot get this far.
"""

from __future__ import annotations

import ast
import functools
import math
from typing import Any

from persd.records import Comparison
from persd.sandbox.ast_lock import AST_LOCK

# Docstring examples print floats rounded for humans; model answers differ in the last bits.
REL_TOL = 1e-6
ABS_TOL = 1e-9


# Parsed under the parent's one AST lock (see ast_lock); cached, since every sample of a task
# is checked against the same tests.
@functools.lru_cache(maxsize=4096)
def _parse(text: str) -> Any:
    with AST_LOCK:
        return ast.literal_eval(text)


def parse_expected(text: str) -> Any:
    """The expected value of a structured test (the repr of a Python literal).

    Cached: callers must not mutate it (the comparisons here only read it)."""
    return _parse(text)


def values_match(expected: Any, actual: Any, comparison: Comparison = "eq") -> bool:
    """Whether ``actual`` equals ``expected`` under ``comparison``."""
    if comparison == "eq":
        return bool(expected == actual)
    return _approx(expected, actual)


def _approx(expected: Any, actual: Any) -> bool:
    if isinstance(expected, bool) or isinstance(actual, bool):
        return expected == actual
    if isinstance(expected, int | float) and isinstance(actual, int | float):
        if isinstance(expected, float) and math.isnan(expected):
            return isinstance(actual, float) and math.isnan(actual)
        return math.isclose(expected, actual, rel_tol=REL_TOL, abs_tol=ABS_TOL)
    if isinstance(expected, complex) and isinstance(actual, complex | int | float):
        return abs(expected - actual) <= max(REL_TOL * abs(expected), ABS_TOL)
    if isinstance(expected, list | tuple):
        return (
            type(actual) is type(expected)
            and len(actual) == len(expected)
            and all(_approx(e, a) for e, a in zip(expected, actual, strict=False))
        )
    if isinstance(expected, dict):
        return (
            type(actual) is dict
            and actual.keys() == expected.keys()
            and all(_approx(v, actual[k]) for k, v in expected.items())
        )
    return bool(expected == actual)
