"""How a stage runs programs: in the sandbox, each (id, task, program) not yet recorded, the
results appended as they arrive, so a killed stage resumes with the programs it lacks."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING

from persd.pipeline.store import StageFile
from persd.records import Execution, Task, TestSet
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
) -> list[Execution]:
    """Run each (id, task_id, program) not yet in ``out``; append results as they arrive.

    Returns the executions it ran (none on a complete rerun).
    """
    done = out.ids()
    todo = [p for p in programs if p[0] not in done]
    if not todo:
        return []
    jobs = [Job.for_task(tasks[task_id], program, test_set) for _, task_id, program in todo]
    ran: list[Execution] = []
    batch: list[Execution] = []
    for i, feedback in sandbox.imap(jobs):
        rid, task_id, _ = todo[i]
        batch.append(Execution(id=rid, task_id=task_id, feedback=feedback))
        if len(batch) >= 32:
            out.append(batch)
            ran += batch
            batch = []
        if on_done:
            on_done(1)
    out.append(batch)
    return ran + batch


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
