"""What the student is shown for a task: a chat turn, or HumanEval-style text to continue."""

from __future__ import annotations

import functools
from importlib import resources

from persd.llm.base import Message, Prompt
from persd.records import Task


@functools.cache
def _template(name: str) -> str:
    return (resources.files("persd") / "llm" / "templates" / name).read_text(encoding="utf-8")


def _squash(text: str) -> str:
    return " ".join(text.split())


def student_prompt(task: Task, *, chat: bool) -> Prompt:
    """The task as the student sees it.

    ``chat=False``: the task's prompt as raw text (the model continues the function body, or for
    MBPP-style prompts writes the function after the docstring). ``chat=True``: one user message
    from ``templates/student_chat.txt`` that the backend renders with the model's chat template.
    """
    if not chat:
        return task.prompt
    # HumanEval's instruction is the prompt's own docstring: saying it twice wastes context.
    mentioned = _squash(task.instruction) in _squash(task.prompt)
    instruction = "" if mentioned or not task.instruction.strip() else task.instruction.strip()
    text = _template("student_chat.txt").format(
        instruction=f"{instruction}\n\n" if instruction else "",
        prompt=task.prompt.rstrip(),
    )
    return (Message(role="user", content=text),)
