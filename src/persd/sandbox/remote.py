"""Split an assertion into what the sample computes and what the trusted parent checks.

``assert set(f(x)) == {1, 2}`` becomes the remote expression ``f(x)`` (evaluated in the
sandbox, returned as plain data) and the trusted expression ``set(_r0) == {1, 2}`` (evaluated
here). A sub-expression is remote when its root name is not something the trusted side has
(builtins, a few modules, the task's trusted helpers): the program's functions, classes and
setup variables. Comprehensions and lambdas that mention such names go remote whole, since
their loop variables live in their own scope.
"""

from __future__ import annotations

import ast
import builtins
import math
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache

TRUSTED_MODULES = {"math": math}
_SCOPED = (ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp, ast.Lambda)
_BUILTIN_NAMES = frozenset(dir(builtins))


@dataclass(frozen=True)
class SplitAssert:
    remote: tuple[str, ...]  # expression sources for the sample, in order
    check: object  # code object of the trusted expression over _r0, _r1, ...
    check_source: str


def _root(node: ast.AST) -> str | None:
    while isinstance(node, ast.Call | ast.Attribute | ast.Subscript):
        node = node.func if isinstance(node, ast.Call) else node.value
    return node.id if isinstance(node, ast.Name) else None


def _names(node: ast.AST) -> set[str]:
    return {n.id for n in ast.walk(node) if isinstance(n, ast.Name)}


class _Splitter(ast.NodeTransformer):
    def __init__(self, trusted: frozenset[str]) -> None:
        self.trusted = trusted
        self.remote: list[str] = []

    def _untrusted(self, node: ast.AST) -> bool:
        return any(name not in self.trusted for name in _names(node))

    def visit(self, node: ast.AST) -> ast.AST:
        if not isinstance(node, ast.expr) or not self._untrusted(node):
            return super().visit(node) if not isinstance(node, ast.expr) else node
        root = _root(node)
        is_remote = isinstance(node, _SCOPED) or (
            isinstance(node, ast.Name | ast.Call | ast.Attribute | ast.Subscript)
            and root is not None
            and root not in self.trusted
        )
        if is_remote:
            name = "_r%d" % len(self.remote)
            self.remote.append(ast.unparse(node))
            return ast.copy_location(ast.Name(id=name, ctx=ast.Load()), node)
        return self.generic_visit(node)


@lru_cache(maxsize=4096)
def split_assert(source: str, trusted_names: frozenset[str] = frozenset()) -> SplitAssert:
    """Split one ``assert`` statement; raises SyntaxError/ValueError if it is not one."""
    tree = ast.parse(source.strip())
    if len(tree.body) != 1 or not isinstance(tree.body[0], ast.Assert):
        raise ValueError("not a single assert statement: %r" % source[:80])
    splitter = _Splitter(_BUILTIN_NAMES | frozenset(TRUSTED_MODULES) | trusted_names)
    expr = splitter.visit(tree.body[0].test)
    expression = ast.Expression(body=expr)
    ast.fix_missing_locations(expression)
    check_source = ast.unparse(expr)
    return SplitAssert(
        remote=tuple(splitter.remote),
        check=compile(expression, "<assert>", "eval"),
        check_source=check_source,
    )


def trusted_namespace(extra: Iterable[tuple[str, object]] = ()) -> dict[str, object]:
    ns: dict[str, object] = {"__builtins__": builtins, **TRUSTED_MODULES}
    ns.update(extra)
    return ns
