"""Build a task pool: convert, merge near-duplicates, decontaminate, synthesise tests, judge.

The build directory holds everything a rerun needs: ``candidates.jsonl`` (the converted
tasks, references only), ``synth/`` (a run directory whose synth stage keeps the teacher's
inputs, the teacher cache and the probed tests, so a killed build resumes and a finished one
reruns in seconds without a teacher call), then ``pool.jsonl`` (the pool a run uses:
``pool.source: <dir>/pool.jsonl``) and ``build.json`` (what each gate removed). The pool is
derived from the user's file and stays where the user builds it; persd never ships one.
"""

from __future__ import annotations

import json
import random
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import BaseModel

from persd.poolbuild.convert import convert
from persd.poolbuild.gates import Split, judge, trivial_jobs
from persd.records import Task, Test

if TYPE_CHECKING:
    from persd.config import RunConfig
    from persd.pipeline.progress import Progress

SAMPLE = 30  # task ids recorded for a hand check of the tests


class BuildReport(BaseModel):
    """What ``build.json`` holds: tasks in and out, and what removed the others."""

    source: str
    rows: int
    tasks_out: int
    removed: dict[str, int]  # reason -> tasks, in the order the rules ran
    tests_seen: int  # per task: what feedback may show
    examples_in_prompt: bool = True  # the seen tests close the prompt's docstring
    tests_hidden_min: int
    tests_hidden_mean: float
    teacher_calls: int  # every test-input call the pool's tasks needed
    teacher_calls_new: int  # made by this invocation (0 on a rerun)
    teacher_tokens_in: int
    teacher_tokens_out: int
    wall_s: float  # this invocation
    sample: list[str]  # seeded task ids for a hand check
    pool: str


def _candidate(task: Task) -> dict:
    return {
        "id": task.id,
        "instruction": task.instruction,
        "entry_point": task.entry_point,
        "prompt": task.prompt,
        "reference": task.reference,
    }


def _spec(test: Test) -> dict:
    return {"call": test.call, "expected": test.expected, "comparison": test.comparison}


def pool_line(task: Task) -> dict:
    """One task of the built pool in the user pool format (docs/TASKS.md)."""
    return _candidate(task) | {
        "tests_seen": [_spec(t) for t in task.tests_seen],
        "tests_hidden": [_spec(t) for t in task.tests_hidden],
    }


def _write_jsonl(path: Path, rows: Sequence[dict]) -> None:
    text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    if not path.exists() or path.read_text(encoding="utf-8") != text:
        path.write_text(text, encoding="utf-8")


def _decontaminated(tasks: list[Task], config: RunConfig, removed: Counter[str]) -> list[Task]:
    from persd.tasks import load_benchmark
    from persd.tasks.decontaminate import decontaminate

    pool = config.pool
    bench = [t for name in pool.decontaminate_against for t in load_benchmark(name)]
    result = decontaminate(tasks, bench, n=pool.ngram)
    if result.removed:
        removed[f"overlaps an evaluation benchmark ({pool.ngram}-grams)"] += len(result.removed)
    return list(result.kept)


def _synthesised(tasks: list[Task], out: Path, config: RunConfig, progress: Progress | None):
    """The synth stage of a run over the candidates: (its stage records, the loop)."""
    from persd.pipeline.run import Loop

    candidates = out / "candidates.jsonl"
    _write_jsonl(candidates, [_candidate(t) for t in tasks])
    pool = config.pool.model_copy(
        update={"source": str(candidates), "decontaminate": False, "validation": 0, "limit": None}
    )
    loop = Loop(config.model_copy(update={"pool": pool}), out / "synth", progress=progress)
    loop.synthesize()
    return {r.task_id: r for r in loop.synth_tests.read()}, loop


def _without_trivial(tasks: list[Task], config: RunConfig, removed: Counter[str]) -> list[Task]:
    """The tasks whose hidden tests reject every trivial program."""
    from persd.sandbox import Sandbox

    jobs = [(task.id, name, job) for task in tasks for name, job in trivial_jobs(task)]
    with Sandbox(config.sandbox) as sandbox:
        feedback = sandbox.run_many([job for _, _, job in jobs])
    passed: dict[str, str] = {}
    for (task_id, name, _), fb in zip(jobs, feedback, strict=True):
        if fb.passed:
            passed.setdefault(task_id, name)
    for name in passed.values():
        removed[f"a trivial program ({name}) passes every hidden test"] += 1
    return [t for t in tasks if t.id not in passed]


def seeded_prefix(n: int, limit: int, seed: int) -> set[int]:
    """``limit`` of ``n`` row indices: the first ``limit`` of one seeded shuffle, so a larger
    ``--limit`` with the same seed extends a smaller one and a build grown in steps reuses
    every teacher call its earlier steps made."""
    order = list(range(n))
    random.Random(seed).shuffle(order)
    return set(order[:limit])


def build_pool(
    source: Path,
    out: Path,
    config: RunConfig,
    *,
    name: str | None = None,
    limit: int | None = None,
    seed: int = 0,
    split: Split | None = None,
    progress: Progress | None = None,
) -> BuildReport:
    """Build ``out/pool.jsonl`` from ``source``; see the module docstring."""
    start = time.monotonic()
    split = split or Split(seen=config.synth.seen)
    converted = convert(source, source=name or source.stem)
    removed: Counter[str] = Counter(converted.dropped)
    tasks = converted.tasks
    if limit is not None and limit < len(tasks):
        keep = seeded_prefix(len(tasks), limit, seed)
        tasks = [t for i, t in enumerate(tasks) if i in keep]
        removed[f"not in the seeded sample of {limit} (--limit, seed {seed})"] += len(
            converted.tasks
        ) - len(tasks)
    out.mkdir(parents=True, exist_ok=True)
    tasks = _decontaminated(tasks, config, removed)
    made, loop = _synthesised(tasks, out, config, progress)
    judged = []
    for task in tasks:
        verdict = judge(task, made.get(task.id), split)
        if isinstance(verdict, str):
            removed[verdict] += 1
        else:
            judged.append(verdict)
    kept = _without_trivial(judged, config, removed) if judged else []
    _write_jsonl(out / "pool.jsonl", [pool_line(t) for t in kept])
    calls = [c for c in loop.synth_calls.read() if c.task_id in {t.id for t in tasks}]
    hidden = [len(t.tests_hidden) for t in kept]
    report = BuildReport(
        source=str(source),
        rows=converted.rows,
        tasks_out=len(kept),
        removed=dict(removed),
        tests_seen=split.seen,
        examples_in_prompt=split.examples,
        tests_hidden_min=min(hidden, default=0),
        tests_hidden_mean=round(sum(hidden) / len(hidden), 2) if hidden else 0.0,
        teacher_calls=len(calls),
        teacher_calls_new=loop.teacher_calls_new,
        teacher_tokens_in=sum(c.tokens_in for c in calls),
        teacher_tokens_out=sum(c.tokens_out for c in calls),
        wall_s=round(time.monotonic() - start, 1),
        sample=sorted(random.Random(seed).sample([t.id for t in kept], min(SAMPLE, len(kept)))),
        pool=str(out / "pool.jsonl"),
    )
    (out / "build.json").write_text(report.model_dump_json(indent=2))
    return report
