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

from persd.llm.base import Prompt
from persd.llm.chat_templates import PromptConfig, prompt_text, student_refine_prompt
from persd.records import Attempt, Example, Execution, Task, TeacherCall, Variant

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
        ast.parse(prompt)
    except SyntaxError:
        return False
    return True


@dataclass
class _Ctx:
    chat: bool
    student_prompt: StudentPrompt
    built: Built


def _example(
    ctx: _Ctx,
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
    if ctx.chat:
        completion = fenced(code)
    elif fmt == "text2code" and not _prompt_is_module(text):
        ctx.built.skipped[f"{variant}: base prompt ends inside a function"] += 1
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
) -> Built:
    """Every requested variant's rows (plus ``*_nofilter`` ablations when ``unfiltered``)."""
    built = Built()
    ctx = _Ctx(chat, student_prompt, built)
    settings = prompt_config or PromptConfig()

    def ok(call: TeacherCall) -> bool:
        v = verifications.get(call.id)
        return v is not None and v.feedback.passed

    first_solution: dict[str, TeacherCall] = {}
    for s in solutions:
        if ok(s):
            first_solution.setdefault(s.task_id, s)
    by_attempt: dict[str, list[TeacherCall]] = {}
    for r in refinements:
        by_attempt.setdefault(r.attempt_id or "", []).append(r)
    for calls in by_attempt.values():
        calls.sort(key=lambda c: c.id)
    attempts_by_task: dict[str, list[Attempt]] = {}
    for a in sorted(attempts, key=lambda a: (a.round, a.index)):
        attempts_by_task.setdefault(a.task_id, []).append(a)

    rows: dict[str, list[Example]] = {}

    def add(variant: str, ex: Example | None) -> None:
        if ex is not None:
            rows.setdefault(variant, []).append(ex)

    for task in tasks:
        text2code = student_prompt(task)
        solution = first_solution.get(task.id)
        personal = False
        for attempt in attempts_by_task.get(task.id, []):
            execution = executions.get(attempt.id)
            if execution is None or execution.feedback.passed:
                continue
            calls = by_attempt.get(attempt.id, [])
            if not calls:
                continue
            refine = student_refine_prompt(
                settings, task=task, code=attempt.code, feedback=execution.feedback, chat=chat
            )
            verified = next((c for c in calls if ok(c)), None)
            for suffix, call in (("", verified), ("_nofilter", calls[0])):
                if call is None or (suffix and not unfiltered):
                    continue
                v_ok = ok(call)
                for name, prompt, fmt in (
                    ("persd", text2code, "text2code"),
                    ("persd_refine", refine, "refine"),
                ):
                    add(
                        name + suffix,
                        _example(
                            ctx,
                            name + suffix,
                            task,
                            call.code,
                            prompt=prompt,
                            attempt=attempt,
                            teacher=call,
                            verified=v_ok,
                            fmt=fmt,
                        ),
                    )
            if verified is not None:
                personal = True
            else:
                built.skipped["persd: no refinement passed every test"] += 1
        if solution is not None:
            ex = _example(
                ctx,
                "stand",
                task,
                solution.code,
                prompt=text2code,
                attempt=None,
                teacher=solution,
                verified=True,
                fmt="text2code",
            )
            add("stand", ex)
            if personal and ex is not None:
                add("inpd", ex.model_copy(update={"id": f"inpd:{solution.id}", "variant": "inpd"}))
        elif personal:
            built.skipped["inpd: failed task without a verified teacher solution"] += 1

    def relabel(rows_: list[Example], variant: str) -> list[Example]:
        return [
            r.model_copy(update={"id": f"{variant}:{r.variant}:{r.teacher_id}", "variant": variant})
            for r in rows_
        ]

    rows["persd_combined"] = relabel(
        rows.get("persd", []) + rows.get("persd_refine", []), "persd_combined"
    )
    rows["persd_combined_inpd"] = relabel(
        rows.get("persd_refine", []) + rows.get("inpd", []), "persd_combined_inpd"
    )
    # The paper's key comparison is at equal size: StanD rows for a seeded random subset of
    # tasks, as many as PERsD-combined has rows (all of StanD when it has fewer).
    stand_rows = rows.get("stand", [])
    size = min(len(rows["persd_combined"]), len(stand_rows))
    picked = sorted(random.Random(seed).sample(range(len(stand_rows)), size))
    rows["stand_matched"] = relabel([stand_rows[i] for i in picked], "stand_matched")
    wanted = set(variants)
    for name, items in rows.items():
        base = name.removesuffix("_nofilter")
        if base in wanted:
            built.rows[name] = items
    for name in variants:
        built.rows.setdefault(name, [])
    return built
