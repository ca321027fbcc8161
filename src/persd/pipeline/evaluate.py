"""Evaluate one student: the one entry point of ``persd eval`` and of ``persd run``.

``evaluate_model`` samples and scores a student on a benchmark (or on given tasks, e.g. a
run's validation tasks) with the run's ``evaluate:`` settings; ``evaluate_isolated`` is the
same call with serialisable arguments, for ``isolate.run_isolated``'s own process. Both read
self-refinement prompts from the ``prompt:`` section the training rows were rendered with.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from persd.evaluate.multistep import EvalReport
    from persd.llm.chat_templates import PromptConfig
    from persd.llm.student import StudentConfig
    from persd.pipeline.config import EvalStageConfig
    from persd.records import Task
    from persd.sandbox import SandboxConfig


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


def evaluate_model(
    student_cfg: StudentConfig,
    cfg: EvalStageConfig,
    sandbox_cfg: SandboxConfig,
    *,
    benchmark: str,
    out: Path | None,
    prompt: PromptConfig | None = None,
    tasks: Sequence[Task] | None = None,
    on_progress: Callable[[str, int, int], None] | None = None,
) -> EvalReport:
    """Sample and score one student; samples and report under ``out`` (resumable there)."""
    from persd.evaluate.multistep import evaluate_student
    from persd.llm.student import load_student, weights_fingerprint
    from persd.sandbox import Sandbox

    if tasks is None:
        tasks = benchmark_tasks(benchmark, cfg)
    student = load_student(student_cfg)
    try:
        with Sandbox(sandbox_cfg) as sandbox:
            return evaluate_student(
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
                out_dir=out,
                on_progress=on_progress,
                fingerprint=weights_fingerprint(student_cfg),
                prompt=prompt,
            )
    finally:
        student.close()


def evaluate_isolated(
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
    """``evaluate_model`` of serialised arguments, in a stage process; the report as a dict.
    Progress goes back as ticks of sampled tasks."""
    import json

    from persd.llm.chat_templates import PromptConfig
    from persd.llm.student import StudentConfig
    from persd.pipeline.config import EvalStageConfig
    from persd.records import Task
    from persd.sandbox import SandboxConfig

    given = json.loads(tasks_json)
    done = [0]

    def progress(stage: str, n: int, total: int) -> None:
        if stage == "sample":
            tick(n - done[0])
            done[0] = n

    report = evaluate_model(
        StudentConfig.model_validate_json(student_json),
        EvalStageConfig.model_validate_json(eval_json),
        SandboxConfig.model_validate_json(sandbox_json),
        benchmark=benchmark,
        out=Path(out),
        prompt=PromptConfig.model_validate_json(prompt_json),
        tasks=None if given is None else [Task.model_validate(t) for t in given],
        on_progress=progress,
    )
    return report.model_dump(mode="json")
