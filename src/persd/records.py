"""Typed records shared by every stage: the one vocabulary of persd.

Records are data plus tiny derived properties. They do no I/O and import no persd module, so
every stage (and the sandbox's trusted parent) can use them without pulling anything else in.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Status = Literal[
    "passed",  # every test ran and passed
    "failed",  # a test ran and its value was wrong
    "error",  # the program or a test call raised
    "syntax_error",  # the program does not compile
    "timeout",  # wall-clock or CPU-time limit hit
    "memory",  # memory limit hit (MemoryError or the kernel refused memory)
    "output_limit",  # wrote more to stdout/stderr than the cap
    "exited_early",  # the process ended before every test ran (sys.exit, os._exit)
    "crashed",  # killed by a signal we did not send (segfault, abort)
    "infra_error",  # the sandbox itself failed; says nothing about the program
]
TestSet = Literal["seen", "hidden", "all"]  # "all": seen + hidden (training tasks only)
TestKind = Literal["call", "assert", "check"]
Comparison = Literal["eq", "approx"]


class Record(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Test(Record):
    """One unit test of a task.

    Three kinds, from most to least structured:

    - ``call``: ``call`` is an expression evaluated against the program (``add(2, 3)``),
      ``expected`` the repr of a Python literal; the trusted parent compares the two with
      ``comparison``. Feedback can say input / expected / actual.
    - ``assert``: ``source`` is one ``assert`` statement. Sub-expressions that need the
      program's names run in the sandbox; the rest of the assertion runs in the trusted parent.
    - ``check``: ``source`` defines ``check(candidate)`` (HumanEval's hidden tests). It runs in
      the trusted parent; every call of ``candidate`` crosses to the sandbox as plain data.
    """

    __test__ = False  # not a pytest class

    kind: TestKind
    source: str
    call: str | None = None
    expected: str | None = None
    comparison: Comparison = "eq"


class Task(Record):
    """A coding task with the tests the student may see and the tests that score it."""

    id: str
    source: str  # "humaneval", "mbpp", or the name of a user's pool
    instruction: str  # natural-language statement of the task
    prompt: str  # what the student completes: signature + docstring (HumanEval style)
    entry_point: str  # the function the tests call
    reference: str | None = None  # a known-good full program, when the source has one
    tests_seen: tuple[Test, ...] = ()
    tests_hidden: tuple[Test, ...] = ()
    setup_code: str = ""  # runs in the sandbox after the program, before tests (MBPP)
    test_context: str = ""  # trusted helpers the tests use, run in the parent (HumanEval)
    split: str | None = None  # e.g. MBPP's "train" / "test" / "validation" / "prompt"
    license: str = ""  # licence and attribution of the task's text and tests


class Outcome(Record):
    """What one test showed."""

    index: int
    passed: bool
    call: str | None = None  # the input: "add(2, 3)" when the test is structured
    expected: str | None = None  # repr, truncated
    actual: str | None = None  # repr, truncated
    exception: str | None = None  # exception type when the call raised
    message: str | None = None
    traceback: str | None = None  # in the candidate's own line numbers
    source: str | None = None  # the failing assertion, for unstructured tests


class Feedback(Record):
    """What one run of one program against one test set showed."""

    status: Status
    test_set: TestSet
    tests_total: int = 0
    outcomes: tuple[Outcome, ...] = ()
    exception: str | None = None  # program-level error (syntax error, error at import time)
    message: str | None = None
    traceback: str | None = None
    detail: str | None = None  # sandbox-level facts: which limit, which signal
    stdout_tail: str = ""
    stderr_tail: str = ""
    wall_s: float = 0.0
    cpu_s: float = 0.0
    peak_memory_mb: float = 0.0

    @property
    def passed(self) -> bool:
        return self.status == "passed"

    @property
    def first_failure(self) -> Outcome | None:
        return next((o for o in self.outcomes if not o.passed), None)

    @property
    def tests_passed(self) -> int:
        return sum(o.passed for o in self.outcomes)


class ScoredSample(Record):
    """One line of ``persd score`` output: a sample and its verdict on the hidden tests."""

    index: int  # line number of the sample in its file, from 0
    task_id: str
    completion: str
    status: Status
    passed: bool
    feedback: Feedback


def all_tests(task: Task) -> tuple[Test, ...]:
    """Seen and hidden tests of a training task, each once (MBPP's seen test is also hidden)."""
    seen_sources = {t.source for t in task.tests_hidden}
    return task.tests_hidden + tuple(t for t in task.tests_seen if t.source not in seen_sources)


# ---- pipeline records: one JSONL per stage, each row keyed by ``id`` -----------------------

Variant = Literal[
    "stand",
    "stand_matched",  # StanD cut to as many rows as PERsD-combined (seeded): equal-size baseline
    "inpd",
    "persd",
    "persd_refine",
    "persd_combined",
    "persd_combined_inpd",
    # Beyond the paper: the student's own samples, scored token by token by a teacher that
    # also sees the sample's execution feedback and a verified solution (persd.train.onpolicy).
    "persd_onpolicy",
    # Beyond the paper, no teacher: the student's own samples that passed all of their task's
    # tests (rejection-sampling self-training, STaR / ReST-EM), and PERsD-combined with them
    # mixed in as replay.
    "self",
    "persd_combined_self",
]


TEACHER_FREE: frozenset[str] = frozenset({"self"})  # variants built without a teacher call
ExampleFormat = Literal["text2code", "refine"]


class Attempt(Record):
    """One program the student wrote for one task."""

    id: str  # "<task_id>#r<round>a<index>": stable across reruns
    task_id: str
    round: int = 0
    index: int = 0
    model_id: str
    prompt: str  # the rendered prompt text (chat prompts: the user message)
    raw: str  # model output as generated
    code: str  # the full program extracted from ``raw``
    tokens_in: int = 0
    tokens_out: int = 0
    sampling: dict[str, Any] = {}


class Execution(Record):
    """A program run against a task's tests: attempts on seen tests, teacher code on all."""

    id: str  # the id of the attempt / solution / refinement that was run
    task_id: str
    feedback: Feedback


class TeacherCall(Record):
    """One teacher answer: a direct solution (``attempt_id`` None) or a refinement."""

    id: str  # "<task_id>#s<j>" for solutions, "<attempt_id>#f<j>" for refinements
    task_id: str
    attempt_id: str | None = None
    model_id: str
    messages: tuple[dict[str, str], ...]
    raw: str
    code: str
    tokens_in: int = 0
    tokens_out: int = 0
    cost_usd: float = 0.0
    latency_s: float = 0.0
    cached: bool = False
    cache_key: str = ""


class Example(Record):
    """One training row: loadable with ``datasets.load_dataset("json")``."""

    id: str
    variant: str  # a Variant, or "<variant>_nofilter" for the unverified ablation sets
    format: ExampleFormat
    prompt: str
    completion: str
    task_id: str
    attempt_id: str | None = None  # lineage: which failed attempt ...
    teacher_id: str | None = None  # ... and which teacher answer this row came from
    verified: bool = True  # the exact training program passed all the task's tests
    # persd_onpolicy only: the teacher's user turn (the prompt plus privileged context: the
    # sample's execution feedback, a verified solution). The completion is then the student's
    # own sample, learnt from the teacher's per-token distribution rather than imitated.
    # Left out of the JSON when unset: the paper's rows serialise as they always did.
    teacher_prompt: str | None = Field(None, exclude_if=lambda v: v is None)


class SynthesizedTests(Record):
    """Tests made for a task that had only a reference: teacher inputs, reference outputs."""

    id: str  # the task id
    task_id: str
    tests: tuple[Test, ...]  # kept, in the teacher's order
    proposed: int  # distinct well-formed calls the teacher proposed
    dropped: dict[str, int] = {}  # reason -> inputs dropped for it
