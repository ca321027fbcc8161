"""The prompt a student is trained on is the prompt it is served, by construction.

Two seams: the refinement prompt (training rows and evaluation's self-refinement render it from
the one ``prompt:`` section), and the token ids (the trainer's prompt ids are the ids every
serving backend feeds the model).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from persd.evaluate.multistep import evaluate_student
from persd.llm.base import Generation, Message, Prompt, SamplingParams
from persd.llm.chat_templates import PromptConfig
from persd.llm.prompts import student_prompt
from persd.pipeline.build import build_datasets
from persd.records import Attempt, Example, Execution, TeacherCall
from persd.sandbox import Job, Sandbox, SandboxConfig
from persd.tasks import load_humaneval

# Prints enough that its feedback is longer than the cut below.
WRONG = (
    "def truncate_number(number: float) -> float:\n    print('debug ' * 30)\n    return number\n"
)
RIGHT = "def truncate_number(number: float) -> float:\n    return number % 1.0\n"


class ScriptedStudent:
    """Answers every prompt with one fixed program and records what it was asked: the test
    is about which prompt reaches the model, not about the model."""

    model_id = "scripted"

    def __init__(self, program: str) -> None:
        self.reply = f"```python\n{program}```"
        self.prompts: list[Prompt] = []

    def generate(self, prompts: Sequence[Prompt], params: SamplingParams) -> list[list[Generation]]:
        self.prompts += prompts
        gen = Generation(text=self.reply, tokens_in=1, tokens_out=1, finish_reason="stop")
        return [[gen] * params.n for _ in prompts]

    def close(self) -> None:
        pass


def _refine_row(task, settings: PromptConfig, sandbox: Sandbox) -> Example:
    """The PERsD-refine training row for ``WRONG``, built as ``persd run`` builds it."""
    seen = sandbox.run(Job.for_task(task, WRONG, test_set="seen"))
    attempt = Attempt(
        id=f"{task.id}#r0a0", task_id=task.id, model_id="s", prompt="p", raw=WRONG, code=WRONG
    )
    fix = TeacherCall(
        id=f"{attempt.id}#f0", task_id=task.id, attempt_id=attempt.id, model_id="t",
        messages=(), raw=RIGHT, code=RIGHT,
    )  # fmt: skip
    verified = sandbox.run(Job.for_task(task, RIGHT, test_set="all"))
    built = build_datasets(
        [task],
        [attempt],
        {attempt.id: Execution(id=attempt.id, task_id=task.id, feedback=seen)},
        [],
        [fix],
        {fix.id: Execution(id=fix.id, task_id=task.id, feedback=verified)},
        variants=("persd_refine",),
        chat=True,
        student_prompt=lambda t: student_prompt(t, chat=True),
        prompt_config=settings,
    )
    (row,) = built.rows["persd_refine"]
    return row


def test_evaluation_refines_with_the_prompt_training_rows_hold(tmp_path: Path) -> None:
    task = next(t for t in load_humaneval() if t.entry_point == "truncate_number")
    template = tmp_path / "my_refine.txt"
    template.write_text("=== user ===\nFix it.\n{{task}}\n---\n{{code}}\n---\n{{feedback}}\n")
    # A template and a feedback cut of the user's: evaluation used its own (student_refine,
    # 2000 characters) whatever the run's training rows were rendered with.
    settings = PromptConfig(refine_template=str(template), feedback_max_chars=120)
    student = ScriptedStudent(WRONG)
    with Sandbox(SandboxConfig(workers=2)) as sandbox:
        row = _refine_row(task, settings, sandbox)
        evaluate_student(
            student, [task], sandbox, benchmark="humaneval", refine_steps=1, prompt=settings
        )
    text2code, refine, resample = student.prompts
    assert refine == (Message(role="user", content=row.prompt),)
    assert row.prompt.startswith("Fix it.") and "[...truncated]" in row.prompt
    assert text2code == resample == student_prompt(task, chat=True)
