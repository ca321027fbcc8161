"""What makes a synthesised task worth keeping, each rule counted in the build's report.

The synth stage already keeps only inputs on which the reference returns the same plain data
twice within its CPU limit. Here the task as a whole is judged: a reference that returns None
everywhere (it prints instead of returning), or the same value for every input, tests
nothing; tests that a trivial program passes reject nothing. Seen and hidden tests are
disjoint: what feedback may show is never what scores.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from persd.poolbuild.convert import with_examples
from persd.records import SynthesizedTests, Task, Test
from persd.sandbox import Job

# Programs any test set must reject: each is written for the task's entry point.
TRIVIAL = {
    "returns None": "def {f}(*args, **kwargs):\n    return None\n",
    "returns its first argument": (
        "def {f}(*args, **kwargs):\n    return args[0] if args else None\n"
    ),
    "does nothing (pass)": "def {f}(*args, **kwargs):\n    pass\n",
}


@dataclass(frozen=True)
class Split:
    """How many of a task's kept tests feedback may show, and how many must score it."""

    seen: int = 2
    min_hidden: int = 3
    examples: bool = True  # the seen tests shown in the prompt's docstring (HumanEval's way)


def judge(task: Task, record: SynthesizedTests | None, split: Split) -> Task | str:
    """The task with disjoint seen and hidden tests, or why it is dropped."""
    if record is None:
        return "no test inputs from the teacher"
    tests = record.tests
    if not tests:
        worst = max(record.dropped.items(), key=lambda kv: kv[1], default=("no input", 0))[0]
        return f"no usable input (most: {worst})"
    values = {t.expected for t in tests}
    if values == {"None"}:
        return "the reference returns None for every input (prints instead of returning?)"
    if len(values) == 1 and len(tests) > 1:
        return "the reference returns the same value for every input"
    if len(tests) < split.seen + split.min_hidden:
        return f"fewer than {split.seen + split.min_hidden} tests survived"
    return with_split(task, tests, split)


def with_split(task: Task, tests: Sequence[Test], split: Split) -> Task:
    seen = tuple(tests[: split.seen])
    prompt = task.prompt
    if split.examples:
        prompt = with_examples(prompt, [(t.call or t.source, t.expected or "") for t in seen])
    return task.model_copy(
        update={"prompt": prompt, "tests_seen": seen, "tests_hidden": tuple(tests[split.seen :])}
    )


def trivial_jobs(task: Task) -> list[tuple[str, Job]]:
    """Each trivial program against the task's hidden tests."""
    return [
        (name, Job.for_task(task, program.format(f=task.entry_point), "hidden"))
        for name, program in TRIVIAL.items()
    ]
