"""Evaluate one student: the one entry point of ``persd eval`` and of ``persd run``; and the
run's two uses of it, the held-out gate (``validate``) and the evaluate stage.

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

from persd.evaluate.paired import Paired, paired
from persd.pipeline.eval_settings import eval_settings
from persd.pipeline.gate import GateResult, candidates, decide, per_task
from persd.pipeline.isolate import run_isolated
from persd.pipeline.training import trained_models

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


# ---- the validation gate and the evaluation stage of a run -----------------------------------


def evaluate_one(
    ctx: RunContext,
    name: str,
    model: Path | None,
    bench: str,
    out: Path,
    tasks: Sequence[Task] | None,
) -> dict:
    """One model on one benchmark (or on ``tasks``), in its own process; reused when done."""
    if (out / "report.json").exists():
        return json.loads((out / "report.json").read_text())
    settings = eval_settings(ctx.config, model, gate=tasks is not None)
    total = len(tasks) if tasks is not None else len(benchmark_tasks(bench, settings.evaluate))
    label = "validate" if tasks is not None else "eval"
    with ctx.timer.stage(f"{label} {name}"):
        return run_isolated(
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


def validate(ctx: RunContext, trained: dict[str, Path]) -> GateResult | None:
    """The held-out gate (gate.py): base and every trained checkpoint on the validation
    tasks; the decision is written to ``gate.json``."""
    tasks = ctx.pool.validation
    if not tasks or not trained:
        return None
    root = ctx.store.root / "validation"
    evaluate_one(ctx, "base", None, "validation", root / "base", tasks)
    base = per_task(root / "base")
    scored = []
    for name, final in trained.items():
        for cand in candidates(name, final, epochs=ctx.config.gate.epochs):
            out = root / cand.label
            evaluate_one(ctx, cand.label, Path(cand.path), "validation", out, tasks)
            scored.append((cand, per_task(out)))
    result = decide(base, scored, ctx.config.gate)
    (ctx.store.root / "gate.json").write_text(result.model_dump_json(indent=2))
    ctx.progress.note(f"gate: {result.verdict}")
    return result


def evaluate_models(
    ctx: RunContext, trained: dict[str, Path] | None = None, gate: GateResult | None = None
) -> dict[str, dict]:
    """The evaluate stage: the base student and each trained model with the same settings.
    With a gate, each variant is scored at the checkpoint the gate found best for it."""
    if trained is None:
        trained = trained_models(ctx)
    if gate is None and (ctx.store.root / "gate.json").exists():
        gate = GateResult.model_validate_json((ctx.store.root / "gate.json").read_text())
    if gate is not None:
        trained = _at_best_checkpoint(trained, gate)
    results: dict[str, dict] = {}
    for name, model in [("base", None), *trained.items()]:
        for bench in ctx.config.evaluate.benchmarks:
            out = ctx.store.root / "eval" / name / bench
            results.setdefault(name, {})[bench] = evaluate_one(ctx, name, model, bench, out, None)
    return results


def _at_best_checkpoint(trained: dict[str, Path], gate: GateResult) -> dict[str, Path]:
    """Each variant at its best checkpoint, named for it (persd_combined@epoch1)."""
    best = {
        row.candidate.variant: row.candidate
        for row in gate.rows
        if row.decision != "not its variant's best"
    }
    return {
        (best[n].label if n in best else n): (Path(best[n].path) if n in best else p)
        for n, p in trained.items()
    }


def versus_base(ctx: RunContext, names: Sequence[str]) -> dict[str, dict[str, Paired]]:
    """Each evaluated model against the base, per benchmark, paired per task."""
    out: dict[str, dict[str, Paired]] = {}
    for bench in ctx.config.evaluate.benchmarks:
        base_dir = ctx.store.root / "eval" / "base" / bench
        if not (base_dir / "samples_base.jsonl").exists():
            continue
        base = per_task(base_dir)
        for name in names:
            model_dir = ctx.store.root / "eval" / name / bench
            if name != "base" and (model_dir / "samples_base.jsonl").exists():
                out.setdefault(name, {})[bench] = paired(base, per_task(model_dir))
    return out


def backend(evals: dict[str, dict]) -> str | None:
    """The backend the evaluation reports say scored them (one for all, by construction)."""
    return next((r.get("backend") for by in evals.values() for r in by.values()), None)


def pass1(evals: dict[str, dict]) -> dict[str, dict[str, float]]:
    """model -> benchmark -> pass@1 at step 0 (the table's headline numbers)."""
    return {
        model: {bench: r["steps"][0]["pass_at"]["1"] for bench, r in by_bench.items()}
        for model, by_bench in evals.items()
    }
