"""``persd pool build`` on a small file in the paper's released format: every gate removes
what it should and counts it, seen and hidden tests are disjoint, and a rerun asks the
teacher nothing. The teacher is scripted (it proposes inputs); the sandbox is real."""

from __future__ import annotations

import json
import re
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from persd.config import load_config
from persd.llm.base import Teacher, TeacherReply
from persd.poolbuild import build_pool
from persd.poolbuild.build import seeded_prefix
from persd.poolbuild.convert import task_from_row
from persd.tasks import load_benchmark, load_task_pool

ROWS = [  # (instruction, signature, body)
    ("Double the number x.", "def double(x):", "    return x * 2"),
    ("Print x.", "def show(x):", "    print(x)"),  # prints instead of returning
    ("Return seven.", "def seven(x):", "    return 7"),  # the same value for every input
    ("Return x as it is.", "def same(x):", "    return x"),  # passes as 'its first argument'
    ("double the number, x!", "def double(x):", "    return x + x"),  # a near-duplicate
    ("Broken.", "def broken(x):", "    return (x"),  # does not parse
    (  # HumanEval/0's words: decontaminated
        "Check if in given list of numbers, are any two numbers closer to each other than "
        "given threshold.",
        "def close(numbers, threshold):",
        "    return any(abs(a - b) < threshold for a in numbers for b in numbers if a is not b)",
    ),
    ("Square x, plus one.", "def square_plus(x):", "    return x * x + 1"),
]


class _Inputs(Teacher):
    """Proposes f(-2) .. f(4) for whatever function the request names."""

    model_id = "scripted"

    def __init__(self) -> None:
        self.asked = 0

    async def chat(self, messages, params):
        self.asked += 1
        self.http_requests += 1
        name = re.search(r"def (\w+)\(", messages[-1].content).group(1)
        calls = "\n".join(f"{name}({i})" for i in range(-2, 5))
        text = f"```python\n{calls}\n```"
        return [TeacherReply(text=text, model="s", tokens_in=5, tokens_out=7, finish_reason="stop")]

    async def aclose(self) -> None:
        return None


def _file(tmp_path: Path) -> Path:
    path = tmp_path / "alpaca.jsonl"
    lines = [
        {
            "finetuning_prompt": f'"""\n{i}\n"""\n\n{s}\n',
            "finetuning_completion": f"\r\n{b}",
            "task_id": n,
        }
        for n, (i, s, b) in enumerate(ROWS)
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in lines))
    return path


def _build(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, teacher: _Inputs):
    @asynccontextmanager
    async def fake_open(cfg, *, run_dir):
        yield teacher

    monkeypatch.setattr("persd.llm.teacher.open_teacher", fake_open)
    config = load_config(None, {"sandbox": {"workers": 2}})
    return build_pool(_file(tmp_path), tmp_path / "built", config, name="alp")


def test_a_row_becomes_a_task_in_humaneval_shape() -> None:
    row = {
        "finetuning_prompt": '"""\nAdd one.\n"""\n\ndef inc(x):\n',
        "finetuning_completion": "\r\n  return x + 1",
    }
    task = task_from_row(row, source="alp", line=3)
    assert task.id == "alp/3" and task.entry_point == "inc" and task.instruction == "Add one."
    assert task.prompt == 'def inc(x):\n    """Add one.\n    """\n'
    assert task.reference == "def inc(x):\n  return x + 1\n"


def test_every_gate_removes_and_counts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    teacher = _Inputs()
    report = _build(tmp_path, monkeypatch, teacher)
    assert report.rows == len(ROWS) and report.tasks_out == 2
    removed = report.removed
    assert removed["the reference does not parse"] == 1
    assert removed["a near-duplicate of an earlier task (merged)"] == 1
    assert removed["overlaps an evaluation benchmark (13-grams)"] == 1
    assert removed["the reference returns None for every input (prints instead of returning?)"] == 1
    assert removed["the reference returns the same value for every input"] == 1
    assert removed["a trivial program (returns its first argument) passes every hidden test"] == 1
    assert teacher.asked == report.teacher_calls == 5  # one per task that reached synthesis
    pool = load_task_pool(tmp_path / "built" / "pool.jsonl").tasks
    assert load_benchmark(str(tmp_path / "built" / "pool.jsonl")) == pool  # persd eval -b <it>
    assert {t.entry_point for t in pool} == {"double", "square_plus"}
    for task in pool:  # seen tests: what feedback may show; never what scores
        seen, hidden = {t.call for t in task.tests_seen}, {t.call for t in task.tests_hidden}
        assert len(seen) == 2 and len(hidden) == 5 and not seen & hidden
    double = next(t for t in pool if t.entry_point == "double")
    assert {t.call: t.expected for t in double.tests_hidden}["double(4)"] == "8"
    # The seen tests, and only they, close the docstring as HumanEval's examples do.
    assert double.prompt == (
        'def double(x):\n    """Double the number x.\n'
        '    >>> double(-2)\n    -4\n    >>> double(-1)\n    -2\n    """\n'
    )


def test_no_examples_keeps_the_papers_prompt(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from persd.poolbuild.gates import Split

    @asynccontextmanager
    async def fake_open(cfg, *, run_dir):
        yield _Inputs()

    monkeypatch.setattr("persd.llm.teacher.open_teacher", fake_open)
    config = load_config(None, {"sandbox": {"workers": 2}})
    report = build_pool(
        _file(tmp_path), tmp_path / "b", config, name="alp", split=Split(examples=False)
    )
    assert not report.examples_in_prompt
    double = next(
        t for t in load_task_pool(tmp_path / "b" / "pool.jsonl").tasks if t.entry_point == "double"
    )
    assert double.prompt == 'def double(x):\n    """Double the number x.\n    """\n'


def test_a_rerun_asks_the_teacher_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = _build(tmp_path, monkeypatch, _Inputs())
    pool = (tmp_path / "built" / "pool.jsonl").read_text()
    again = _Inputs()
    second = _build(tmp_path, monkeypatch, again)
    assert again.asked == 0 and second.teacher_calls_new == 0
    assert (tmp_path / "built" / "pool.jsonl").read_text() == pool
    assert second.removed == first.removed and second.sample == first.sample


def test_show_prints_the_hand_check_sample(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``persd pool show DIR`` prints the build's sample with each test as call == expected;
    an unknown id is one clear line."""
    from typer.testing import CliRunner

    from persd.cli import app

    report = _build(tmp_path, monkeypatch, _Inputs())
    shown = CliRunner().invoke(app, ["pool", "show", str(tmp_path / "built")])
    assert shown.exit_code == 0, shown.output
    for task_id in report.sample:
        assert task_id in shown.output
    assert "double(4) == 8" in shown.output and "square_plus(-2) == 5" in shown.output
    bad = CliRunner().invoke(app, ["pool", "show", str(tmp_path / "built"), "alp/99"])
    assert bad.exit_code != 0 and "no task 'alp/99'" in str(bad.exception)


def test_a_larger_limit_extends_a_smaller_one() -> None:
    """--limit 60 then --limit 300 (same seed): the second build asks only for the new tasks."""
    small, large = seeded_prefix(3248, 60, 0), seeded_prefix(3248, 300, 0)
    assert len(small) == 60 and len(large) == 300 and small < large
    assert seeded_prefix(3248, 60, 1) != small  # the seed picks which
