"""The ``self`` variant: the student's own samples that pass ALL of their task's tests, with
no teacher call (rejection-sampling self-training), and PERsD-combined with them as replay.

The first test pins the row rules on hand-made records; the second runs the real stages
(sandbox included) of a run whose teacher does not exist: a self-only run never asks it."""

from __future__ import annotations

import json
from pathlib import Path

from persd.config import load_config
from persd.pipeline.run import Loop
from persd.pipeline.stages.build import build_datasets
from persd.records import Attempt, Example, Execution, Task, TeacherCall, Test
from records_for_tests import feedback


def _call(call: str, expected: str) -> Test:
    return Test(kind="call", source=f"assert {call} == {expected}", call=call, expected=expected)


ADD = Task(
    id="T/1",
    source="user",
    instruction="Add two numbers.",
    prompt='def add(a, b):\n    """Add two numbers."""\n',
    entry_point="add",
    tests_seen=(_call("add(1, 2)", "3"),),
    tests_hidden=(_call("add(1, 2)", "3"), _call("add(5, 5)", "10")),
)


def _attempt(index: int, code: str, *, tokens_out: int = 20) -> Attempt:
    return Attempt(
        id=f"T/1#r0a{index}",
        task_id="T/1",
        index=index,
        model_id="student",
        prompt="p",
        raw=f"```python\n{code}\n```",
        code=code,
        tokens_out=tokens_out,
        sampling={"max_new_tokens": 64},
    )


def test_self_rows_are_distinct_fully_verified_complete_samples():
    right = "def add(a, b):\n    return a + b"
    attempts = [
        _attempt(0, right),
        _attempt(1, "def add(a, b):\n    # the same program, other comments\n    return a + b"),
        _attempt(2, "def add(a, b):\n    return 3"),  # passes the seen test only
        _attempt(3, "def add(x, y):\n    return y + x", tokens_out=64),  # cut at the cap
        _attempt(4, "def add(x, y):\n    return sum((x, y))"),
        _attempt(5, "def add(a, b):\n    return b + a"),  # past the per-task cap
    ]
    everything = {
        a.id: Execution(id=a.id, task_id="T/1", feedback=feedback(True)) for a in attempts
    }
    everything["T/1#r0a2"] = Execution(id="T/1#r0a2", task_id="T/1", feedback=feedback(False))
    # A PERsD row, so the replay mix has both kinds.
    fix = TeacherCall(
        id="T/1#r0a2#f0", task_id="T/1", attempt_id="T/1#r0a2", model_id="teacher",
        messages=[], raw="", code=right,
    )  # fmt: skip
    verified = {**everything, fix.id: Execution(id=fix.id, task_id="T/1", feedback=feedback(True))}
    built = build_datasets(
        [ADD], attempts, everything, [], [fix], verified,
        variants=["self", "persd_combined_self"], chat=True,
        student_prompt=lambda t: t.prompt, self_per_task=2,
    )  # fmt: skip
    rows = built.rows["self"]
    assert [r.attempt_id for r in rows] == ["T/1#r0a0", "T/1#r0a4"]
    assert rows[0].completion == attempts[0].raw  # the student's own reply, as written
    assert rows[0].prompt == ADD.prompt and rows[0].teacher_id is None
    assert built.skipped["self: passing sample cut at max_new_tokens"] == 1
    assert built.skipped["self: a duplicate, or past data.self_per_task"] == 2
    mixed = built.rows["persd_combined_self"]
    ids = [r.id for r in mixed]
    assert len(set(ids)) == len(ids) == 4  # PERsD text2code + refine, and the two self rows
    assert {r.variant for r in mixed} == {"persd_combined_self"}
    assert sum(r.teacher_id is None for r in mixed) == 2


def test_a_self_only_run_verifies_passing_attempts_and_never_asks_the_teacher(tmp_path: Path):
    pool = tmp_path / "pool.jsonl"
    line = {  # the user pool format (docs/TASKS.md) of ADD
        "id": ADD.id, "instruction": ADD.instruction, "entry_point": "add", "prompt": ADD.prompt,
        "tests_seen": [{"call": "add(1, 2)", "expected": "3"}],
        "tests_hidden": [
            {"call": "add(1, 2)", "expected": "3"}, {"call": "add(5, 5)", "expected": "10"},
        ],
    }  # fmt: skip
    pool.write_text(json.dumps(line) + "\n")
    cfg = load_config(
        None,
        {
            "pool": {"source": str(pool), "decontaminate": False, "validation": 0},
            # Nothing listens there: any teacher call would fail the run.
            "teacher": {"base_url": "http://127.0.0.1:9/v1", "api_key_env": None},
            "data": {"variants": ["self"]},
            "train": {"variants": ["self"]},
        },
    )
    assert not cfg.teacher_needed and cfg.wants_self
    loop = Loop(cfg, tmp_path / "run")
    samples = [
        _attempt(0, "def add(a, b):\n    return a + b"),
        _attempt(1, "def add(a, b):\n    return 3"),  # right on the seen test only
        _attempt(2, "def add(a, b):\n    return a - b"),
    ]
    loop.attempts.append(samples)
    loop.execute()
    loop.teach()
    loop.verify()
    rows = loop.build(0)["self"]
    assert [r.attempt_id for r in rows] == ["T/1#r0a0"]
    verified = {v.id: v.feedback for v in loop.verifications.read()}
    assert set(verified) == {"T/1#r0a0", "T/1#r0a1"}  # the two that passed the seen test
    assert verified["T/1#r0a0"].passed and not verified["T/1#r0a1"].passed
    assert verified["T/1#r0a1"].test_set == "all"
    assert not loop.solutions.ids() and not loop.refinements.ids()
    on_disk = [json.loads(x) for x in (loop.paths.data(0) / "self.jsonl").read_text().splitlines()]
    assert [Example.model_validate(r).id for r in on_disk] == ["self:T/1#r0a0"]
    # The whole loop over the same directory: nothing left to sample or ask, a summary.
    summary = loop.run(train=False, evaluate=False)
    assert summary.examples == {"self": 1} and summary.teacher_calls_new == 0
    assert summary.eval_backend is None and summary.floor_note() is None


def test_self_rows_can_leave_out_the_tasks_the_student_always_solves():
    """``data.self_max_pass_rate``: a task whose samples all passed gives no row (its rows are
    answers the student already gives); a task solved only sometimes keeps its rows."""
    sub = ADD.model_copy(update={"id": "T/2"})
    right, wrong = "def add(a, b):\n    return a + b", "def add(a, b):\n    return a - b"
    attempts = [_attempt(0, right), _attempt(1, "def add(x, y):\n    return y + x")]
    attempts += [
        a.model_copy(update={"id": f"T/2#r0a{i}", "task_id": "T/2"})
        for i, a in enumerate([_attempt(0, right), _attempt(1, wrong)])
    ]
    fb = {a.id: feedback(a.code != wrong) for a in attempts}
    runs = {i: Execution(id=i, task_id=i.split("#")[0], feedback=f) for i, f in fb.items()}

    def rows(rate: float) -> list[str]:
        built = build_datasets(
            [ADD, sub], attempts, runs, [], [], runs, variants=["self"], chat=True,
            student_prompt=lambda t: t.prompt, self_max_pass_rate=rate,
        )  # fmt: skip
        return [r.attempt_id for r in built.rows["self"]]

    assert rows(1.0) == ["T/1#r0a0", "T/1#r0a1", "T/2#r0a0"]
    assert rows(0.5) == ["T/2#r0a0"]  # T/1 passed 2 of 2, T/2 1 of 2
