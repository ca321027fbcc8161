"""The prompt a student is trained on is the prompt it is served, by construction.

Two seams: the refinement prompt (training rows and evaluation's self-refinement render it from
the one ``prompt:`` section), and the token ids (the trainer's prompt ids are the ids every
serving backend feeds the model).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest

from persd.evaluate.multistep import evaluate_student
from persd.llm.base import Generation, Message, Prompt, SamplingParams, Student
from persd.pipeline.stages.build import build_datasets
from persd.prompts import PromptConfig, student_prompt
from persd.records import Attempt, Example, Execution, TeacherCall
from persd.sandbox import Job, Sandbox, SandboxConfig
from persd.tasks import load_humaneval

# Prints enough that its feedback is longer than the cut below.
WRONG = (
    "def truncate_number(number: float) -> float:\n    print('debug ' * 30)\n    return number\n"
)
RIGHT = "def truncate_number(number: float) -> float:\n    return number % 1.0\n"


class ScriptedStudent(Student):
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


# ---- token ids: trainer vs serving backends ------------------------------------------------


def _trainer_ids(gguf: Path, rows: list[Example], tmp_path: Path) -> list[tuple[list, list]]:
    """(prompt ids, completion ids) as ``persd train`` feeds TRL: label -100 on the prompt."""
    from persd.llm.render import renderer_for
    from persd.llm.student_hf import convert_gguf_to_hf
    from persd.train.config import TrainConfig
    from persd.train.sft import make_trainer

    cfg = TrainConfig(format="chat", epochs=1, dtype="float32")
    trainer, _ = make_trainer(
        cfg, rows, str(convert_gguf_to_hf(gguf)), tmp_path / "t", renderer=renderer_for(str(gguf))
    )
    out = []
    for item in trainer.train_dataset:
        ids = item["input_ids"]
        mask = (
            item["completion_mask"]
            if "completion_mask" in item
            else [int(label != -100) for label in item["labels"]]
        )
        first = mask.index(1)
        assert all(m == 1 for m in mask[first:])
        out.append((ids[:first], ids[first:]))
    return out


def _rows() -> tuple[list[Example], list[tuple[Message, ...]]]:
    """A text2code row and a refinement row of HumanEval/2, built as ``persd run`` builds them;
    their prompts are indented code, where tokenizers disagree."""
    task = next(t for t in load_humaneval() if t.entry_point == "truncate_number")
    with Sandbox(SandboxConfig(workers=2)) as sandbox:
        refine = _refine_row(task, PromptConfig(), sandbox)
    text2code = refine.model_copy(
        update={"prompt": student_prompt(task, chat=True)[0].content, "format": "text2code"}
    )
    rows = [text2code, refine]
    return rows, [(Message(role="user", content=r.prompt),) for r in rows]


def test_trainer_and_backends_feed_the_same_token_ids(smollm2_gguf: Path, tmp_path: Path) -> None:
    """SmolLM2: transformers' tokenizer rebuilt from the GGUF splits "\\n    0" unlike llama.cpp
    (66 of 352 texts differ); the trainer tokenised with it while llama.cpp served, so the
    student learnt on ids it was never sampled from. Now both come from one renderer."""
    pytest.importorskip("trl")
    pytest.importorskip("llama_cpp")
    from llama_cpp import Llama
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    from persd.llm.student import StudentConfig, load_student

    rows, prompts = _rows()
    trained = _trainer_ids(smollm2_gguf, rows, tmp_path)
    served = {}
    for backend in ("llama_cpp", "transformers"):
        cfg = StudentConfig(model=str(smollm2_gguf), backend=backend, dtype="float32")
        student = load_student(cfg)
        try:
            served[backend] = [student.renderer.ids(p) for p in prompts]
        finally:
            student.close()
    assert served["llama_cpp"] == served["transformers"] == [p for p, _ in trained]
    # ...and those are the ids llama-cpp-python's own chat handler feeds for these messages.
    llm = Llama(model_path=str(smollm2_gguf), vocab_only=True, verbose=False)
    fmt = Jinja2ChatFormatter(
        template=llm.metadata["tokenizer.chat_template"],
        eos_token=llm._model.token_get_text(llm.token_eos()),
        bos_token=llm._model.token_get_text(llm.token_bos()),
    )
    for (prompt_ids, completion_ids), row, messages in zip(trained, rows, prompts, strict=True):
        res = fmt(messages=[m.model_dump() for m in messages])
        ids = llm.tokenize(res.prompt.encode(), add_bos=not res.added_special, special=True)
        assert prompt_ids == ids
        # The completion ends with the template's end of turn, learnt as the way to stop.
        text = llm.detokenize(completion_ids, special=True).decode()
        assert text.startswith(row.completion) and text.rstrip().endswith("<|im_end|>")


def test_a_served_prompt_is_what_the_student_was_sampled_from(smollm2_gguf: Path) -> None:
    """llama.cpp generation from the renderer's ids gives what its chat handler gave."""
    pytest.importorskip("llama_cpp")
    from persd.llm.student import StudentConfig, load_student

    task = next(t for t in load_humaneval() if t.entry_point == "truncate_number")
    student = load_student(StudentConfig(model=str(smollm2_gguf), backend="llama_cpp"))
    try:
        ours = student.generate(
            [student_prompt(task, chat=True)], SamplingParams(max_new_tokens=40)
        )
        student.llm.reset()
        messages = [m.model_dump() for m in student_prompt(task, chat=True)]
        theirs = student.llm.create_chat_completion(
            messages, max_tokens=40, temperature=0.0, top_k=0, min_p=0.0, repeat_penalty=1.0
        )
    finally:
        student.close()
    assert ours[0][0].text == theirs["choices"][0]["message"]["content"]
