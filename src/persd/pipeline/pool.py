"""The training task pool: load, refuse evaluation data, decontaminate, hold out the gate's
tasks, subsample; then give reference-only tasks the tests the synth stage made for them.

Below the stages: the run context reads its pool here, and the pool and synth stages fill it."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path

from persd.errors import PersdError
from persd.pipeline.config import PoolConfig, SynthConfig
from persd.records import SynthesizedTests, Task
from persd.tasks import BENCHMARKS, load_benchmark, load_task_pool
from persd.tasks.decontaminate import decontaminate
from persd.tasks.mbpp import MbppShape


class PoolError(PersdError):
    pass


@dataclass
class Pool:
    tasks: tuple[Task, ...]
    notes: list[str] = field(default_factory=list)  # what was removed, and why
    removed: dict[str, str] = field(default_factory=dict)  # task id -> reason
    validation: tuple[Task, ...] = ()  # held out: scores trained models, never trains them


def needs_tests(task: Task) -> bool:
    """A task with a reference and no tests: the synth stage writes its tests."""
    return not task.tests_hidden and not task.tests_seen and bool(task.reference)


def with_tests(task: Task, record: SynthesizedTests, cfg: SynthConfig) -> Task | None:
    """The task with its synthesised tests, or None when too few survived."""
    if len(record.tests) < cfg.min_tests:
        return None
    return task.model_copy(
        update={"tests_seen": record.tests[: cfg.seen], "tests_hidden": record.tests}
    )


def with_synthesized(raw: Pool, made: list[SynthesizedTests], cfg: SynthConfig) -> Pool:
    """The tasks every stage uses: reference-only tasks carry their synthesised tests;
    those not synthesised yet, or with too few surviving tests, are left out."""
    by_task = {r.task_id: r for r in made}
    tasks, removed = [], dict(raw.removed)
    for task in raw.tasks:
        if not needs_tests(task):
            tasks.append(task)
        elif task.id not in by_task:
            removed[task.id] = "tests not synthesised yet"
        elif (ready := with_tests(task, by_task[task.id], cfg)) is None:
            removed[task.id] = "too few synthesised tests survived"
        else:
            tasks.append(ready)
    return Pool(tasks=tuple(tasks), notes=raw.notes, removed=removed, validation=raw.validation)


def load_pool(
    cfg: PoolConfig, *, synthesize: bool = False, mbpp_shape: MbppShape = "docstring"
) -> Pool:
    """The tasks the loop trains on, with a note for everything left out.

    With ``synthesize``, tasks that have a reference and no tests are kept: the synth stage
    gives them tests before anything else uses them.
    """
    tasks: list[Task] = []
    notes: list[str] = []
    removed: dict[str, str] = {}
    for part in (p.strip() for p in cfg.source.split("+")):
        if part.lower() in cfg.decontaminate_against:
            raise PoolError(
                f"pool.source: '{part}' is an evaluation benchmark; training on it would "
                "score the student on its own training data"
            )
        if part.endswith(".jsonl"):
            result = load_task_pool(Path(part), strict=False)
            tasks += result.tasks
            if result.skipped:
                notes.append(f"{part}: skipped {len(result.skipped)} malformed record(s)")
        elif part.lower() in BENCHMARKS:
            tasks += load_benchmark(part, mbpp_shape=mbpp_shape)
        else:
            raise PoolError(
                f"pool.source: '{part}' is neither a benchmark ({', '.join(BENCHMARKS)}) "
                "nor a .jsonl task file"
            )
    usable = []
    for t in tasks:
        if t.tests_seen or (synthesize and needs_tests(t)):
            usable.append(t)
        else:
            removed[t.id] = "no seen test (no feedback possible)"
    if len(usable) < len(tasks):
        notes.append(f"skipped {len(tasks) - len(usable)} task(s) without a seen test")
    if cfg.decontaminate:
        bench = [t for name in cfg.decontaminate_against for t in load_benchmark(name)]
        result = decontaminate(usable, bench, n=cfg.ngram)
        usable = list(result.kept)
        removed.update({k: f"overlaps {v}" for k, v in result.removed.items()})
        notes.append(result.describe())
    usable, validation = _hold_out(usable, cfg, notes)
    if cfg.limit is not None and cfg.limit < len(usable):
        random.Random(cfg.shuffle_seed).shuffle(usable)
        order = {t.id: i for i, t in enumerate(tasks)}
        usable = sorted(usable[: cfg.limit], key=lambda t: order[t.id])
        notes.append(f"using {cfg.limit} of the pool's tasks (pool.limit, seed {cfg.shuffle_seed})")
    if not usable:
        raise PoolError(f"pool.source '{cfg.source}': no usable task left")
    return Pool(tasks=tuple(usable), notes=notes, removed=removed, validation=validation)


def _hold_out(
    tasks: list[Task], cfg: PoolConfig, notes: list[str]
) -> tuple[list[Task], tuple[Task, ...]]:
    """(training candidates, validation tasks): ``cfg.validation`` tasks with hidden tests,
    drawn with their own seed BEFORE ``limit`` samples the rest, so a larger pool never moves
    a task from validation into training."""
    if not cfg.validation:
        return tasks, ()
    scorable = [t for t in tasks if t.tests_hidden]
    if len(scorable) < 2 * cfg.validation:
        raise PoolError(
            f"pool.validation: {cfg.validation} held-out tasks would leave "
            f"{len(tasks) - cfg.validation} to train on; the pool has {len(scorable)} tasks "
            "with hidden tests. Lower pool.validation (0 turns the gate off) or add tasks"
        )
    held = set(random.Random(cfg.validation_seed).sample([t.id for t in scorable], cfg.validation))
    notes.append(
        f"held out {cfg.validation} validation task(s) (pool.validation, seed "
        f"{cfg.validation_seed}): they judge trained models and are never trained on"
    )
    return [t for t in tasks if t.id not in held], tuple(t for t in tasks if t.id in held)
