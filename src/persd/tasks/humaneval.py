"""HumanEval (164 problems, OpenAI, MIT) as tasks with seen and hidden tests.

Seen tests are the docstring examples that the canonical solution passes; they are extracted
and validated once by ``scripts/build_task_data.py`` and stored in the data file, so loading
runs nothing. The hidden test is the official ``check(candidate)``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from importlib import resources
from typing import Any

from persd.errors import DataError
from persd.records import Task, Test
from persd.tasks.docstring import instruction_text

DATA_FILE = "humaneval.jsonl"
LICENSE = "HumanEval (Chen et al., 2021), (c) OpenAI, MIT licence; seen tests derived by persd"
_FIELDS = ("task_id", "prompt", "canonical_solution", "test", "entry_point", "seen_tests")


def load_humaneval() -> tuple[Task, ...]:
    """All 164 HumanEval tasks, in the benchmark's order."""
    data = resources.files("persd") / "data" / DATA_FILE
    tasks = []
    for number, line in enumerate(data.read_text(encoding="utf-8").splitlines(), start=1):
        if line.strip():
            tasks.append(task_from_row(json.loads(line), path=DATA_FILE, line=number))
    return tuple(tasks)


def task_from_row(row: Mapping[str, Any], *, path: str = DATA_FILE, line: int = 0) -> Task:
    """One data-file row as a Task; raises DataError naming the missing field."""
    for name in _FIELDS:
        if name not in row:
            raise DataError(path, line, name, "is missing")
    prompt, entry_point = row["prompt"], row["entry_point"]
    seen = tuple(Test(kind="call", **t) for t in row["seen_tests"])
    return Task(
        id=row["task_id"],
        source="humaneval",
        instruction=instruction_text(prompt, entry_point),
        prompt=prompt,
        entry_point=entry_point,
        reference=prompt + row["canonical_solution"],
        tests_seen=seen,
        # The official check: METADATA plus ``def check(candidate)``.
        tests_hidden=(Test(kind="check", source=row["test"]),),
        # Helpers the check calls (``poly`` in /32, ``encode_cyclic`` in /38) live in the
        # prompt; the sandbox runs this trusted text in the parent before the check.
        test_context=prompt,
        license=LICENSE,
    )
