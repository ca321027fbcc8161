"""What the student is asked: a task, a refinement of its own attempt; and the teacher's
privileged turn for on-policy rows. Training rows and every serving path call these, with
the run's one ``PromptConfig``, so a student is trained on the prompt it is served.
"""

from __future__ import annotations

from persd.llm.base import Message, Prompt
from persd.prompts.config import PromptConfig
from persd.prompts.feedback import render_feedback
from persd.prompts.files import TemplateError, as_text, fill, render_chat, shipped_text
from persd.records import Feedback, Task


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
    values = {
        "instruction": f"{instruction}\n\n" if instruction else "",
        "prompt": task.prompt.rstrip(),
    }
    text = fill(shipped_text("student_chat.txt"), values, where="student_chat.txt")
    return (Message(role="user", content=text),)


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
