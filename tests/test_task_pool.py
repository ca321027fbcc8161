"""Users' task pools: what loads, and the one-line errors users read when it does not."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from persd.errors import DataError
from persd.tasks import load_task_pool

GOOD = {
    "id": "add",
    "instruction": "Add two numbers.",
    "entry_point": "add",
    "tests_seen": ["assert add(1, 2) == 3"],
    "tests_hidden": [
        "assert add(1, 2) == 3",
        {"call": "add(0.1, 0.2)", "expected": "0.3"},
        "def check(candidate):\n    assert candidate(2, 2) == 4\n",
    ],
}


def write_pool(tmp_path: Path, *lines: dict | str) -> Path:
    path = tmp_path / "tasks.jsonl"
    text = "\n".join(line if isinstance(line, str) else json.dumps(line) for line in lines)
    path.write_text(text + "\n", encoding="utf-8")
    return path


def error_of(path: Path) -> str:
    with pytest.raises(DataError) as info:
        load_task_pool(path)
    return str(info.value)


def test_a_good_line_becomes_a_task(tmp_path):
    result = load_task_pool(write_pool(tmp_path, GOOD))
    (task,) = result.tasks
    assert result.skipped == ()
    assert (task.id, task.entry_point, task.source) == ("add", "add", "tasks")
    assert [t.kind for t in task.tests_hidden] == ["call", "call", "check"]
    assert task.tests_hidden[1].comparison == "approx"  # a float: compared approximately
    assert task.tests_seen[0].expected == "3"
    assert "Add two numbers." in task.prompt and "add" in task.prompt


def test_given_prompt_is_kept(tmp_path):
    line = {**GOOD, "prompt": "def add(a, b):\n"}
    (task,) = load_task_pool(write_pool(tmp_path, line)).tasks
    assert task.prompt == "def add(a, b):\n"


def test_missing_entry_point_names_file_line_and_field(tmp_path):
    bad = {k: v for k, v in GOOD.items() if k != "entry_point"}
    path = write_pool(tmp_path, {**GOOD, "id": "ok"}, bad)
    assert error_of(path) == (
        f"{path}:2: 'entry_point' is missing (the name of the function the tests call)"
    )


def test_malformed_json(tmp_path):
    path = write_pool(tmp_path, GOOD, {**GOOD, "id": "b"}, '{"id": "c"')
    assert error_of(path).startswith(f"{path}:3: not valid JSON (")


def test_unknown_field_suggests_the_known_one(tmp_path):
    bad = {**{k: v for k, v in GOOD.items() if k != "entry_point"}, "entrypoint": "add"}
    message = error_of(write_pool(tmp_path, bad))
    assert message.endswith(":1: 'entrypoint' is not a known field; did you mean 'entry_point'?")


def test_duplicate_id(tmp_path):
    message = error_of(write_pool(tmp_path, GOOD, GOOD))
    assert message.endswith(":2: 'id' is 'add', already used by line 1")


def test_test_that_is_not_python(tmp_path):
    bad = {**GOOD, "tests_hidden": ["assert add(1, 2) == 3", "assert add(1,"]}
    message = error_of(write_pool(tmp_path, bad))
    assert ":1: 'tests_hidden[1]' is not valid Python (" in message


def test_structured_test_errors_name_the_sub_field(tmp_path):
    bad = {**GOOD, "tests_seen": [{"call": "add(1, 2)", "expected": "three"}]}
    assert "'tests_seen[0].expected' is not a Python literal" in error_of(write_pool(tmp_path, bad))
    bad = {**GOOD, "tests_seen": [{"call": "sub(1, 2)", "expected": "3"}]}
    message = error_of(write_pool(tmp_path, bad))
    assert "'tests_seen[0].call' does not call the entry point 'add'" in message
    bad = {**GOOD, "tests_seen": [{"call": "add(1, 2)"}]}
    assert "'tests_seen[0].expected' is missing" in error_of(write_pool(tmp_path, bad))


def test_a_hidden_test_is_required(tmp_path):
    message = error_of(write_pool(tmp_path, {**GOOD, "tests_hidden": []}))
    assert message.endswith(
        ":1: 'tests_hidden' is empty (give at least one test, or a reference and no tests "
        "to have tests synthesised)"
    )
    no_hidden = {k: v for k, v in GOOD.items() if k != "tests_hidden"}
    assert "'tests_hidden' is empty (give at least one test" in error_of(
        write_pool(tmp_path, no_hidden)
    )


def test_wrong_type(tmp_path):
    assert ":1: 'id' must be a string (got int)" in error_of(
        write_pool(tmp_path, {**GOOD, "id": 7})
    )


def test_empty_file_is_an_error(tmp_path):
    assert error_of(write_pool(tmp_path, "")).endswith("has no tasks (one JSON object per line)")


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match="cannot be read"):
        load_task_pool(tmp_path / "nope.jsonl")


def test_non_strict_skips_bad_lines_and_says_why(tmp_path):
    path = write_pool(
        tmp_path,
        GOOD,
        "[1, 2]",
        {**GOOD, "id": "two", "entry_point": ""},
        "",
        GOOD,
        {**GOOD, "id": "three"},
    )
    result = load_task_pool(path, strict=False)
    assert [t.id for t in result.tasks] == ["add", "three"]
    assert [s.line for s in result.skipped] == [2, 3, 5]  # the blank line 4 is no record
    assert result.skipped[0].reason == f"{path}:2: not a JSON object (got list)"
    assert result.skipped[1].reason == f"{path}:3: 'entry_point' is empty"
    assert result.skipped[2].reason.endswith("'id' is 'add', already used by line 1")
