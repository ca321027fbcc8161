"""``attempt.judge``: which of a training task's tests decide that an attempt failed.

With ``seen`` (the default) a wrong attempt that passes the seen tests never reaches the
teacher; with ``all`` (the paper's rule) every test of the pool task judges it, and the
feedback the teacher is given names the hidden test it failed. Real stages and sandbox; the
teacher is never asked (execute only)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from persd.config import load_config
from persd.pipeline.run import Loop
from persd.pipeline.stages.execute import failed_attempts
from persd.records import Attempt

POOL_ROW = {  # the user pool format (docs/TASKS.md)
    "id": "T/1", "instruction": "Add two numbers.", "entry_point": "add",
    "prompt": 'def add(a, b):\n    """Add two numbers."""\n',
    "tests_seen": [{"call": "add(1, 2)", "expected": "3"}],
    "tests_hidden": [
        {"call": "add(1, 2)", "expected": "3"}, {"call": "add(5, 5)", "expected": "10"},
    ],
}  # fmt: skip
PROGRAMS = {
    0: "def add(a, b):\n    return a + b",  # right
    1: "def add(a, b):\n    return 3",  # right on the seen test only
    2: "def add(a, b):\n    return a - b",  # wrong everywhere
}


def _loop(tmp_path: Path, judge: str | None) -> Loop:
    pool = tmp_path / "pool.jsonl"
    pool.write_text(json.dumps(POOL_ROW) + "\n")
    overrides = {
        "pool": {"source": str(pool), "decontaminate": False, "validation": 0},
        "teacher": {"base_url": "http://127.0.0.1:9/v1", "api_key_env": None},
    }
    if judge is not None:
        overrides["attempt"] = {"judge": judge}
    loop = Loop(load_config(None, overrides), tmp_path / "run")
    loop.attempts.append(
        [
            Attempt(
                id=f"T/1#r0a{i}",
                task_id="T/1",
                index=i,
                model_id="student",
                prompt="p",
                raw=f"```python\n{code}\n```",
                code=code,
                tokens_out=9,
                sampling={"max_new_tokens": 64},
            )  # fmt: skip
            for i, code in PROGRAMS.items()
        ]
    )
    loop.execute()
    return loop


@pytest.mark.parametrize(
    ("judge", "failed", "test_set"),
    [(None, ["T/1#r0a2"], "seen"), ("all", ["T/1#r0a1", "T/1#r0a2"], "all")],
)
def test_the_judged_tests_decide_which_attempts_the_teacher_sees(tmp_path, judge, failed, test_set):
    loop = _loop(tmp_path, judge)
    got = failed_attempts(loop)
    assert [a.id for a, _ in got] == failed
    assert {e.feedback.test_set for _, e in got} == {test_set}
    if judge == "all":  # the feedback names the hidden test the attempt got wrong
        (outcome,) = [o for o in got[0][1].feedback.outcomes if not o.passed]
        assert outcome.call == "add(5, 5)" and outcome.actual == "3"
    summary = loop.summary()
    assert summary.attempts_judged_on == test_set
    assert summary.attempts_passed == 3 - len(failed)


def test_a_run_directory_refuses_another_judge(tmp_path: Path):
    """Executions made under one rule are not silently reused under the other."""
    _loop(tmp_path, None)
    with pytest.raises(Exception, match="attempt.judge"):
        _loop(tmp_path, "all")
