"""The execute and verify stages: run programs in the sandbox and record what happened,
attempts on SEEN tests, teacher code on ALL of a training task's tests."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING

from persd.pipeline.store import StageFile
from persd.records import Attempt, Execution, Task, TestSet
from persd.sandbox import Job, Sandbox

if TYPE_CHECKING:
    from persd.pipeline.context import RunContext


def execute(
    programs: Sequence[tuple[str, str, str]],
    tasks: Mapping[str, Task],
    out: StageFile,
    sandbox: Sandbox,
    *,
    test_set: TestSet,
    on_done: Callable[[int], None] | None = None,
) -> int:
    """Run each (id, task_id, program) not yet in ``out``; append results as they arrive.

    Returns how many programs were run (0 on a complete rerun).
    """
    done = out.ids()
    todo = [p for p in programs if p[0] not in done]
    if not todo:
        return 0
    jobs = [Job.for_task(tasks[task_id], program, test_set) for _, task_id, program in todo]
    batch: list[Execution] = []
    for i, feedback in sandbox.imap(jobs):
        rid, task_id, _ = todo[i]
        batch.append(Execution(id=rid, task_id=task_id, feedback=feedback))
        if len(batch) >= 32:
            out.append(batch)
            batch = []
        if on_done:
            on_done(1)
    out.append(batch)
    return len(todo)


# ---- the stages of a run -------------------------------------------------------------------


def run_programs(
    ctx: RunContext,
    stage: str,
    programs: Sequence[tuple[str, str, str]],
    out: StageFile,
    *,
    test_set: TestSet,
) -> None:
    """Run the programs ``out`` lacks in a sandbox opened for them (none when nothing is
    missing), timed and shown as ``stage``."""
    todo = [p for p in programs if p[0] not in out.ids()]
    if not todo:
        return
    with ctx.timer.stage(stage), Sandbox(ctx.config.sandbox) as sandbox:
        advance = ctx.progress.start(stage, len(todo))
        execute(todo, ctx.tasks, out, sandbox, test_set=test_set, on_done=advance)


def execute_attempts(ctx: RunContext) -> None:
    """The execute stage: every attempt on its task's SEEN tests."""
    programs = [(a.id, a.task_id, a.code) for a in ctx.attempts.read() if a.task_id in ctx.tasks]
    run_programs(ctx, "execute", programs, ctx.executions, test_set="seen")


def failed_attempts(ctx: RunContext) -> list[tuple[Attempt, Execution]]:
    """Attempts whose execution failed, with it: what the teacher is asked to refine."""
    return [(a, e) for a, e in ctx.store.records().failed_attempts() if a.task_id in ctx.tasks]


def verify_solutions(ctx: RunContext) -> None:
    """The teacher's direct solutions on ALL of their task's tests."""
    programs = [(s.id, s.task_id, s.code) for s in ctx.solutions.read() if s.task_id in ctx.tasks]
    run_programs(ctx, "verify", programs, ctx.verifications, test_set="all")


def verified_solutions(ctx: RunContext) -> dict[str, str]:
    """task id -> the first teacher solution that passed all of the task's tests."""
    rec = ctx.store.records()
    out: dict[str, str] = {}
    for s in rec.solutions:
        if rec.passed(s.id):
            out.setdefault(s.task_id, s.code)
    return out


def verify_attempts(ctx: RunContext) -> None:
    """The student's attempts that passed their SEEN tests, on ALL of them: a ``self`` row is
    only a sample that passed every test, as a teacher's row is."""
    rec = ctx.store.records()
    programs = [
        (a.id, a.task_id, a.code)
        for a in rec.attempts
        if a.task_id in ctx.tasks and rec.passed_seen(a.id)
    ]
    run_programs(ctx, "verify", programs, ctx.verifications, test_set="all")


def verify(ctx: RunContext) -> None:
    """The verify stage: solutions, then refinements, on ALL of their task's tests (and the
    passing attempts, when ``self`` rows are built)."""
    programs = [(r.id, r.task_id, r.code) for r in ctx.refinements.read() if r.task_id in ctx.tasks]
    verify_solutions(ctx)
    run_programs(ctx, "verify", programs, ctx.verifications, test_set="all")
    if ctx.config.wants_self:
        verify_attempts(ctx)
