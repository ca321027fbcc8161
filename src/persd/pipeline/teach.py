"""Teacher stages: direct solutions for every task, refinements of every failed attempt.

Calls run concurrently (the teacher client bounds them) and each answer is appended to its
stage file the moment it arrives; the client has already cached the response, so a crash
between the two costs nothing on rerun. A budget stop ends the stage cleanly with everything
received so far on disk.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from persd.llm.base import Message, SamplingParams, Teacher
from persd.llm.chat_templates import placeholders, render_chat
from persd.pipeline.config import TeachConfig
from persd.pipeline.store import StageFile
from persd.records import Attempt, Execution, Task, TeacherCall
from persd.sandbox import render_feedback

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
