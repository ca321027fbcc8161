"""Python source persd reads but did not write (benchmark code, model output), parsed without
the compiler's warnings about it.

MBPP's gold code and tests, and a model's programs, hold strings such as ``"\\d+"`` (invalid
escape sequences). Parsing them warns once per string (DeprecationWarning; SyntaxWarning from
Python 3.12, which is shown by default) about code that is not persd's to fix: the quick tests
printed 26 of them, and a run would print them among its progress bars.

``warnings.catch_warnings`` swaps the process-wide filters for the call: a warning another
thread raises at that instant may go unshown, which is all it can cost.
"""

from __future__ import annotations

import ast
import warnings


def parse_module(source: str) -> ast.Module:
    """``ast.parse(source)``, quietly; raises SyntaxError as it does."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SyntaxWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        return ast.parse(source)


def parse_expression(source: str) -> ast.Expression:
    """``ast.parse(source, mode="eval")``, quietly; raises SyntaxError as it does."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SyntaxWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        return ast.parse(source, mode="eval")
