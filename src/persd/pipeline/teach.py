"""Teacher stages: direct solutions for every task, refinements of every failed attempt.

Calls run concurrently (the teacher client bounds them) and each answer is appended to its
stage file the moment it arrives; the client has already cached the response, so a crash
between the two costs nothing on rerun. A budget stop ends the stage cleanly with everything
received so far on disk.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from persd.llm.base import Message, SamplingParams, Teacher
from persd.pipeline.config import TeachConfig
from persd.pipeline.execute import failed_attempts, verified_solutions, verify_solutions
from persd.pipeline.store import StageFile
from persd.prompts import placeholders, render_chat, render_feedback
from persd.records import Attempt, Execution, Task, TeacherCall

if TYPE_CHECKING:
    from persd.config import RunConfig
    from persd.pipeline.context import RunContext

log = logging.getLogger(__name__)
Extract = Callable[[str, Task], str]


@dataclass(frozen=True)
class TeacherRequest:
    """One teacher call to make: its record id, the task (and attempt) it is about, the chat."""

    id: str
    task: Task
    attempt: Attempt | None
    messages: tuple[Message, ...]
    seed: int


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


async def ask_teacher(
    requests: Sequence[TeacherRequest],
    teacher: Teacher,
    cfg: TeachConfig,
    out: StageFile,
    *,
    extract: Extract,
    on_done: Callable[[int], None] | None = None,
) -> int:
    """Send every request not already answered in ``out``; returns how many were sent."""
    done = out.ids()
    todo = [r for r in requests if r.id not in done]
    if not todo:
        return 0

    async def one(req: TeacherRequest) -> TeacherCall:
        params = SamplingParams(
            n=1,
            temperature=cfg.temperature,
            top_p=cfg.top_p,
            max_new_tokens=cfg.max_new_tokens,
            seed=req.seed,
        )
        reply = (await teacher.chat(req.messages, params))[0]
        return TeacherCall(
            id=req.id,
            task_id=req.task.id,
            attempt_id=req.attempt.id if req.attempt else None,
            model_id=reply.model,
            messages=tuple(m.model_dump() for m in req.messages),
            raw=reply.text,
            code=extract(reply.text, req.task),
            tokens_in=reply.tokens_in,
            tokens_out=reply.tokens_out,
            cost_usd=reply.cost_usd,
            latency_s=reply.latency_s,
            cached=reply.cached,
            cache_key=reply.cache_key,
        )

    pending = {asyncio.ensure_future(one(r)) for r in todo}
    try:
        while pending:
            finished, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            calls = [f.result() for f in finished if f.exception() is None]
            out.append(calls)  # before raising: answers that arrived are kept
            if on_done:
                on_done(len(calls))
            errors = [f.exception() for f in finished if f.exception() is not None]
            if errors:
                raise errors[0]  # budget stop, unreachable server: the first one explains
    finally:
        for f in pending:
            f.cancel()
        if pending:
            results = await asyncio.gather(*pending, return_exceptions=True)
            out.append([r for r in results if isinstance(r, TeacherCall)])
    return len(todo)


# ---- the teach stage of a run ----------------------------------------------------------------


def extract_teacher(text: str, task: Task) -> str:
    """The program of a teacher's chat reply (the answer format evaluation extracts)."""
    from persd.llm.extract import extract_program

    return extract_program(text, prompt=task.prompt, entry_point=task.entry_point, chat=True)


def teach(ctx: RunContext) -> None:
    """Solve every task, verify the solutions, then refine every failed attempt."""
    if not ctx.config.teacher_needed:  # ``self`` rows only: nothing to ask
        return
    cfg = ctx.config.teach
    solve = solve_requests(ctx.pool.tasks, cfg) if cfg.solve else []
    need_solve = [r for r in solve if r.id not in ctx.solutions.ids()]
    failed = failed_attempts(ctx)
    if not need_solve and not failed:
        verify_solutions(ctx)
        return
    asyncio.run(with_teacher(ctx, lambda lazy: _solve_and_refine(ctx, lazy, solve, failed)))


async def with_teacher(ctx: RunContext, work: Callable[[LazyTeacher], Awaitable[None]]) -> None:
    """Run ``work`` with a teacher opened on first use; count the HTTP calls it made."""
    from persd.llm.teacher import open_teacher

    lazy = LazyTeacher(open_teacher, ctx.config, ctx.store.root)
    try:
        await work(lazy)
    finally:
        ctx.teacher_calls_new += lazy.http_requests


async def ask(
    ctx: RunContext,
    stage: str,
    get_teacher: Callable[[], Awaitable[Teacher]],
    requests: Sequence[TeacherRequest],
    params: TeachConfig,
    store: StageFile,
    extract: Extract,
    *,
    label: str | None = None,
) -> None:
    """One timed, progress-reporting round of teacher calls, stored as they arrive."""
    with ctx.timer.stage(stage):
        advance = ctx.progress.start(label or stage, len(requests))
        await ask_teacher(
            requests, await get_teacher(), params, store, extract=extract, on_done=advance
        )


async def _solve_and_refine(
    ctx: RunContext, lazy: LazyTeacher, solve: list[TeacherRequest], failed: list
) -> None:
    cfg = ctx.config.teach
    # Refinement requests depend on verified solutions (the paper template's reference),
    # so solutions are checked first; if nothing is left to ask, no server is started.
    async with lazy as get_teacher:
        if any(r.id not in ctx.solutions.ids() for r in solve):
            teacher = await get_teacher()
            if getattr(teacher, "lanes", 0):
                await _task_by_task(ctx, teacher, solve, failed)
                return
            await ask(ctx, "solve", get_teacher, solve, cfg, ctx.solutions, extract_teacher)
        await asyncio.to_thread(verify_solutions, ctx)
        requests, fallbacks = refine_requests(
            ctx.tasks,
            failed,
            verified_solutions(ctx),
            cfg,
            feedback_max_chars=ctx.config.prompt.feedback_max_chars,
        )
        _note_fallbacks(ctx, fallbacks)
        todo = [r for r in requests if r.id not in ctx.refinements.ids()]
        if todo:
            await ask(ctx, "refine", get_teacher, todo, cfg, ctx.refinements, extract_teacher)


async def _task_by_task(
    ctx: RunContext, teacher: Any, solve: list[TeacherRequest], failed: list
) -> None:
    """Solve, verify and refine one task at a time on each slot of a local teacher.

    The same requests as solving every task and then refining every failure, in another
    order: a refinement's chat begins with its task's solve chat and the verified answer,
    and a llama.cpp slot evaluates only what a prompt adds after the prefix it shares with
    the slot's last conversation. Sent right after its task's solution, on the same slot, a
    refinement skips that prefix (measured in docs/BENCHMARKS.md); sent after every other
    solution, it shares only the template's first line with what the slot holds."""
    from persd.pipeline.execute import execute
    from persd.sandbox import Sandbox

    cfg = ctx.config.teach
    solve_of = {r.task.id: r for r in solve}
    failed_of = _by_task(failed)
    queue = deque(dict.fromkeys([*solve_of, *failed_of]))
    refine_ids = {
        f"{a.id}#f{j}" for a, _ in failed for j in range(cfg.refinements_per_failure)
    } - ctx.refinements.ids()
    advance = ctx.progress.start(
        "solve+refine", sum(r.id not in ctx.solutions.ids() for r in solve) + len(refine_ids)
    )
    lock = asyncio.Lock()  # one verification at a time: short, and one sandbox
    fallbacks = 0

    async def lane(index: int, sandbox: Sandbox) -> None:
        nonlocal fallbacks
        pinned = teacher.lane(index)
        while queue:
            task_id = queue.popleft()
            if task_id in solve_of:
                await ask_teacher(
                    [solve_of[task_id]], pinned, cfg, ctx.solutions,
                    extract=extract_teacher, on_done=advance,
                )  # fmt: skip
            mine = [(s.id, s.task_id, s.code) for s in ctx.solutions.read() if s.task_id == task_id]
            async with lock:  # no record is read while the sandbox thread appends one
                await asyncio.to_thread(
                    execute, mine, ctx.tasks, ctx.verifications, sandbox, test_set="all"
                )
                references = verified_solutions(ctx) if task_id in failed_of else {}
            if task_id not in failed_of:
                continue
            cap = ctx.config.prompt.feedback_max_chars
            requests, fell_back = refine_requests(
                ctx.tasks, failed_of[task_id], references, cfg, feedback_max_chars=cap
            )
            fallbacks += fell_back
            await ask_teacher(
                requests, pinned, cfg, ctx.refinements, extract=extract_teacher, on_done=advance
            )

    with ctx.timer.stage("solve+refine"), Sandbox(ctx.config.sandbox) as sandbox:
        await _together([lane(i, sandbox) for i in range(teacher.lanes)])
    _note_fallbacks(ctx, fallbacks)


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


class LazyTeacher:
    """Open the teacher (and start its server) only when a request actually needs it."""

    def __init__(self, opener: Callable, config: RunConfig, run_dir: Path) -> None:
        self._opener, self._config, self._run_dir = opener, config, run_dir
        self._cm = None
        self._teacher: Teacher | None = None

    async def __aenter__(self) -> Callable[[], Awaitable[Teacher]]:
        async def get() -> Teacher:
            if self._teacher is None:
                self._cm = self._opener(self._config.teacher, run_dir=self._run_dir)
                self._teacher = await self._cm.__aenter__()
            return self._teacher

        return get

    @property
    def http_requests(self) -> int:
        """HTTP calls the teacher made (retries included); cache hits are not calls."""
        return int(getattr(self._teacher, "http_requests", 0))

    async def __aexit__(self, *exc: object) -> None:
        if self._cm is not None:
            await self._cm.__aexit__(*exc)
