"""The verify stage: teacher code (solutions, refinements) on ALL of a training task's tests,
and the student's attempts that passed their seen tests, when ``self`` rows are built. A
row of training data is only ever a program that passed every test of its task."""

from __future__ import annotations

from typing import TYPE_CHECKING

from persd.pipeline.programs import run_programs

if TYPE_CHECKING:
    from persd.pipeline.context import RunContext


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
