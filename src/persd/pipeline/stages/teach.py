"""The teach stage: the teacher's direct solution of every task (StanD's and InpD's targets,
and the reference the paper's refinement template shows) and its refinement of every failed
attempt, given the execution feedback (PERsD's targets). How calls are made, stored and
resumed is ``pipeline.teacher_calls``.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Coroutine, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from persd.llm.base import Teacher
from persd.pipeline.config import TeachConfig
from persd.pipeline.programs import execute
from persd.pipeline.stages.execute import failed_attempts
from persd.pipeline.stages.verify import verified_solutions, verify_solutions
from persd.pipeline.teacher_calls import (
    LazyTeacher,
    TeacherRequest,
    ask_teacher,
    extract_teacher,
    with_teacher,
)
from persd.prompts import placeholders, render_chat, render_feedback
from persd.records import Attempt, Execution, Task, TeacherCall

if TYPE_CHECKING:
    from persd.pipeline.context import RunContext
    from persd.sandbox import Sandbox


def solve_requests(tasks: Sequence[Task], cfg: TeachConfig) -> list[TeacherRequest]:
    """One direct-solution request per task (StanD / InpD targets, and the paper's reference)."""
    return [
        TeacherRequest(
            id=f"{task.id}#s0",
            task=task,
            attempt=None,
            messages=render_chat(
                cfg.solve_template, {"task": task.prompt, "entry_point": task.entry_point}
            ),
            seed=cfg.seed,
        )
        for task in tasks
    ]


def refine_requests(
    tasks: Mapping[str, Task],
    failed: Sequence[tuple[Attempt, Execution]],
    references: Mapping[str, str],
    cfg: TeachConfig,
    *,
    feedback_max_chars: int,
) -> tuple[list[TeacherRequest], int]:
    """Requests for every failed attempt; also how many fell back to the one-turn template
    because the task had no reference answer for the paper's two-turn template."""
    out, fallbacks = [], 0
    for attempt, execution in failed:
        task = tasks[attempt.task_id]
        template = cfg.refine_template
        values = {
            "task": task.prompt,
            "entry_point": task.entry_point,
            "code": attempt.code,
            "feedback": render_feedback(execution.feedback, max_chars=feedback_max_chars),
        }
        if "reference" in placeholders(template):
            reference = references.get(task.id) or task.reference
            if reference:
                values["reference"] = reference.strip()
            else:
                template, fallbacks = "teacher_refine_chat", fallbacks + 1
        messages = render_chat(template, values)
        for j in range(cfg.refinements_per_failure):
            out.append(
                TeacherRequest(
                    id=f"{attempt.id}#f{j}",
                    task=task,
                    attempt=attempt,
                    messages=messages,
                    seed=cfg.seed + j,
                )
            )
    return out, fallbacks


def teach(ctx: RunContext) -> None:
    """Solve every task and refine every failed attempt, task by task: each task's solution
    is verified before its refinements are asked, since the paper's refinement template
    shows the verified solution. A finished stage starts no teacher."""
    if not ctx.config.teacher_needed:  # ``self`` rows only: nothing to ask
        return
    cfg = ctx.config.teach
    solve = solve_requests(ctx.pool.tasks, cfg) if cfg.solve else []
    failed = failed_attempts(ctx)
    missing = _missing(ctx, solve, failed)
    if missing:
        asyncio.run(with_teacher(ctx, lambda lazy: _ask_all(ctx, lazy, solve, failed, missing)))
    verify_solutions(ctx)  # those a stopped stage answered but did not verify yet


def _missing(ctx: RunContext, solve: list[TeacherRequest], failed: list) -> int:
    """How many calls the stage still has to make (0: everything is on disk)."""
    per = ctx.config.teach.refinements_per_failure
    refine_ids = {f"{a.id}#f{j}" for a, _ in failed for j in range(per)}
    return len({r.id for r in solve} - ctx.solutions.ids()) + len(
        refine_ids - ctx.refinements.ids()
    )


async def _ask_all(
    ctx: RunContext, lazy: LazyTeacher, solve: list[TeacherRequest], failed: list, missing: int
) -> None:
    """Every task through one of the teacher's lanes, as many as it answers at once.

    A local teacher's lanes are its llama.cpp slots, each pinned: a refinement's chat begins
    with its task's solve chat and the verified answer, and a slot evaluates only what a
    prompt adds after the prefix it shares with its last conversation, so sent right after
    its task's solution on the same slot a refinement skips that prefix (measured in
    docs/BENCHMARKS.md). Any other teacher gets ``concurrency`` unpinned lanes. The calls
    are the same as solving everything first and then refining, in another order."""
    from persd.sandbox import Sandbox

    async with lazy as get_teacher:
        teacher = await get_teacher()
        lanes = [teacher.lane(i) for i in range(teacher.lanes)] or [teacher] * max(
            1, teacher.concurrency
        )
        work = _TaskQueue(ctx, solve, failed, ctx.progress.start("solve+refine", missing))
        with ctx.timer.stage("solve+refine"), Sandbox(ctx.config.sandbox) as sandbox:
            await _together([work.drain(lane, sandbox) for lane in lanes])
    _note_fallbacks(ctx, work.fallbacks)


class _TaskQueue:
    """The tasks left to solve or refine, taken one at a time by each lane.

    The stage files are read once, here: each task's solutions and the verified references
    are then kept in memory as they are asked and verified, so a task costs no re-read of
    the files (a 3,000-task pool would otherwise re-read them 3,000 times)."""

    def __init__(
        self,
        ctx: RunContext,
        solve: list[TeacherRequest],
        failed: list,
        advance: Callable[[int], None],
    ) -> None:
        self.ctx, self.advance, self.fallbacks = ctx, advance, 0
        per = ctx.config.teach.refinements_per_failure
        self.solve_of = {r.task.id: r for r in solve}
        self.failed_of = _by_task(failed)
        self.solutions_of: dict[str, list[TeacherCall]] = {}
        for s in ctx.solutions.read():
            self.solutions_of.setdefault(s.task_id, []).append(s)
        self.references = verified_solutions(ctx)
        solved, refined = ctx.solutions.ids(), ctx.refinements.ids()
        self.queue = deque(
            dict.fromkeys(
                [t for t, r in self.solve_of.items() if r.id not in solved]
                + [
                    t
                    for t, pairs in self.failed_of.items()
                    if any(f"{a.id}#f{j}" not in refined for a, _ in pairs for j in range(per))
                ]
            )
        )
        self.lock = asyncio.Lock()  # one sandbox: one verification at a time

    async def drain(self, teacher: Teacher, sandbox: Sandbox) -> None:
        ctx, cfg = self.ctx, self.ctx.config.teach
        while self.queue:
            task_id = self.queue.popleft()
            if task_id in self.solve_of:
                new = await ask_teacher(
                    [self.solve_of[task_id]], teacher, cfg, ctx.solutions,
                    extract=extract_teacher, on_done=self.advance,
                )  # fmt: skip
                self.solutions_of.setdefault(task_id, []).extend(new)
            await self._verify(task_id, sandbox)
            if task_id not in self.failed_of:
                continue
            requests, fell_back = refine_requests(
                ctx.tasks,
                self.failed_of[task_id],
                self.references,
                cfg,
                feedback_max_chars=ctx.config.prompt.feedback_max_chars,
            )
            self.fallbacks += fell_back
            await ask_teacher(
                requests, teacher, cfg, ctx.refinements, extract=extract_teacher,
                on_done=self.advance,
            )  # fmt: skip

    async def _verify(self, task_id: str, sandbox: Sandbox) -> None:
        """The task's solutions not verified yet, on all of its tests; the first that passes
        becomes the reference its refinements show (``verified_solutions``' rule)."""
        mine = self.solutions_of.get(task_id, [])
        async with self.lock:
            ran = await asyncio.to_thread(
                execute,
                [(s.id, s.task_id, s.code) for s in mine],
                self.ctx.tasks,
                self.ctx.verifications,
                sandbox,
                test_set="all",
            )
        passed = {e.id for e in ran if e.feedback.passed}
        for s in mine:
            if s.id in passed:
                self.references.setdefault(task_id, s.code)


def _by_task(failed: list) -> dict[str, list[tuple[Attempt, Execution]]]:
    out: dict[str, list[tuple[Attempt, Execution]]] = {}
    for attempt, execution in failed:
        out.setdefault(attempt.task_id, []).append((attempt, execution))
    return out


async def _together(lanes: list[Coroutine[Any, Any, None]]) -> None:
    """Run the lanes at once; the first to fail (a budget stop, a dead server) stops the
    others, and its error is raised once they have ended."""
    running = [asyncio.ensure_future(lane) for lane in lanes]
    try:
        done, _ = await asyncio.wait(running, return_when=asyncio.FIRST_EXCEPTION)
        for f in done:
            if f.exception() is not None:
                raise f.exception()  # type: ignore[misc]
    finally:
        for f in running:
            f.cancel()
        await asyncio.gather(*running, return_exceptions=True)


def _note_fallbacks(ctx: RunContext, fallbacks: int) -> None:
    if fallbacks:
        ctx.progress.note(
            f"refine: {fallbacks} task(s) had no verified reference; used the one-turn "
            "template for them"
        )
