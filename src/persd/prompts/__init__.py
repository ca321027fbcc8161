"""Every prompt persd writes, from one folder of templates and one config section.

``templates/`` holds the text (``{{name}}`` placeholders throughout); ``files`` reads and fills
it; ``config.PromptConfig`` is the run's ``prompt:`` section; ``student`` builds what the
student is asked (task, refinement) and ``feedback`` what any model reads about a program's
run. Training rows, evaluation, the teacher and ``persd eval`` all render through here.
"""

from persd.prompts.config import PromptConfig
from persd.prompts.feedback import render_feedback
from persd.prompts.files import (
    SHIPPED,
    TemplateError,
    as_text,
    fill,
    load_turns,
    placeholders,
    render_chat,
    shipped_text,
)
from persd.prompts.student import (
    onpolicy_teacher_prompt,
    prompt_text,
    refine_prompt,
    student_prompt,
    student_refine_prompt,
)

__all__ = [
    "SHIPPED",
    "PromptConfig",
    "TemplateError",
    "as_text",
    "fill",
    "load_turns",
    "onpolicy_teacher_prompt",
    "placeholders",
    "prompt_text",
    "refine_prompt",
    "render_chat",
    "render_feedback",
    "shipped_text",
    "student_prompt",
    "student_refine_prompt",
]
