"""Users' own task pools: one JSON object per line, the format documented in docs/TASKS.md.

Every problem is reported with the file, the line and the field. Strict mode (the default)
stops at the first one; otherwise the line is skipped and the reason kept in the result, so a
caller can say "skipped 3 of 200 tasks" and list why. Nothing is dropped silently.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from persd.errors import DataError
from persd.jsonl import json_object
from persd.prompts.files import fill, shipped_text
from persd.records import Comparison, Task, Test
from persd.tasks.asserts import TestSyntaxError, source_to_test, structured_test

# Said after "'<field>' is missing", so the user knows what to put there.
_FIELD_HELP = {
    "id": "a unique name for the task",
    "instruction": "the task in natural language",
    "entry_point": "the name of the function the tests call",
    "tests_hidden": "at least one test that scores the task",
    "call": 'an expression that calls the entry point, e.g. "add(2, 3)"',
    "expected": 'the repr of the value the call must return, e.g. "5"',
}


class _CallSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    call: str
    expected: str
    comparison: Comparison | None = None  # None: approx when the value holds a float


class _Line(BaseModel):
    """The schema of one line; see docs/TASKS.md."""

    model_config = ConfigDict(extra="forbid", strict=True)

    id: str
    instruction: str
    entry_point: str
    prompt: str | None = None
    reference: str | None = None
    setup_code: str = ""
    tests_seen: list[str | _CallSpec] = []
    tests_hidden: list[str | _CallSpec] = []  # may be left out when a reference is given


_KNOWN = tuple(_Line.model_fields) + tuple(_CallSpec.model_fields)


@dataclass(frozen=True)
class Skipped:
    """A line that was not loaded, and why (the same one-line text strict mode raises)."""

    line: int
    reason: str


@dataclass(frozen=True)
class PoolResult:
    """The tasks of a pool file and the lines skipped in non-strict mode."""

    tasks: tuple[Task, ...]
    skipped: tuple[Skipped, ...] = ()


def load_task_pool(path: Path | str, *, strict: bool = True) -> PoolResult:
    """Read a task pool (JSONL); raise DataError on the first bad line unless ``strict=False``."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise DataError(path, None, None, f"cannot be read ({e.strerror})") from None
    tasks: list[Task] = []
    skipped: list[Skipped] = []
    first_line: dict[str, int] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            task = _parse_line(raw, path, number)
            if task.id in first_line:
                used = f"is '{task.id}', already used by line {first_line[task.id]}"
                raise DataError(path, number, "id", used)
        except DataError as e:
            if strict:
                raise
            skipped.append(Skipped(number, str(e)))
            continue
        first_line[task.id] = number
        tasks.append(task)
    if strict and not tasks:
        raise DataError(path, None, None, "has no tasks (one JSON object per line)")
    return PoolResult(tuple(tasks), tuple(skipped))


def _parse_line(raw: str, path: Path, number: int) -> Task:
    data = json_object(raw, path, number)
    try:
        line = _Line.model_validate(data)
    except ValidationError as e:
        field, message = _explain(e)
        raise DataError(path, number, field, message) from None
    return _to_task(line, path, number)


def _explain(error: ValidationError) -> tuple[str | None, str]:
    """The first validation error as (field, message) in the user's words."""
    first = min(error.errors(), key=_rank)
    loc = [part for part in first["loc"] if part not in _UNION_TAGS]
    field = _field_name(loc)
    name = str(loc[-1]) if loc else ""
    if first["type"] == "missing":
        help_ = _FIELD_HELP.get(name)
        return field, "is missing" + (f" ({help_})" if help_ else "")
    if first["type"] == "extra_forbidden":
        close = difflib.get_close_matches(name, _KNOWN, n=1)
        hint = f"; did you mean '{close[0]}'?" if close else f"; known: {', '.join(_KNOWN)}"
        return field, f"is not a known field{hint}"
    got = type(first.get("input")).__name__
    if isinstance(loc[-1] if loc else None, int) or name.startswith("tests_"):
        return field, f"must be a string or an object with 'call' and 'expected' (got {got})"
    if name == "comparison":
        return field, "must be 'eq' or 'approx'"
    return field, f"must be a string (got {got})"


_UNION_TAGS = ("str", "_CallSpec")  # pydantic names a union's branches in the error location


def _rank(error: Any) -> tuple[bool, bool]:
    # An unknown field first: a misspelt name also shows up as "missing", which helps less.
    # For an object given as a test, the object's own error, not "it is not a string".
    not_a_string = "str" in error["loc"] and isinstance(error.get("input"), dict)
    return error["type"] != "extra_forbidden", not_a_string


def _field_name(loc: list[Any]) -> str | None:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or None


def _to_task(line: _Line, path: Path, number: int) -> Task:
    for field in ("id", "instruction", "entry_point"):
        if not getattr(line, field).strip():
            raise DataError(path, number, field, "is empty")
    if not line.entry_point.isidentifier():
        raise DataError(path, number, "entry_point", "is not a Python function name")
    if not line.tests_hidden and (line.tests_seen or not (line.reference or "").strip()):
        raise DataError(
            path,
            number,
            "tests_hidden",
            "is empty (give at least one test, or a reference and no tests to have tests "
            "synthesised)",
        )
    seen = _tests(line.tests_seen, "tests_seen", line.entry_point, path, number)
    hidden = _tests(line.tests_hidden, "tests_hidden", line.entry_point, path, number)
    return Task(
        id=line.id,
        source=path.stem,
        instruction=line.instruction,
        prompt=line.prompt
        if line.prompt is not None
        else default_prompt(line.instruction, line.entry_point),
        entry_point=line.entry_point,
        reference=line.reference,
        tests_seen=seen,
        tests_hidden=hidden,
        setup_code=line.setup_code,
    )


def _tests(
    items: list[str | _CallSpec], field: str, entry_point: str, path: Path, number: int
) -> tuple[Test, ...]:
    tests = []
    for i, item in enumerate(items):
        try:
            if isinstance(item, str):
                tests.append(source_to_test(item, entry_point))
            else:
                tests.append(
                    structured_test(item.call, item.expected, entry_point, item.comparison)
                )
        except TestSyntaxError as e:
            where = f"{field}[{i}]" + (f".{e.part}" if e.part else "")
            raise DataError(path, number, where, str(e)) from None
    return tuple(tests)


def default_prompt(instruction: str, entry_point: str) -> str:
    """The prompt of a task that gives none: its instruction and the function's name."""
    values = {"instruction": instruction.strip(), "entry_point": entry_point}
    return fill(shipped_text("pool_prompt.txt"), values, where="pool_prompt.txt")
