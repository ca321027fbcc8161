"""The attempt stage: the student writes ``n`` programs for every task it has not tried yet."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from persd.llm.base import (
    Generation,
    Prompt,
    SamplingParams,
    Student,
    chunk_size,
)
from persd.llm.extract import base_stop_sequences, extract_program
from persd.llm.student import trained_student
from persd.pipeline.config import AttemptConfig
from persd.pipeline.stages.train import trained_model
from persd.pipeline.store import RunDirError, StageFile
from persd.prompts import prompt_text, student_prompt
from persd.records import Attempt, Task

if TYPE_CHECKING:
    from persd.llm.student import StudentConfig
    from persd.pipeline.context import RunContext


def attempt_id(task: Task, round_: int, index: int) -> str:
    return f"{task.id}#r{round_}a{index}"


def missing_tasks(tasks: Sequence[Task], out: StageFile, cfg: AttemptConfig, round_: int) -> list:
    done = out.ids()
    return [t for t in tasks if any(attempt_id(t, round_, i) not in done for i in range(cfg.n))]


def run_attempts(
    tasks: Sequence[Task],
    student: Student,
    out: StageFile,
    cfg: AttemptConfig,
    *,
    chat: bool,
    round_: int = 0,
    batch_size: int | None = None,  # tasks per write; None: evaluate.multistep.chunk_size
    on_done: Callable[[int], None] | None = None,
) -> int:
    """Sample attempts for tasks missing any; each batch is on disk before the next starts.
    ``on_done(1)`` as each task's samples are finished.

    Returns the number of tasks sampled (0 on a complete rerun).
    """
    todo = missing_tasks(tasks, out, cfg, round_)
    params = SamplingParams(
        n=cfg.n,
        temperature=cfg.temperature,
        top_p=cfg.top_p,
        max_new_tokens=cfg.max_new_tokens,
        seed=cfg.seed,
    )
    done = out.ids()
    size = batch_size or chunk_size(student)
    for start in range(0, len(todo), size):
        batch = todo[start : start + size]
        prompts = [student_prompt(t, chat=chat) for t in batch]
        # A chat model's reply is kept whole; a base model's continuation stops where its
        # task's prompt says the function ends.
        each = [params if chat else _with_stops(params, t) for t in batch]
        generations = student.generate_each(
            prompts, each, (lambda _i: on_done(1)) if on_done else None
        )
        rows = [
            _attempt(
                task, round_, index, gen, prompt, sampling, model_id=student.model_id, chat=chat
            )
            for task, prompt, sampling, gens in zip(batch, prompts, each, generations, strict=True)
            for index, gen in enumerate(gens)
            if attempt_id(task, round_, index) not in done
        ]
        out.append(rows)
    return len(todo)


def _attempt(
    task: Task,
    round_: int,
    index: int,
    gen: Generation,
    prompt: Prompt,
    sampling: SamplingParams,
    *,
    model_id: str,
    chat: bool,
) -> Attempt:
    """The record of one sample: the raw reply, and the program evaluation would extract."""
    return Attempt(
        id=attempt_id(task, round_, index),
        task_id=task.id,
        round=round_,
        index=index,
        model_id=model_id,
        prompt=prompt_text(prompt),
        raw=gen.text,
        code=extract_program(gen.text, prompt=task.prompt, entry_point=task.entry_point, chat=chat),
        tokens_in=gen.tokens_in,
        tokens_out=gen.tokens_out,
        sampling=sampling.model_dump(mode="json"),
    )


def _with_stops(params: SamplingParams, task: Task) -> SamplingParams:
    return params.model_copy(update={"stop": base_stop_sequences(task.prompt, task.entry_point)})


# ---- the attempt stage of a run --------------------------------------------------------------


def round_tasks(ctx: RunContext, round_: int) -> list[Task]:
    """The tasks round ``round_`` attempts (see ``RoundsConfig.tasks``)."""
    tasks = list(ctx.pool.tasks)
    rounds = ctx.config.rounds
    if rounds.tasks == "fresh":
        n = len(tasks)
        return tasks[round_ * n // rounds.count : (round_ + 1) * n // rounds.count]
    if round_ == 0:
        return tasks
    failed = {a.task_id for a, _ in ctx.store.records().failed_attempts() if a.round == round_ - 1}
    return [t for t in tasks if t.id in failed]


def student_config(ctx: RunContext, round_: int) -> StudentConfig:
    """Round 0 attempts with the base student; round r with round r-1's trained model."""
    if round_ == 0:
        return ctx.config.student
    model = trained_model(ctx, ctx.config.round_variant, round_ - 1)
    if model is None:
        raise RunDirError(
            f"{ctx.store.root}: round {round_} needs the model trained in round "
            f"{round_ - 1} ({ctx.config.round_variant}), and none was trained"
        )
    return trained_student(ctx.config.student, model)


def attempt_tasks(ctx: RunContext, round_: int = 0) -> None:
    """The attempt stage: the round's student on every task of the round it has not tried;
    the student is closed before the sandbox and the teacher run."""
    tasks = round_tasks(ctx, round_)
    todo = missing_tasks(tasks, ctx.attempts, ctx.config.attempt, round_)
    if not todo:
        return
    with ctx.timer.stage("attempt"):
        advance = ctx.progress.start("attempt" if round_ == 0 else f"attempt r{round_}", len(todo))
        config = ctx.config.model_copy(update={"student": student_config(ctx, round_)})
        student = ctx.make_student(config)
        try:
            run_attempts(
                tasks,
                student,
                ctx.attempts,
                ctx.config.attempt,
                chat=ctx.chat,
                round_=round_,
                on_done=advance,
            )
        finally:
            student.close()  # free the weights before the sandbox and the teacher run
