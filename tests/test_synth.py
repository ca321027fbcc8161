"""Test synthesis for reference-only pool tasks: parsing the teacher's inputs, probing the
reference in the real sandbox, loading such pools, and the loop stage with a scripted teacher."""

from __future__ import annotations

import json
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from persd.config import load_config
from persd.errors import DataError
from persd.llm.base import Teacher, TeacherReply
from persd.pipeline.config import SynthConfig
from persd.pipeline.run import Loop
from persd.pipeline.stages.synth import parse_calls, probe_task
from persd.records import Task
from persd.sandbox import Job, Sandbox, SandboxConfig
from persd.tasks import load_task_pool

REPLY = """Here are some inputs:
```python
f(1)
f(2)  # a comment
assert f(3) == 9
print(f(4))
f(1)
f(x)
g(5)
f(*[1])
result = f(6)
f(
```
"""


def test_parse_calls_keeps_distinct_literal_calls_of_the_entry_point():
    assert parse_calls(REPLY, "f", 10) == ["f(1)", "f(2)", "f(3)", "f(4)", "f(6)"]
    assert parse_calls(REPLY, "f", 2) == ["f(1)", "f(2)"]
    assert parse_calls("f([1, 2], key={'a': (1, None)})", "f", 5) == [
        "f([1, 2], key={'a': (1, None)})"
    ]
    assert parse_calls("no code here", "f", 5) == []


REFERENCE = """
import random

class Box:
    pass

def f(x):
    if x == 'boom':
        raise ValueError('no')
    if x == 'slow':
        while True:
            pass
    if x == 'random':
        return random.random()
    if x == 'object':
        return Box()
    if x == 'big':
        return 'y' * 10000
    if x == 'float':
        return 0.1 + 0.2
    return x * 2
"""


@pytest.fixture(scope="module")
def sandbox():
    with Sandbox(SandboxConfig(workers=4)) as sb:
        yield sb


def _task(reference: str = REFERENCE, entry_point: str = "f") -> Task:
    return Task(
        id="t",
        source="mine",
        instruction="double it",
        prompt="def f(x):\n",
        entry_point=entry_point,
        reference=reference,
    )


def test_probe_keeps_what_the_reference_answers_the_same_twice(sandbox):
    cfg = SynthConfig(max_cpu_s=0.3)
    calls = [
        "f(3)",
        "f('ab')",
        "f('boom')",
        "f('slow')",
        "f('random')",
        "f('object')",
        "f('big')",
        "f('float')",
        "f([1])",
    ]
    made = probe_task(_task(), calls, sandbox, cfg)
    assert [t.call for t in made.tests] == ["f(3)", "f('ab')", "f('float')", "f([1])"]
    assert [t.expected for t in made.tests] == ["6", "'abab'", "0.30000000000000004", "[1, 1]"]
    assert made.tests[2].comparison == "approx"
    assert made.proposed == len(calls)
    assert made.dropped == {
        "the reference raised": 1,
        "slower than max_cpu_s": 1,
        "differs between runs": 1,
        "not plain data": 1,
        "value too large": 1,
    }
    # The kept tests are real tests: the reference passes them, a wrong program does not.
    tests = made.tests
    assert sandbox.run(Job(program=REFERENCE, tests=tests, entry_point="f")).passed
    wrong = "def f(x):\n    return x + x if isinstance(x, int) else x\n"
    fb = sandbox.run(Job(program=wrong, tests=tests, entry_point="f"))
    assert fb.status == "failed" and fb.first_failure.call == "f('ab')"


def test_probe_caps_the_kept_tests(sandbox):
    made = probe_task(_task(), [f"f({i})" for i in range(6)], sandbox, SynthConfig(keep_max=4))
    assert len(made.tests) == 4 and made.proposed == 6


def test_pool_lines_with_only_a_reference_load_without_tests(tmp_path: Path):
    path = tmp_path / "mine.jsonl"
    rows = [
        {"id": "a", "instruction": "double", "entry_point": "f", "reference": REFERENCE},
        {"id": "b", "instruction": "double", "entry_point": "f"},
    ]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    with pytest.raises(DataError, match=r"mine.jsonl:2: 'tests_hidden' is empty .*reference"):
        load_task_pool(path)
    result = load_task_pool(path, strict=False)
    assert [t.id for t in result.tasks] == ["a"] and not result.tasks[0].tests_hidden


class _ScriptedTeacher(Teacher):
    """Answers every test-input request with the same reply (no network, no model)."""

    model_id = "scripted"
    http_requests = 0

    def __init__(self, text: str) -> None:
        self.text, self.asked, self.max_lines = text, 0, set()

    async def chat(self, messages, params):
        self.asked += 1
        self.max_lines.add(params.max_lines)
        self.http_requests += 1
        return [
            TeacherReply(
                text=self.text, model="scripted", tokens_in=10, tokens_out=10, finish_reason="stop"
            )
        ]

    async def aclose(self) -> None:
        pass


def test_loop_synthesises_then_uses_the_tests(tmp_path: Path, monkeypatch):
    pool = tmp_path / "mine.jsonl"
    doubling = "def f(x):\n    return x * 2\n"
    rows = [
        {"id": "double", "instruction": "Double x.", "entry_point": "f", "reference": doubling},
        {
            "id": "explodes",
            "instruction": "Fail.",
            "entry_point": "f",
            "reference": "def f(x):\n    raise ValueError(x)\n",
        },
        {
            "id": "tested",
            "instruction": "Add.",
            "entry_point": "add",
            "tests_seen": ["assert add(1, 2) == 3"],
            "tests_hidden": ["assert add(1, 2) == 3"],
        },
    ]
    pool.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    teacher = _ScriptedTeacher("```python\nf(1)\nf(-2)\nf('a')\nf([0])\n```")

    @asynccontextmanager
    async def fake_open(cfg, *, run_dir):
        yield teacher

    monkeypatch.setattr("persd.llm.teacher.open_teacher", fake_open)
    config = load_config(
        None,
        {
            "pool": {"source": str(pool), "decontaminate": False, "validation": 0},
            "synth": {"seen": 1},
        },
    )
    loop = Loop(config, tmp_path / "run")
    assert {t.id for t in loop.pool.tasks} == {"tested"}  # nothing synthesised yet
    loop.synthesize()
    assert teacher.asked == 2
    # Each reply is read no further than the calls asked for (the opening fence, 10 calls,
    # two spare lines): a teacher listing calls to its token cap is stopped there.
    assert teacher.max_lines == {config.synth.inputs + 3}
    tasks = {t.id: t for t in loop.pool.tasks}
    assert set(tasks) == {"double", "tested"}  # every input made the other reference raise
    double = tasks["double"]
    assert [t.call for t in double.tests_hidden] == ["f(1)", "f(-2)", "f('a')", "f([0])"]
    assert [t.call for t in double.tests_seen] == ["f(1)"]
    assert loop.pool.removed["explodes"] == "too few synthesised tests survived"
    # A rerun (new process, same run dir) asks nothing and probes nothing again.
    again = Loop(config, tmp_path / "run")
    again.synthesize()
    assert teacher.asked == 2
    assert again.pool.tasks == loop.pool.tasks


def test_dry_run_plan_counts_test_input_calls(tmp_path: Path):
    from persd.pipeline.plan import make_plan

    pool = tmp_path / "mine.jsonl"
    rows = [
        {
            "id": f"t{i}",
            "instruction": "Double x.",
            "entry_point": "f",
            "reference": "def f(x):\n    return 2 * x\n",
        }
        for i in range(3)
    ]
    pool.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    config = load_config(
        None, {"pool": {"source": str(pool), "decontaminate": False, "validation": 0}}
    )
    plan = make_plan(Loop(config, tmp_path / "run"))
    assert (plan.tasks, plan.synth_calls, plan.solve_calls, plan.attempts_missing) == (3, 3, 3, 3)
