"""Split an assertion into what the sample computes and what the trusted parent checks.

``assert set(f(x)) == {1, 2}`` becomes the remote expression ``f(x)`` (evaluated in the
sandbox, returned as plain data) and the trusted expression ``set(_r0) == {1, 2}`` (evaluated
here). A sub-expression is remote when its root name is not something the trusted side has
(builtins, a few modules, the task's trusted helpers): the program's functions, classes and
setup variables. A comprehension or lambda whose only use of such names is calling the
program's functions (``all(f(x) == y for x, y in cases)``) stays here: each call crosses as
plain data, so every comparison is still the trusted side's. Any other comprehension or lambda
that mentions them goes remote whole, since its loop variables live in its own scope.
"""

from __future__ import annotations

import ast
import builtins
import math
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache

from persd.pysource import parse_module
from persd.sandbox.ast_lock import AST_LOCK

TRUSTED_MODULES = {"math": math}
_SCOPED = (ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp, ast.Lambda)
_BUILTIN_NAMES = frozenset(dir(builtins))


@dataclass(frozen=True)
class SplitAssert:
    remote: tuple[str, ...]  # expression sources for the sample, in order
    check: object  # code object of the trusted expression over _r0, _r1, ...
    check_source: str
    calls: frozenset[str] = frozenset()  # the program's functions the check calls itself


def _root(node: ast.AST) -> str | None:
    while isinstance(node, ast.Call | ast.Attribute | ast.Subscript):
        node = node.func if isinstance(node, ast.Call) else node.value
    return node.id if isinstance(node, ast.Name) else None


def _names(node: ast.AST) -> set[str]:
    return {n.id for n in ast.walk(node) if isinstance(n, ast.Name)}


def _bound(node: ast.AST) -> set[str]:
    """Names a comprehension or lambda binds itself (loop targets, parameters, walrus)."""
    names = {n.id for n in ast.walk(node) if isinstance(n, ast.Name) and type(n.ctx) is ast.Store}
    for n in ast.walk(node):
        if isinstance(n, ast.arguments):
            names |= {a.arg for a in n.posonlyargs + n.args + n.kwonlyargs}
            names |= {a.arg for a in (n.vararg, n.kwarg) if a is not None}
    return names


def _called_only(node: ast.AST, trusted: frozenset[str]) -> set[str] | None:
    """The program's names in ``node`` if each is only called with data arguments, else None."""
    free = _names(node) - _bound(node) - trusted
    called = {
        id(n.func)
        for n in ast.walk(node)
        if isinstance(n, ast.Call)
        and isinstance(n.func, ast.Name)
        and n.func.id in free
        and not any(isinstance(a, _SCOPED) for a in ast.walk(n) if a is not n)
    }
    uses = [n for n in ast.walk(node) if isinstance(n, ast.Name) and n.id in free]
    return {n.id for n in uses} if all(id(n) in called for n in uses) else None


class _Splitter(ast.NodeTransformer):
    def __init__(self, trusted: frozenset[str]) -> None:
        self.trusted = trusted
        self.remote: list[str] = []
        self.calls: set[str] = set()

    def _untrusted(self, node: ast.AST) -> bool:
        return any(name not in self.trusted for name in _names(node))

    def visit(self, node: ast.AST) -> ast.AST:
        if not isinstance(node, ast.expr) or not self._untrusted(node):
            return super().visit(node) if not isinstance(node, ast.expr) else node
        if isinstance(node, _SCOPED):
            # Evaluated here when the program's names are only called: an object whose
            # __eq__ is always true must not get to run the comparison in the sample.
            called = _called_only(node, self.trusted)
            if called is not None:
                self.calls |= called
                return node
        root = _root(node)
        is_remote = isinstance(node, _SCOPED) or (
            isinstance(node, ast.Name | ast.Call | ast.Attribute | ast.Subscript)
            and root is not None
            and root not in self.trusted
        )
        if is_remote:
            name = f"_r{len(self.remote)}"
            self.remote.append(ast.unparse(node))
            return ast.copy_location(ast.Name(id=name, ctx=ast.Load()), node)
        return self.generic_visit(node)


@lru_cache(maxsize=4096)
def split_assert(source: str, trusted_names: frozenset[str] = frozenset()) -> SplitAssert:
    """Split one ``assert`` statement; raises SyntaxError/ValueError if it is not one."""
    with AST_LOCK:  # parsed and compiled from the scoring threads: see ast_lock
        return _split(source, trusted_names)


def _split(source: str, trusted_names: frozenset[str]) -> SplitAssert:
    tree = parse_module(source.strip())
    if len(tree.body) != 1 or not isinstance(tree.body[0], ast.Assert):
        raise ValueError(f"not a single assert statement: {source[:80]!r}")
    splitter = _Splitter(_BUILTIN_NAMES | frozenset(TRUSTED_MODULES) | trusted_names)
    expr = splitter.visit(tree.body[0].test)
    expression = ast.Expression(body=expr)
    ast.fix_missing_locations(expression)
    check_source = ast.unparse(expr)
    return SplitAssert(
        remote=tuple(splitter.remote),
        check=compile(expression, "<assert>", "eval", dont_inherit=True),
        check_source=check_source,
        calls=frozenset(splitter.calls),
    )


def trusted_namespace(extra: Iterable[tuple[str, object]] = ()) -> dict[str, object]:
    ns: dict[str, object] = {"__builtins__": builtins, **TRUSTED_MODULES}
    ns.update(extra)
    return ns
