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

from persd.errors import PersdError
from persd.evaluate.passk import mean_pass_at_k
from persd.llm.base import Prompt, SamplingParams, Student, chunk_size, generate_each
from persd.llm.chat_templates import PromptConfig, student_refine_prompt
from persd.llm.extract import base_stop_sequences, extract_program
from persd.llm.prompts import student_prompt
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


class _Journal:
    """Every batch of raw generations, appended to ``<out>/generations.jsonl`` as it is made.

    A rerun with the same ``--out`` reuses them instead of sampling again: sampling is
    seeded, so the reused text is what the same call would produce, and an evaluation cut
    off after an hour resumes where it was. The header line names the evaluation (model,
    benchmark, decoding); reusing another evaluation's generations is refused. The number of
    refinement steps is not part of it: a step-0 run can be continued with refinement steps.
    """

    def __init__(self, path: Path | None, header: dict) -> None:
        self.path, self.reused = path, 0
        self.seconds: float | None = 0.0  # generation time of the batches handed out
        self._done: dict[str, tuple[list[str], list[list[str]], float | None]] = {}
        if path is None:
            return
        if path.exists() and path.stat().st_size:
            text = path.read_text(encoding="utf-8")
            lines = text.splitlines()
            try:
                first = json.loads(lines[0])
            except json.JSONDecodeError:
                raise PersdError(f"{path}:1: not a generations header line") from None
            if first != header:
                diff = sorted(
                    k for k in header.keys() | first.keys() if first.get(k) != header.get(k)
                )
                raise PersdError(
                    f"{path}: generations of another evaluation (differs in {', '.join(diff)}); "
                    "pass another --out or remove that directory"
                )
            whole = lines
            for n, line in enumerate(lines[1:], start=2):
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:
                    if n == len(lines):
                        whole = lines[:-1]  # cut off mid-write: that batch is made again
                        break
                    raise PersdError(f"{path}:{n}: not a JSON line") from None
                self._done[row["key"]] = (row["tasks"], row["texts"], row.get("seconds"))
            if not text.endswith("\n"):  # a write was cut off: keep only whole lines
                path.write_text("".join(line + "\n" for line in whole), encoding="utf-8")
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(header) + "\n", encoding="utf-8")

    def batch(
        self, key: str, tasks: Sequence[Task], make: Callable[[], list[list[str]]]
    ) -> list[list[str]]:
        ids = [t.id for t in tasks]
        done = self._done.get(key)
        if done is not None and done[0] == ids:
            self.reused += 1
            self._add(done[2])
            return done[1]
        start = time.perf_counter()
        texts = make()
        seconds = round(time.perf_counter() - start, 3)
        self._add(seconds)
        if self.path is not None:
            row = {"key": key, "tasks": ids, "texts": texts, "seconds": seconds}
            with self.path.open("a", encoding="utf-8") as f:
                f.write(json.dumps(row) + "\n")
        return texts

    def _add(self, seconds: float | None) -> None:
        self.seconds = None if seconds is None or self.seconds is None else self.seconds + seconds


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
    gens = generate_each(student, prompts, each, on_done)
    return [[g.text for g in per_task] for per_task in gens]


def _journal_key(arm: str, step: int, start: int, size: int) -> str:
    """A chunk's key; chunks of 8 keep the keys journals were written with before batching."""
    return f"{arm}/{step}/{start}" if size == 8 else f"{arm}/{step}/{start}+{size}"


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
        tasks=len(tasks),
        n=n,
        temperature=temperature,
        # Greedy resampling would repeat the same program: the resample arm needs T > 0.
        resample_temperature=temperature if temperature > 0 else resample_temperature,
        refine_steps=refine_steps,
        tasks_without_seen_tests=sum(not t.tests_seen for t in tasks),
    )
    journal = _Journal(
        out_dir / "generations.jsonl" if out_dir is not None else None,
        {
            "model_id": student.model_id,
            "weights": fingerprint,  # llm.student.weights_fingerprint: retrained = different
            "benchmark": benchmark,
            "n": n,
            "temperature": temperature,
            "resample_temperature": report.resample_temperature,
            "max_new_tokens": max_new_tokens,
            "chat": chat,
            "seed": seed,
        },
    )
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
            _journal_key("base", 0, start, size),
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
    report.score_s += _score(samples, sandbox)
    report.steps.append(_step_score(samples, 0, "base", len(samples), len(samples), ks))
    arms: dict[str, list[_Sample]] = {
        "refine": [_copy(s) for s in samples],
        "resample": [_copy(s) for s in samples],
    }
    for arm, arm_samples in arms.items():
        total = len(samples)
        for step in range(1, refine_steps + 1):
            todo = [s for s in arm_samples if s.seen is not None and not s.seen.passed]
            _one_step(
                student,
                todo,
                arm,
                step,
                chat=chat,
                params=params,
                report=report,
                journal=journal,
                prompt=prompt or PromptConfig(),
            )
            report.score_s += _score(todo, sandbox)
            total += len(todo)
            report.steps.append(_step_score(arm_samples, step, arm, len(todo), total, ks))
            if on_progress:
                on_progress(f"{arm} {step}", step, refine_steps)
    report.batches_resumed = journal.reused
    report.generate_s = None if journal.seconds is None else round(journal.seconds, 3)
    report.score_s = round(report.score_s, 3)
    if out_dir is not None:
        # Step 0's samples too: per-task verdicts before any refinement, for paired
        # comparisons of two models (the arms' files hold the last step's verdicts).
        _write(out_dir, report, {"base": samples, **arms} if refine_steps else {"base": samples})
    return report


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
    journal: _Journal,
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
            _journal_key(arm, step, start, size),
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
