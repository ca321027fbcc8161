"""The execute stage: every attempt on its task's SEEN tests (``attempt.judge: all``: on all of
them), in the sandbox; and which attempts failed (what the teacher is asked to refine).

Seen tests are what feedback may show when the student refines at inference. The paper judged
a training attempt on every unit test of its pool task: with few, easy seen tests (a pool
built with ``persd pool build`` shows two, often an empty input) many wrong attempts pass
them and never reach the teacher. Training tasks are never evaluation tasks, so their hidden
tests may judge."""

from __future__ import annotations

from typing import TYPE_CHECKING

from persd.pipeline.programs import run_programs
from persd.records import Attempt, Execution

if TYPE_CHECKING:
    from persd.pipeline.context import RunContext


def execute_attempts(ctx: RunContext) -> None:
    """The execute stage: every attempt on its task's seen tests (or all, ``attempt.judge``)."""
    programs = [(a.id, a.task_id, a.code) for a in ctx.attempts.read() if a.task_id in ctx.tasks]
    run_programs(ctx, "execute", programs, ctx.executions, test_set=ctx.config.attempt.judge)


def failed_attempts(ctx: RunContext) -> list[tuple[Attempt, Execution]]:
    """Attempts whose execution failed, with it: what the teacher is asked to refine."""
    return [(a, e) for a, e in ctx.store.records().failed_attempts() if a.task_id in ctx.tasks]
