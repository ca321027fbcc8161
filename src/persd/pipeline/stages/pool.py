"""The pool stage: the tasks a run trains on and the tasks that judge it, read once.

Loading, decontamination, the gate's hold-out and the subsample are ``pipeline.pool``; the
run context keeps the result, so every later stage (and a resumed run) sees the same tasks.
This stage loads it first, so what was left out, and why, is said before any model runs."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from persd.pipeline.context import RunContext
    from persd.pipeline.pool import Pool


def load(ctx: RunContext) -> Pool:
    """The raw pool (reference-only tasks still without tests; the synth stage gives them
    theirs), its notes shown as it loads."""
    pool = ctx.raw_pool
    ctx.progress.note(
        f"pool: {len(pool.tasks)} task(s), {len(pool.validation)} held out for the gate, "
        f"{len(pool.removed)} left out"
    )
    return pool
