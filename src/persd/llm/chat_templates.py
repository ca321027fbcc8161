"""Chat prompt templates kept as files: turns, placeholders, and the one refinement prompt.

A template is text with ``=== user ===`` / ``=== assistant ===`` / ``=== system ===`` lines
starting each turn and ``{{name}}`` placeholders. Shipped templates live in
``persd/llm/templates/``; a user passes a path to replace one. Placeholders are filled in one
pass, so a value that itself contains ``{{code}}`` is never filled again.
"""

from __future__ import annotations

import re
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from persd.errors import PersdError
from persd.llm.base import Message, Prompt
from persd.records import Feedback, Task

_TURN = re.compile(r"^=== (user|assistant|system) ===[ \t]*$", re.MULTILINE)
_SLOT = re.compile(r"\{\{(\w+)\}\}")

# Shipped templates by name; the pipeline config names one of these or a file path.
SHIPPED = (
    "teacher_solve",
    "teacher_refine_paper",
    "teacher_refine_chat",
    "teacher_tests",
    "student_refine",
    "teacher_onpolicy",
)


class TemplateError(PersdError):
    pass


@cache
def _read(name_or_path: str) -> tuple[str, str]:
    if name_or_path in SHIPPED:
        text = resources.files("persd.llm").joinpath(f"templates/{name_or_path}.txt").read_text()
        return name_or_path, text
    path = Path(name_or_path)
    try:
        return str(path), path.read_text(encoding="utf-8")
    except OSError as e:
        shipped = ", ".join(SHIPPED)
        raise TemplateError(
            f"template '{name_or_path}': cannot read ({e.strerror}); "
            f"give a file path or one of: {shipped}"
        ) from None


def load_turns(name_or_path: str) -> tuple[tuple[str, str], ...]:
    """The (role, text) turns of a template, placeholders unfilled."""
    where, text = _read(name_or_path)
    parts = _TURN.split(text)
    if parts[0].strip() or len(parts) < 3:
        raise TemplateError(f"template {where}: must start with a '=== user ===' line")
    turns = tuple(
        (role, body.strip("\n")) for role, body in zip(parts[1::2], parts[2::2], strict=True)
    )
    if turns[-1][0] != "user":
        raise TemplateError(f"template {where}: the last turn must be the user's")
    return turns


def placeholders(name_or_path: str) -> set[str]:
    return {m for _, body in load_turns(name_or_path) for m in _SLOT.findall(body)}


def render_chat(name_or_path: str, values: dict[str, str]) -> tuple[Message, ...]:
    """Fill a template's placeholders; every placeholder must have a value."""
    missing = placeholders(name_or_path) - values.keys()
    if missing:
        where = _read(name_or_path)[0]
        raise TemplateError(f"template {where}: no value for {{{{{sorted(missing)[0]}}}}}")

    def fill(body: str) -> str:
        return _SLOT.sub(lambda m: values[m.group(1)], body)

    return tuple(Message(role=role, content=fill(body)) for role, body in load_turns(name_or_path))


def as_text(messages: tuple[Message, ...]) -> str:
    """A conversation flattened for base (non-chat) models: the turns' text, in order."""
    return "\n\n".join(m.content for m in messages)


class PromptConfig(BaseModel):
    """``prompt:`` — the student's refinement prompt and how much execution feedback any prompt
    shows. The ONE section that PERsD-refine training rows, evaluation's self-refinement steps
    and the teacher's refinement requests all read: a student is asked at inference exactly
    what it was trained on (it was not: evaluation used another template setting and cut the
    feedback at 2000 characters where training rows cut it at 1200)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    refine_template: str = Field(
        "student_refine", description="the student's refinement template: a shipped name or a file"
    )
    onpolicy_template: str = Field(
        "teacher_onpolicy",
        description="persd_onpolicy: the teacher's privileged user turn (prompt, feedback, "
        "solution)",
    )
    feedback_max_chars: int = Field(
        1200, ge=100, description="rendered execution feedback is cut to this many characters"
    )
    mbpp_shape: Literal["docstring", "signature"] = Field(
        "docstring",
        description="MBPP task prompts (pool, validation, mbpp-test): 'docstring' = the "
        "instruction and example alone; 'signature' = HumanEval's shape, the gold def line "
        "with them as its docstring (docs/RESULTS.md: training on 'docstring' prompts makes "
        "the student leave some HumanEval bodies empty)",
    )


def refine_prompt(
    *,
    task_text: str,
    code: str,
    feedback: str,
    header: str,
    chat: bool,
    template: str = "student_refine",
) -> Prompt:
    """A student refinement prompt from already rendered feedback; use ``student_refine_prompt``
    from the pipeline and evaluation, so both render it from the same settings.

    ``header`` is what a base model continues from (the task's prompt); chat models get the
    conversation and answer with a whole program.
    """
    messages = render_chat(template, {"task": task_text, "code": code, "feedback": feedback})
    if chat:
        return messages
    return as_text(messages) + "\n\n" + header


def student_refine_prompt(
    settings: PromptConfig, *, task: Task, code: str, feedback: Feedback | None, chat: bool
) -> Prompt:
    """THE student refinement prompt: training rows and inference-time refinement call this."""
    from persd.sandbox import render_feedback

    text = render_feedback(feedback, max_chars=settings.feedback_max_chars) if feedback else ""
    return refine_prompt(
        task_text=task.instruction,
        code=code,
        feedback=text,
        header=task.prompt,
        chat=chat,
        template=settings.refine_template,
    )


def onpolicy_teacher_prompt(
    settings: PromptConfig, *, prompt: str, feedback: Feedback, solution: str
) -> str:
    """The teacher's user turn for a ``persd_onpolicy`` row: the student's own prompt, then
    what only the teacher sees (the sample's execution feedback, a verified solution), so the
    teacher's next-token distribution over the student's sample is an informed one."""
    from persd.sandbox import render_feedback

    values = {
        "prompt": prompt,
        "feedback": render_feedback(feedback, max_chars=settings.feedback_max_chars),
        "solution": solution.strip(),
    }
    return prompt_text(render_chat(settings.onpolicy_template, values))


def prompt_text(prompt: Prompt) -> str:
    """What to store as an example's prompt: a chat prompt's one user message.

    A training row holds one user turn, and the trainer rebuilds the conversation from it: a
    student template with more turns would be served turns the row never trained on.
    """
    if isinstance(prompt, str):
        return prompt
    if len(prompt) != 1 or prompt[0].role != "user":
        roles = ", ".join(m.role for m in prompt)
        raise TemplateError(
            f"a student prompt must be one user turn to become a training row (got: {roles})"
        )
    return prompt[0].content
