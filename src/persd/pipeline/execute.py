"""Run programs in the sandbox and record what happened: attempts on SEEN tests, teacher code
on ALL of a training task's tests."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from persd.pipeline.store import StageFile
from persd.records import Execution, Task, TestSet
from persd.sandbox import Job, Sandbox


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
