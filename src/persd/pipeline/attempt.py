"""The attempt stage: the student writes ``n`` programs for every task it has not tried yet."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from persd.llm.base import SamplingParams, Student, chunk_size, generate_each
from persd.llm.chat_templates import prompt_text
from persd.llm.extract import base_stop_sequences, extract_program
from persd.llm.prompts import student_prompt
from persd.pipeline.config import AttemptConfig
from persd.pipeline.store import StageFile
from persd.records import Attempt, Task


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
        generations = generate_each(
            student, prompts, each, (lambda _i: on_done(1)) if on_done else None
        )
        rows = []
        for task, prompt, gens in zip(batch, prompts, generations, strict=True):
            for index, gen in enumerate(gens):
                rid = attempt_id(task, round_, index)
                if rid in done:
                    continue
                rows.append(
                    Attempt(
                        id=rid,
                        task_id=task.id,
                        round=round_,
                        index=index,
                        model_id=student.model_id,
                        prompt=prompt_text(prompt),
                        raw=gen.text,
                        code=extract_program(
                            gen.text, prompt=task.prompt, entry_point=task.entry_point, chat=chat
                        ),
                        tokens_in=gen.tokens_in,
                        tokens_out=gen.tokens_out,
                        sampling=(params if chat else _with_stops(params, task)).model_dump(
                            mode="json"
                        ),
                    )
                )
        out.append(rows)
    return len(todo)


def _with_stops(params: SamplingParams, task: Task) -> SamplingParams:
    return params.model_copy(update={"stop": base_stop_sequences(task.prompt, task.entry_point)})
