"""Evaluate one student: the one entry point of ``persd eval`` and of ``persd run`` (the
gate and the evaluate stage both call ``evaluate_one``).

``evaluate_model`` samples and scores a student on a benchmark (or on given tasks, e.g. a
run's validation tasks) with the run's ``evaluate:`` settings; ``evaluate_isolated`` is the
same call with serialisable arguments, for ``isolate.run_isolated``'s own process. Both read
self-refinement prompts from the ``prompt:`` section the training rows were rendered with.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from persd.pipeline.eval_settings import eval_settings
from persd.pipeline.isolate import run_isolated

if TYPE_CHECKING:
    from persd.evaluate.multistep import EvalReport
    from persd.llm.student import StudentConfig
    from persd.pipeline.config import EvalStageConfig
    from persd.pipeline.context import RunContext
    from persd.prompts import PromptConfig
    from persd.records import Task
    from persd.sandbox import SandboxConfig


def benchmark_tasks(
    benchmark: str, cfg: EvalStageConfig, prompt: PromptConfig | None = None
) -> list[Task]:
    """The benchmark tasks a run scores: all of them, or a seeded sample of ``cfg.limit``
    (never the first N: HumanEval's first 40 are easier than the rest, 80% against 53% for
    the default student), kept in benchmark order; MBPP prompts in ``prompt.mbpp_shape``."""
    import random

    from persd.tasks import load_benchmark

    shape = prompt.mbpp_shape if prompt is not None else "docstring"
    tasks = load_benchmark(benchmark, mbpp_shape=shape)
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
        tasks = benchmark_tasks(benchmark, cfg, prompt)
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
    from persd.llm.student import StudentConfig
    from persd.pipeline.config import EvalStageConfig
    from persd.prompts import PromptConfig
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


def evaluate_one(
    ctx: RunContext,
    name: str,
    model: Path | None,
    bench: str,
    out: Path,
    tasks: Sequence[Task] | None,
) -> EvalReport:
    """One model on one benchmark (or on ``tasks``), in its own process; reused when done."""
    from persd.evaluate.multistep import EvalReport

    if (out / "report.json").exists():
        return EvalReport.model_validate_json((out / "report.json").read_text())
    settings = eval_settings(ctx.config, model, gate=tasks is not None)
    total = len(tasks) if tasks is not None else len(benchmark_tasks(bench, settings.evaluate))
    label = "validate" if tasks is not None else "eval"
    with ctx.timer.stage(f"{label} {name}"):
        report = run_isolated(
            f"{label} {name} on {bench}",
            evaluate_isolated,
            settings.student.model_dump_json(),
            settings.sandbox.model_dump_json(),
            settings.evaluate.model_dump_json(),
            bench,
            str(out),
            settings.prompt.model_dump_json(),
            json.dumps([t.model_dump(mode="json") for t in tasks]) if tasks else "null",
            on_tick=ctx.progress.start(f"{label} {name} {bench}", total),
            on_note=ctx.progress.note,
            log_path=ctx.stage_log(f"{label}-{name}-{bench}"),
        )
    return EvalReport.model_validate(report)  # crossed the process boundary as JSON data
