"""Evaluate a student: pass@k on HIDDEN tests, with 0..N self-refinement steps driven by SEEN
tests, beside plain resampling with the same number of model calls.

Step 0 samples ``n`` programs per task. At step s, every sample whose program still fails the
task's seen tests gets one more model call:

- refine arm: the student reads the shared refinement prompt (its code plus the rendered
  seen-test feedback) and writes a new program;
- resample arm: the student is asked the original prompt again (a fresh seed).

Samples that pass their seen tests stop (their program is final), so both arms spend one
call per still-failing sample per step and the report counts the calls actually made. A
refinement gain therefore cannot come from spending more samples. Seen tests decide who is
refined; hidden tests only score. Tasks without seen tests are scored but never refined.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from pydantic import BaseModel

from persd.evaluate.journal import Journal, journal_key
from persd.evaluate.passk import mean_pass_at_k
from persd.llm.base import Prompt, SamplingParams, Student, chunk_size
from persd.llm.extract import base_stop_sequences, extract_program
from persd.prompts import PromptConfig, student_prompt, student_refine_prompt
from persd.records import Feedback, Task
from persd.sandbox import Job, Sandbox

Arm = Literal["refine", "resample"]


class StepScore(BaseModel):
    step: int
    arm: str
    pass_at: dict[int, float]  # on hidden tests
    seen_pass_rate: float
    calls: int  # model calls made at this step (step 0: n per task)
    calls_total: int


class EvalReport(BaseModel):
    model_id: str
    benchmark: str
    # What was scored: the backend that sampled and the weights it read, e.g. "llama_cpp" and
    # "model.gguf, Q5_0 served as Q8_0, + GGUF LoRA adapter.lora.gguf". None in reports
    # written before they were recorded, and for a student that does not say.
    backend: str | None = None
    weights: str | None = None
    tasks: int
    n: int
    temperature: float
    resample_temperature: float
    refine_steps: int
    feedback_tests: str = "seen"
    score_tests: str = "hidden"
    tasks_without_seen_tests: int = 0
    batches_resumed: int = 0  # batches of generations reused from an interrupted run
    # Seconds spent generating, over every batch this report uses (resumed ones included, as
    # journaled when they were made); None when a resumed batch predates the timing. Scoring
    # seconds are this run's. Both are wall time on whatever else the machine was doing.
    generate_s: float | None = None
    score_s: float = 0.0
    steps: list[StepScore] = []

    def pass1(self, arm: str, step: int) -> float:
        return next(s.pass_at[1] for s in self.steps if s.arm == arm and s.step == step)


@dataclass
class _Sample:
    task: Task
    index: int
    code: str
    seen: Feedback | None = None
    hidden: Feedback | None = None
    history: list[dict] = field(default_factory=list)


def _generate(
    student: Student,
    prompts: Sequence[Prompt],
    tasks: Sequence[Task],
    params: SamplingParams,
    *,
    chat: bool,
    on_done: Callable[[int], None] | None = None,
) -> list[list[str]]:
    """Each task's samples. A chat reply may stop once its program is final
    (``stop_when_answered``: saves the prose after the code and changes nothing in the
    program); a base model's continuation stops at its task's stop sequences."""
    if chat:
        each = [params.model_copy(update={"stop_when_answered": t.entry_point}) for t in tasks]
    else:
        each = [
            params.model_copy(update={"stop": base_stop_sequences(t.prompt, t.entry_point)})
            for t in tasks
        ]
    gens = student.generate_each(prompts, each, on_done)
    return [[g.text for g in per_task] for per_task in gens]


def _score(samples: Sequence[_Sample], sandbox: Sandbox) -> float:
    """Score every sample on its seen and hidden tests; returns the seconds it took."""
    start = time.perf_counter()
    jobs, slots = [], []
    for s in samples:
        for test_set in ("seen", "hidden"):
            if test_set == "seen" and not s.task.tests_seen:
                continue
            jobs.append(Job.for_task(s.task, s.code, test_set))
            slots.append((s, test_set))
    for i, fb in sandbox.imap(jobs):
        sample, test_set = slots[i]
        setattr(sample, test_set, fb)
    return time.perf_counter() - start


def _step_score(
    samples: Sequence[_Sample], step: int, arm: str, calls: int, total: int, ks: Sequence[int]
) -> StepScore:
    counts: dict[str, list[int]] = {}
    for s in samples:
        c = counts.setdefault(s.task.id, [0, 0])
        c[0] += 1
        c[1] += bool(s.hidden and s.hidden.passed)
    with_seen = [s for s in samples if s.seen is not None]
    return StepScore(
        step=step,
        arm=arm,
        pass_at=mean_pass_at_k({k: (n, c) for k, (n, c) in counts.items()}, ks),
        seen_pass_rate=sum(s.seen.passed for s in with_seen) / max(1, len(with_seen)),
        calls=calls,
        calls_total=total,
    )


def evaluate_student(
    student: Student,
    tasks: Sequence[Task],
    sandbox: Sandbox,
    *,
    benchmark: str,
    n: int = 1,
    temperature: float = 0.0,
    refine_steps: int = 0,
    chat: bool = True,
    max_new_tokens: int = 384,
    resample_temperature: float = 0.2,
    seed: int = 0,
    ks: Sequence[int] = (1, 5, 10),
    out_dir: Path | None = None,
    on_progress: Callable[[str, int, int], None] | None = None,
    fingerprint: str = "",
    prompt: PromptConfig | None = None,
) -> EvalReport:
    """Sample, score, then refine and resample for ``refine_steps`` steps; write samples."""
    params = SamplingParams(
        n=n, temperature=temperature, top_p=0.95, max_new_tokens=max_new_tokens, seed=seed
    )
    report = EvalReport(
        model_id=student.model_id,
        benchmark=benchmark,
        backend=student.backend,
        weights=student.weights,
        tasks=len(tasks),
        n=n,
        temperature=temperature,
        # Greedy resampling would repeat the same program: the resample arm needs T > 0.
        resample_temperature=temperature or resample_temperature,
        refine_steps=refine_steps,
        tasks_without_seen_tests=sum(not t.tests_seen for t in tasks),
    )
    # The journal's header names what makes two evaluations' generations the same.
    journal = Journal(
        out_dir / "generations.jsonl" if out_dir is not None else None,
        report.model_dump(
            include={"model_id", "benchmark", "n", "temperature", "resample_temperature"}
        )
        # llm.student.weights_fingerprint: a retrained model is another model
        | {"weights": fingerprint, "max_new_tokens": max_new_tokens, "chat": chat, "seed": seed},
    )
    samples = _sample(student, tasks, params, chat=chat, journal=journal, on_progress=on_progress)
    report.score_s += _score(samples, sandbox)
    report.steps.append(_step_score(samples, 0, "base", len(samples), len(samples), ks))
    step = _Step(student, sandbox, report, journal, params, chat, prompt or PromptConfig(), ks)
    arms = _refine_arms(step, samples, on_progress)
    report.batches_resumed = journal.reused
    report.generate_s = None if journal.seconds is None else round(journal.seconds, 3)
    report.score_s = round(report.score_s, 3)
    if out_dir is not None:
        _write(out_dir, report, {"base": samples, **(arms if refine_steps else {})})
    return report


def _sample(
    student: Student,
    tasks: Sequence[Task],
    params: SamplingParams,
    *,
    chat: bool,
    journal: Journal,
    on_progress: Callable[[str, int, int], None] | None,
) -> list[_Sample]:
    """Step 0: every task's samples, a journalled chunk at a time, progress per task."""
    prompts = [student_prompt(t, chat=chat) for t in tasks]
    samples: list[_Sample] = []
    size = chunk_size(student)
    finished = 0

    def one_done(_i: int) -> None:  # progress per task, not per chunk
        nonlocal finished
        finished += 1
        if on_progress:
            on_progress("sample", finished, len(tasks))

    for start in range(0, len(tasks), size):
        batch = tasks[start : start + size]
        outputs = journal.batch(
            journal_key("base", 0, start, size),
            batch,
            lambda b=batch, s=start, cb=one_done: _generate(
                student, prompts[s : s + size], b, params, chat=chat, on_done=cb
            ),
        )
        for task, texts in zip(batch, outputs, strict=True):
            for i, text in enumerate(texts):
                code = extract_program(
                    text, prompt=task.prompt, entry_point=task.entry_point, chat=chat
                )
                samples.append(_Sample(task, i, code, history=[{"step": 0, "raw": text}]))
        finished = min(start + size, len(tasks))  # a chunk from the journal counts whole
        if on_progress:
            on_progress("sample", finished, len(tasks))
    return samples


@dataclass(frozen=True)
class _Step:
    """What every refinement step of an evaluation shares."""

    student: Student
    sandbox: Sandbox
    report: EvalReport
    journal: Journal
    params: SamplingParams
    chat: bool
    prompt: PromptConfig
    ks: Sequence[int]


def _refine_arms(
    at: _Step,
    samples: Sequence[_Sample],
    on_progress: Callable[[str, int, int], None] | None,
) -> dict[str, list[_Sample]]:
    """Steps 1..``refine_steps`` of both arms from step 0's samples: ``refine`` asks the
    student to fix a program that failed its seen tests (the training rows' refinement prompt,
    from ``prompt``), ``resample`` draws a fresh one; each step is scored into the report."""
    arms: dict[str, list[_Sample]] = {
        "refine": [_copy(s) for s in samples],
        "resample": [_copy(s) for s in samples],
    }
    steps = at.report.refine_steps
    for arm, arm_samples in arms.items():
        total = len(samples)
        for step in range(1, steps + 1):
            todo = [s for s in arm_samples if s.seen is not None and not s.seen.passed]
            _one_step(
                at.student,
                todo,
                arm,
                step,
                chat=at.chat,
                params=at.params,
                report=at.report,
                journal=at.journal,
                prompt=at.prompt,
            )
            at.report.score_s += _score(todo, at.sandbox)
            total += len(todo)
            at.report.steps.append(_step_score(arm_samples, step, arm, len(todo), total, at.ks))
            if on_progress:
                on_progress(f"{arm} {step}", step, steps)
    return arms


def _copy(s: _Sample) -> _Sample:
    return _Sample(s.task, s.index, s.code, s.seen, s.hidden, list(s.history))


def _one_step(
    student: Student,
    todo: Sequence[_Sample],
    arm: str,
    step: int,
    *,
    chat: bool,
    params: SamplingParams,
    report: EvalReport,
    journal: Journal,
    prompt: PromptConfig,
) -> None:
    one = params.model_copy(update={"n": 1})
    if arm == "refine":
        prompts = [
            student_refine_prompt(prompt, task=s.task, code=s.code, feedback=s.seen, chat=chat)
            for s in todo
        ]
    else:
        prompts = [student_prompt(s.task, chat=chat) for s in todo]
        one = one.model_copy(update={"temperature": report.resample_temperature})
    size = chunk_size(student)
    for start in range(0, len(todo), size):
        batch = todo[start : start + size]
        # A distinct seed per (sample, step): resampling must not repeat step 0's draw.
        seeded = one.model_copy(update={"seed": params.seed + 1000 * step + start})
        tasks = [s.task for s in batch]
        texts = journal.batch(
            journal_key(arm, step, start, size),
            tasks,
            lambda t=tasks, p=prompts[start : start + size], sp=seeded: _generate(
                student, p, t, sp, chat=chat
            ),
        )
        for s, gens in zip(batch, texts, strict=True):
            s.code = extract_program(
                gens[0], prompt=s.task.prompt, entry_point=s.task.entry_point, chat=chat
            )
            s.history.append({"step": step, "raw": gens[0]})


def _write(out_dir: Path, report: EvalReport, arms: dict[str, list[_Sample]]) -> None:
    """The report and each arm's samples. Step 0's samples too: per-task verdicts before any
    refinement, for paired comparisons of two models (the arms' files hold the last step's
    verdicts)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "report.json").write_text(report.model_dump_json(indent=2))
    for arm, samples in arms.items():
        with (out_dir / f"samples_{arm}.jsonl").open("w") as f:
            for s in samples:
                row = {
                    "task_id": s.task.id,
                    "index": s.index,
                    "completion": s.code,
                    "passed": bool(s.hidden and s.hidden.passed),
                    "status": s.hidden.status if s.hidden else None,
                    "seen_status": s.seen.status if s.seen else None,
                    "history": s.history,
                }
                f.write(json.dumps(row) + "\n")
