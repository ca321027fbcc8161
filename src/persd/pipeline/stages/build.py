"""Build the training sets (StanD, InpD, PERsD, PERsD-refine, PERsD-combined) from the stages.

Every row is rebuilt from the stage files, in task order, so a resumed run and an
uninterrupted one write byte-identical datasets. Rows carry lineage (attempt and teacher ids).

What the training string is, per format:

- ``chat``: prompt = the user message the student is sampled with; completion = the verified
  program in one fenced block, exactly the code that passed every test.
- ``base``: prompt = the task prompt (a module docstring); completion = the verified program
  after it. Prompts that end inside a function (HumanEval style) would need the program split
  into header and body, the source of ~5% broken targets in the official data; those rows are
  skipped and counted instead.
"""

from __future__ import annotations

import ast
import random
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from persd.llm.base import Prompt
from persd.prompts import (
    PromptConfig,
    onpolicy_teacher_prompt,
    prompt_text,
    student_refine_prompt,
)
from persd.pysource import parse_module
from persd.records import Attempt, Example, Execution, Task, TeacherCall, Variant

if TYPE_CHECKING:
    from persd.pipeline.context import RunContext

StudentPrompt = Callable[[Task], Prompt]


@dataclass
class Built:
    """The rows of every variant, and why rows were left out."""

    rows: dict[str, list[Example]] = field(default_factory=dict)
    skipped: Counter[str] = field(default_factory=Counter)


def fenced(code: str) -> str:
    return f"```python\n{code.strip()}\n```"


def _prompt_is_module(prompt: str) -> bool:
    # A docstring-only prompt compiles by itself; a HumanEval prompt ends inside a def.
    try:
        parse_module(prompt)
    except SyntaxError:
        return False
    return True


@dataclass
class _Builder:
    """The state of one ``build_datasets`` call: the verified records indexed, the rows so
    far by variant, and the counts of what was left out."""

    chat: bool
    student_prompt: StudentPrompt
    settings: PromptConfig
    unfiltered: bool
    verifications: Mapping[str, Execution]
    built: Built = field(default_factory=Built)
    rows: dict[str, list[Example]] = field(default_factory=dict)

    def ok(self, call: TeacherCall) -> bool:
        v = self.verifications.get(call.id)
        return v is not None and v.feedback.passed

    def add(self, variant: str, ex: Example | None) -> None:
        if ex is not None:
            self.rows.setdefault(variant, []).append(ex)

    def example(
        self,
        variant: str,
        task: Task,
        code: str,
        *,
        prompt: Prompt,
        attempt: Attempt | None,
        teacher: TeacherCall,
        verified: bool,
        fmt: str,
    ) -> Example | None:
        text = prompt_text(prompt)
        if self.chat:
            completion = fenced(code)
        elif fmt == "text2code" and not _prompt_is_module(text):
            self.built.skipped[f"{variant}: base prompt ends inside a function"] += 1
            return None
        else:
            completion = "\n" + code.strip() + "\n"
        return Example(
            id=f"{variant}:{teacher.id}",
            variant=variant,  # type: ignore[arg-type]
            format=fmt,  # type: ignore[arg-type]
            prompt=text,
            completion=completion,
            task_id=task.id,
            attempt_id=attempt.id if attempt else None,
            teacher_id=teacher.id,
            verified=verified,
        )

    def personal(
        self, task: Task, attempt: Attempt, execution: Execution, calls: list[TeacherCall]
    ) -> bool:
        """PERsD rows (text2code and refine; ``_nofilter`` ablations from the first call)
        for one failed attempt; whether a verified refinement made them."""
        text2code = self.student_prompt(task)
        refine = student_refine_prompt(
            self.settings, task=task, code=attempt.code, feedback=execution.feedback, chat=self.chat
        )
        verified = next((c for c in calls if self.ok(c)), None)
        for suffix, call in (("", verified), ("_nofilter", calls[0])):
            if call is None or (suffix and not self.unfiltered):
                continue
            for name, prompt, fmt in (
                ("persd", text2code, "text2code"),
                ("persd_refine", refine, "refine"),
            ):
                ex = self.example(
                    name + suffix,
                    task,
                    call.code,
                    prompt=prompt,
                    attempt=attempt,
                    teacher=call,
                    verified=self.ok(call),
                    fmt=fmt,
                )
                self.add(name + suffix, ex)
        if verified is None:
            self.built.skipped["persd: no refinement passed every test"] += 1
        return verified is not None

    def standard(self, task: Task, solution: TeacherCall | None, personal: bool) -> None:
        """The StanD row of a task's verified solution, and its InpD copy when the task
        also has personalised rows."""
        if solution is None:
            if personal:
                self.built.skipped["inpd: failed task without a verified teacher solution"] += 1
            return
        ex = self.example(
            "stand",
            task,
            solution.code,
            prompt=self.student_prompt(task),
            attempt=None,
            teacher=solution,
            verified=True,
            fmt="text2code",
        )
        self.add("stand", ex)
        if personal and ex is not None:
            self.add("inpd", ex.model_copy(update={"id": f"inpd:{solution.id}", "variant": "inpd"}))

    def own(
        self, task: Task, attempts: Sequence[Attempt], per_task: int, max_rate: float = 1.0
    ) -> None:
        """``self`` rows: the task's attempts that passed ALL its tests, the first
        ``per_task`` distinct programs (by syntax tree: comments and spacing do not make a
        sample new), each with the student's own reply as the completion, as written. A task
        whose samples passed more often than ``max_rate`` gives none."""
        passed = sum(self.verified_attempt(a) for a in attempts)
        if passed and passed > max_rate * len(attempts):
            self.built.skipped["self: task passed above data.self_max_pass_rate"] += 1
            return
        seen: set[str] = set()
        for attempt in attempts:
            if not self.verified_attempt(attempt):
                continue
            if attempt.tokens_out >= attempt.sampling.get("max_new_tokens", 1 << 30):
                self.built.skipped["self: passing sample cut at max_new_tokens"] += 1
                continue
            key = _program_key(attempt.code)
            if key in seen or len(seen) >= per_task:
                self.built.skipped["self: a duplicate, or past data.self_per_task"] += 1
                continue
            seen.add(key)
            self.add(
                "self",
                Example(
                    id=f"self:{attempt.id}",
                    variant="self",
                    format="text2code",
                    prompt=prompt_text(self.student_prompt(task)),
                    completion=attempt.raw,
                    task_id=task.id,
                    attempt_id=attempt.id,
                ),
            )

    def verified_attempt(self, attempt: Attempt) -> bool:
        v = self.verifications.get(attempt.id)
        return v is not None and v.feedback.passed

    def onpolicy(
        self, task: Task, attempt: Attempt, execution: Execution, solution: TeacherCall | None
    ) -> None:
        """The ``persd_onpolicy`` row of one student sample, passed or failed: its prompt, the
        sample itself as the completion, and the teacher's privileged turn. Only where a
        verified program anchors the teacher (without one its scores are a guess)."""
        if not self.chat:
            self.built.skipped["persd_onpolicy: needs chat rows (the teacher's turn)"] += 1
            return
        if solution is None:
            self.built.skipped["persd_onpolicy: no verified program for the task"] += 1
            return
        if not attempt.raw.strip():
            self.built.skipped["persd_onpolicy: empty sample"] += 1
            return
        prompt = prompt_text(self.student_prompt(task))
        self.add(
            "persd_onpolicy",
            Example(
                id=f"persd_onpolicy:{attempt.id}",
                variant="persd_onpolicy",
                format="text2code",
                prompt=prompt,
                completion=attempt.raw,
                task_id=task.id,
                attempt_id=attempt.id,
                teacher_id=solution.id,
                verified=execution.feedback.passed,
                teacher_prompt=onpolicy_teacher_prompt(
                    self.settings,
                    prompt=prompt,
                    feedback=execution.feedback,
                    solution=solution.code,
                ),
            ),
        )


def _program_key(code: str) -> str:
    try:
        return ast.dump(parse_module(code))
    except SyntaxError:
        return code.strip()


def _relabel(rows: list[Example], variant: str) -> list[Example]:
    def source(r: Example) -> str | None:  # a teacher's answer, or the student's own sample
        return r.teacher_id or r.attempt_id

    return [
        r.model_copy(update={"id": f"{variant}:{r.variant}:{source(r)}", "variant": variant})
        for r in rows
    ]


def _combined(rows: dict[str, list[Example]], seed: int) -> None:
    """The variants made of others' rows: PERsD-combined (text2code + refine), its InpD
    version, and StanD at PERsD-combined's size."""
    rows["persd_combined"] = _relabel(
        rows.get("persd", []) + rows.get("persd_refine", []), "persd_combined"
    )
    rows["persd_combined_self"] = _relabel(
        rows.get("persd", []) + rows.get("persd_refine", []) + rows.get("self", []),
        "persd_combined_self",
    )
    rows["persd_combined_inpd"] = _relabel(
        rows.get("persd_refine", []) + rows.get("inpd", []), "persd_combined_inpd"
    )
    # The paper's key comparison is at equal size: StanD rows for a seeded random subset of
    # tasks, as many as PERsD-combined has rows (all of StanD when it has fewer).
    stand_rows = rows.get("stand", [])
    size = min(len(rows["persd_combined"]), len(stand_rows))
    picked = sorted(random.Random(seed).sample(range(len(stand_rows)), size))
    rows["stand_matched"] = _relabel([stand_rows[i] for i in picked], "stand_matched")


def build_datasets(
    tasks: Sequence[Task],
    attempts: Sequence[Attempt],
    executions: Mapping[str, Execution],
    solutions: Sequence[TeacherCall],
    refinements: Sequence[TeacherCall],
    verifications: Mapping[str, Execution],
    *,
    variants: Sequence[Variant],
    chat: bool,
    student_prompt: StudentPrompt,
    prompt_config: PromptConfig | None = None,
    unfiltered: bool = True,
    seed: int = 0,
    self_per_task: int = 4,
    self_max_pass_rate: float = 1.0,
) -> Built:
    """Every requested variant's rows (plus ``*_nofilter`` ablations when ``unfiltered``)."""
    b = _Builder(chat, student_prompt, prompt_config or PromptConfig(), unfiltered, verifications)
    first_solution: dict[str, TeacherCall] = {}
    for s in solutions:
        if b.ok(s):
            first_solution.setdefault(s.task_id, s)
    by_attempt: dict[str, list[TeacherCall]] = {}
    for r in sorted(refinements, key=lambda c: c.id):
        by_attempt.setdefault(r.attempt_id or "", []).append(r)
    attempts_by_task: dict[str, list[Attempt]] = {}
    for a in sorted(attempts, key=lambda a: (a.round, a.index)):
        attempts_by_task.setdefault(a.task_id, []).append(a)
    own = bool({"self", "persd_combined_self"} & set(variants))
    for task in tasks:
        personal = False
        for attempt in attempts_by_task.get(task.id, []):
            execution = executions.get(attempt.id)
            calls = by_attempt.get(attempt.id, [])
            if execution is not None and not execution.feedback.passed and calls:
                personal = b.personal(task, attempt, execution, calls) or personal
            if execution is not None and "persd_onpolicy" in variants:
                # The attempt's own verified fix first, else the task's verified solution.
                fix = next((c for c in calls if b.ok(c)), None)
                b.onpolicy(task, attempt, execution, fix or first_solution.get(task.id))
        b.standard(task, first_solution.get(task.id), personal)
        if own:
            b.own(task, attempts_by_task.get(task.id, []), self_per_task, self_max_pass_rate)
    _combined(b.rows, seed)
    wanted = set(variants)
    for name, items in b.rows.items():
        if name.removesuffix("_nofilter") in wanted:
            b.built.rows[name] = items
    for name in variants:
        b.built.rows.setdefault(name, [])
    return b.built


# ---- the build stage of a run ----------------------------------------------------------------


def build_round(ctx: RunContext, round_: int = 0) -> dict[str, list[Example]]:
    """The build stage: every variant's rows for the round, written to ``data/``."""
    from persd.pipeline.stages.attempt import round_tasks
    from persd.pipeline.store import StageFile
    from persd.prompts import student_prompt

    if round_ == 0:  # what is trained is built, listed in data.variants or not
        variants = tuple(dict.fromkeys(ctx.config.data.variants + ctx.config.train.variants))
    else:
        variants = (ctx.config.round_variant,)
    with ctx.timer.stage("build"):
        rec = ctx.store.records()
        built = build_datasets(
            round_tasks(ctx, round_),
            [a for a in rec.attempts if a.round == round_],
            rec.executions,
            rec.solutions,
            rec.refinements,
            rec.verifications,
            variants=variants,
            chat=ctx.chat,
            student_prompt=lambda t: student_prompt(t, chat=ctx.chat),
            prompt_config=ctx.config.prompt,
            unfiltered=ctx.config.data.unfiltered and round_ == 0,
            seed=ctx.config.data.seed,
            self_per_task=ctx.config.data.self_per_task,
            self_max_pass_rate=ctx.config.data.self_max_pass_rate,
        )
        for name, rows in built.rows.items():
            StageFile(ctx.paths.data(round_) / f"{name}.jsonl", Example).rewrite(rows)
        for reason, count in sorted(built.skipped.items()):
            ctx.progress.note(f"build: {count} × {reason}")
    return built.rows
