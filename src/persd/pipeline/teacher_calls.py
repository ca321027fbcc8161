"""How a stage calls the teacher: one request per record id, answers appended to the stage
file the moment they arrive, the teacher opened only when a request needs it.

Calls run concurrently (the teacher client bounds them). The client has already cached a
response when it is appended, so a crash between the two costs nothing on rerun; a budget
stop ends the stage cleanly with everything received so far on disk. The synth and teach
stages both ask through here.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from persd.llm.base import Message, SamplingParams, Teacher
from persd.pipeline.config import TeachConfig
from persd.pipeline.store import StageFile
from persd.records import Attempt, Task, TeacherCall

if TYPE_CHECKING:
    from persd.config import RunConfig
    from persd.pipeline.context import RunContext

Extract = Callable[[str, Task], str]


@dataclass(frozen=True)
class TeacherRequest:
    """One teacher call to make: its record id, the task (and attempt) it is about, the chat."""

    id: str
    task: Task
    attempt: Attempt | None
    messages: tuple[Message, ...]
    seed: int
    max_lines: int | None = None  # a reply read only this far (``SamplingParams.max_lines``)


def _sampling(req: TeacherRequest, cfg: TeachConfig) -> SamplingParams:
    """A request's sampling: the stage's settings, the request's seed and line limit."""
    return SamplingParams(
        n=1,
        temperature=cfg.temperature,
        top_p=cfg.top_p,
        max_new_tokens=cfg.max_new_tokens,
        seed=req.seed,
        max_lines=req.max_lines,
    )


async def ask_teacher(
    requests: Sequence[TeacherRequest],
    teacher: Teacher,
    cfg: TeachConfig,
    out: StageFile,
    *,
    extract: Extract,
    on_done: Callable[[int], None] | None = None,
) -> list[TeacherCall]:
    """Send every request ``out`` lacks; returns the answers stored (no re-read of ``out``)."""
    done = out.ids()
    todo = [r for r in requests if r.id not in done]
    if not todo:
        return []

    async def one(req: TeacherRequest) -> TeacherCall:
        reply = (await teacher.chat(req.messages, _sampling(req, cfg)))[0]
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
    stored: list[TeacherCall] = []
    try:
        while pending:
            finished, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            calls = [f.result() for f in finished if f.exception() is None]
            out.append(calls)  # before raising: answers that arrived are kept
            stored += calls
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
    return stored


def extract_teacher(text: str, task: Task) -> str:
    """The program of a teacher's chat reply (the answer format evaluation extracts)."""
    from persd.llm.extract import extract_program

    return extract_program(text, prompt=task.prompt, entry_point=task.entry_point, chat=True)


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
        return self._teacher.http_requests if self._teacher is not None else 0

    async def __aexit__(self, *exc: object) -> None:
        if self._cm is not None:
            await self._cm.__aexit__(*exc)
