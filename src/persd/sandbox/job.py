"""A sandbox job (one program against one test set), and which preloadable modules a program
imports, so a worker can load them before the sample starts."""

from __future__ import annotations

import re
from dataclasses import dataclass

from persd.records import Task, Test, TestSet, all_tests


@dataclass(frozen=True)
class Job:
    """One program against one test set."""

    program: str
    tests: tuple[Test, ...]
    entry_point: str
    test_set: TestSet = "hidden"
    setup_code: str = ""
    test_context: str = ""
    wall_limit_s: float | None = None  # None: the sandbox config's
    cpu_limit_s: float | None = None

    @classmethod
    def for_task(
        cls, task: Task, program: str, test_set: TestSet = "hidden", **limits: float | None
    ) -> Job:
        """Run ``program`` against one of ``task``'s test sets."""
        tests = {"hidden": task.tests_hidden, "seen": task.tests_seen}.get(test_set)
        if tests is None:
            tests = all_tests(task)
        return cls(
            program=program,
            tests=tests,
            entry_point=task.entry_point,
            test_set=test_set,
            setup_code=task.setup_code,
            test_context=task.test_context,
            **limits,
        )


_IMPORT = re.compile(r"^[ \t]*(?:from[ \t]+(\w+)|import[ \t]+([\w., \t]+))", re.M)


def imports_named(source: str, among: frozenset[str]) -> list[str]:
    """The modules in ``among`` that an import statement of ``source`` names (top level).

    A plain scan of the text, never run: a name it misses (an import after a ``;``, or
    ``__import__``) is imported by the sample itself, a name it finds in a string or comment
    only makes the worker load a module of the config's list.
    """
    if "import" not in source:
        return []
    found = []
    for m in _IMPORT.finditer(source):
        parts = [m[1]] if m[1] else [n.split()[0] for n in m[2].split(",") if n.strip()]
        names = [n.split(".")[0] for n in parts]
        found += [n for n in names if n in among and n not in found]
    return found
