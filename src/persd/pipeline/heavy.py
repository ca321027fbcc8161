"""Training and evaluation of one model, as plain functions of serialisable arguments, so
``isolate.run_isolated`` can run each in its own process."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from persd.pipeline.config import EvalStageConfig
    from persd.records import Task


def train_variant(
    settings_json: str,
    data_json: str,
    base_model: str,
    out: str,
    *,
    tick: Callable[[int], None],
    note: Callable[[str], None],
) -> str:
    """Fine-tune ``base_model`` on training sets (a JSON list of JSONL paths); returns the
    adapter/model directory. Steps and losses go back to the parent as notes, so a long
    training run in ``persd run`` shows where it is."""
    import json

    from persd.train.config import TrainConfig
    from persd.train.sft import train

    data = [Path(p) for p in json.loads(data_json)]
    progress = _StepNotes(note)
    result = train(
        TrainConfig.model_validate_json(settings_json),
        data,
        base_model,
        Path(out),
        progress=progress,
    )
    return str(result.model_dir)


class _StepNotes:
    """A training ``Progress`` for a stage process: every loss line becomes a note that says
    how many optimizer steps are done of how many."""

    def __init__(self, note: Callable[[str], None]) -> None:
        self._note = note
        self._total = 0

    def start(self, stage: str, total: int) -> Callable[[int], None]:
        self._total = total
        self._note(f"{stage}: {total} optimizer steps")
        return lambda n: None

    def note(self, message: str) -> None:
        self._note(f"{message} (of {self._total} steps)" if self._total else message)


def evaluate_model(
    student_json: str,
    sandbox_json: str,
    eval_json: str,
    benchmark: str,
    out: str,
    prompt_json: str = "{}",
    tasks_json: str = "null",
    *,
    tick: Callable[[int], None],
    note: Callable[[str], None],
) -> dict:
    """Sample and score one student on one benchmark (or on the given tasks, e.g. a run's
    validation tasks); the report as a dict. Self-refinement prompts come from the
    run's ``prompt:`` section, the one its training rows were rendered with."""
    import json

    from persd.evaluate.multistep import evaluate_student
    from persd.llm.chat_templates import PromptConfig
    from persd.llm.student import StudentConfig, load_student, weights_fingerprint
    from persd.pipeline.config import EvalStageConfig
    from persd.records import Task
    from persd.sandbox import Sandbox, SandboxConfig

    cfg = EvalStageConfig.model_validate_json(eval_json)
    student_cfg = StudentConfig.model_validate_json(student_json)
    given = json.loads(tasks_json)
    if given is None:
        tasks = benchmark_tasks(benchmark, cfg)
    else:
        tasks = [Task.model_validate(t) for t in given]
    done = [0]

    def progress(stage: str, n: int, total: int) -> None:
        if stage == "sample":
            tick(n - done[0])
            done[0] = n

    student = load_student(student_cfg)
    try:
        with Sandbox(SandboxConfig.model_validate_json(sandbox_json)) as sandbox:
            report = evaluate_student(
                student,
                tasks,
                sandbox,
                benchmark=benchmark,
                n=cfg.n,
                temperature=cfg.temperature,
                refine_steps=cfg.refine_steps,
                chat=student_cfg.chat,
                max_new_tokens=cfg.max_new_tokens,
                seed=cfg.seed,
                out_dir=Path(out),
                on_progress=progress,
                fingerprint=weights_fingerprint(student_cfg),
                prompt=PromptConfig.model_validate_json(prompt_json),
            )
    finally:
        student.close()
    return report.model_dump(mode="json")


def benchmark_tasks(benchmark: str, cfg: EvalStageConfig) -> list[Task]:
    """The benchmark tasks a run scores: all of them, or a seeded sample of ``cfg.limit``
    (never the first N: HumanEval's first 40 are easier than the rest, 80% against 53% for
    the default student), kept in benchmark order."""
    import random

    from persd.tasks import load_benchmark

    tasks = load_benchmark(benchmark)
    if not cfg.limit or cfg.limit >= len(tasks):
        return list(tasks)
    picked = sorted(random.Random(cfg.sample_seed).sample(range(len(tasks)), cfg.limit))
    return [tasks[i] for i in picked]
