"""The execute stage: every attempt on its task's SEEN tests, in the sandbox; and which
attempts failed them (what the teacher is asked to refine)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from persd.pipeline.programs import run_programs
from persd.records import Attempt, Execution

if TYPE_CHECKING:
    from persd.pipeline.context import RunContext


def execute_attempts(ctx: RunContext) -> None:
    """The execute stage: every attempt on its task's SEEN tests."""
    programs = [(a.id, a.task_id, a.code) for a in ctx.attempts.read() if a.task_id in ctx.tasks]
    run_programs(ctx, "execute", programs, ctx.executions, test_set="seen")


def failed_attempts(ctx: RunContext) -> list[tuple[Attempt, Execution]]:
    """Attempts whose execution failed, with it: what the teacher is asked to refine."""
    return [(a, e) for a, e in ctx.store.records().failed_attempts() if a.task_id in ctx.tasks]
