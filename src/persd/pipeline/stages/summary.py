"""The numbers a run ends with, computed from the run directory alone (so a rerun that did
nothing new reports the same table)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from persd.pipeline.rundir import GateResult, RoundSummary, RunSummary, write_summary
from persd.records import Attempt, Example, Execution, Task, TeacherCall

if TYPE_CHECKING:
    from persd.evaluate.multistep import EvalReport
    from persd.pipeline.context import RunContext


def failure_kind(execution: Execution) -> str:
    fb = execution.feedback
    if fb.status == "error":
        first = fb.first_failure
        return (first.exception if first and first.exception else fb.exception) or "error"
    return fb.status


def verified(calls: Sequence[TeacherCall], verifications: Mapping[str, Execution]) -> int:
    """How many of ``calls`` passed every test of their task."""
    return sum(1 for c in calls if c.id in verifications and verifications[c.id].feedback.passed)


def data_rules(
    calls: Sequence[TeacherCall], verifications: Mapping[str, Execution], tasks: Mapping[str, Task]
) -> dict[str, int]:
    """How many teacher programs each rule kept out of the rows or changed."""
    from persd.llm.extract import test_code_removed

    failed = [verifications[c.id] for c in calls if c.id in verifications]
    failed = [e for e in failed if not e.feedback.passed]
    scaffolded = sum(
        test_code_removed(c.raw, prompt=tasks[c.task_id].prompt, entry_point=t.entry_point)
        for c in calls
        if (t := tasks.get(c.task_id)) is not None
    )
    return {
        "failed a test (not verified, no row)": len(failed),
        "of which NameError: a name never imported or defined": sum(
            failure_kind(e) == "NameError" for e in failed
        ),
        "test/demo code removed from the program (row keeps the solution)": scaffolded,
    }


def summarise(
    *,
    tasks: int,
    tasks_removed: int,
    attempts: Sequence[Attempt],
    executions: Mapping[str, Execution],
    solutions: Sequence[TeacherCall],
    refinements: Sequence[TeacherCall],
    verifications: Mapping[str, Execution],
    datasets: Mapping[str, Sequence[Example]],
    teacher_calls_new: int,
    stage_seconds: Mapping[str, float],
    tasks_by_id: Mapping[str, Task] | None = None,
) -> RunSummary:
    ran = [executions[a.id] for a in attempts if a.id in executions]
    failures = Counter(failure_kind(e) for e in ran if not e.feedback.passed)

    calls = [*solutions, *refinements]
    return RunSummary(
        data_rules=data_rules(calls, verifications, tasks_by_id or {}),
        tasks=tasks,
        tasks_removed=tasks_removed,
        attempts=len(ran),
        attempts_passed=sum(e.feedback.passed for e in ran),
        attempts_judged_on=ran[0].feedback.test_set if ran else "seen",
        failures=dict(failures.most_common()),
        solutions=len(solutions),
        solutions_verified=verified(solutions, verifications),
        refinements=len(refinements),
        refinements_verified=verified(refinements, verifications),
        examples={name: len(rows) for name, rows in datasets.items()},
        teacher_calls_new=teacher_calls_new,
        # Paid tokens: a cached reply was paid for once, by the invocation that fetched it.
        teacher_tokens_in=sum(c.tokens_in for c in calls),
        teacher_tokens_out=sum(c.tokens_out for c in calls),
        teacher_cost_usd=sum(c.cost_usd for c in calls),
        stage_seconds=dict(stage_seconds),
    )


def round_rows(
    *,
    attempts: Sequence[Attempt],
    executions: Mapping[str, Execution],
    refinements: Sequence[TeacherCall],
    verifications: Mapping[str, Execution],
    examples: Mapping[int, int],
    trained: Mapping[int, bool],
    training: str,
    tasks_mode: str,
) -> list[RoundSummary]:
    by_round: dict[int, list[Attempt]] = {}
    for a in attempts:
        by_round.setdefault(a.round, []).append(a)
    round_of = {a.id: a.round for a in attempts}
    rows = []
    for r in sorted(by_round):
        ran = [executions[a.id] for a in by_round[r] if a.id in executions]
        fixes = [c for c in refinements if round_of.get(c.attempt_id or "") == r]
        rows.append(
            RoundSummary(
                round=r,
                tasks=len({a.task_id for a in by_round[r]}),
                attempts=len(ran),
                attempts_passed=sum(e.feedback.passed for e in ran),
                refinements=len(fixes),
                refinements_verified=verified(fixes, verifications),
                examples=examples.get(r, 0),
                trained=trained.get(r, False),
                training=training,
                tasks_mode=tasks_mode,
            )
        )
    return rows


# ---- the summary of a run --------------------------------------------------------------------


def run_summary(ctx: RunContext, datasets: dict[str, list[Example]] | None = None) -> RunSummary:
    """The run's numbers from its stage files (and ``data/`` when ``datasets`` is None)."""
    if datasets is None:
        datasets = {
            p.stem: ctx.store.dataset(p.stem, Example).read()
            for p in sorted(ctx.paths.data().glob("*.jsonl"))
        }
    tasks = ctx.tasks
    rec = ctx.store.records()
    return summarise(
        tasks=len(tasks),
        tasks_removed=len(ctx.pool.removed),
        attempts=[a for a in rec.attempts if a.task_id in tasks],
        executions=rec.executions,
        solutions=[s for s in rec.solutions if s.task_id in tasks],
        refinements=[r for r in rec.refinements if r.task_id in tasks],
        verifications=rec.verifications,
        datasets=datasets,
        teacher_calls_new=ctx.teacher_calls_new,
        stage_seconds=ctx.timer.seconds,
        tasks_by_id=tasks,
    ).model_copy(
        update={
            "rounds": round_summaries(ctx),
            "teacher_local": ctx.config.teacher.server is not None,
            "wall_seconds": ctx.timer.wall_seconds(),
        }
    )


def finish(
    ctx: RunContext,
    datasets: dict[str, list[Example]],
    gate: GateResult | None,
    evals: dict[str, dict[str, EvalReport]],
    trained: int,
) -> RunSummary:
    """The summary stage: the run's numbers, its decision, the gate's rows and each
    evaluated model against the base, written to the run directory."""
    from persd.pipeline.stages.evaluate import versus_base

    validation = len(ctx.pool.validation)
    result = run_summary(ctx, datasets).model_copy(
        update={
            "result": decision(gate, trained, validation),
            "evaluation": {
                model: {bench: r.steps[0].pass_at[1] for bench, r in by.items()}
                for model, by in evals.items()
            },  # pass@1 at step 0: the table's headline numbers
            "validation_tasks": validation,
            "gate": gate,
            "kept": gate.kept if gate else None,
            "versus_base": versus_base(ctx, list(evals)),
            # one backend scores every model, by construction
            "eval_backend": next((r.backend for by in evals.values() for r in by.values()), None),
        }
    )
    write_summary(ctx.store.root, result)
    return result


def decision(gate: GateResult | None, trained: int, validation_tasks: int) -> str:
    """The run's result in one sentence, for the summary's first line, the CLI and the
    report's first card."""
    if gate is not None:
        return gate.verdict
    if not trained:
        return "the base is the result: nothing was trained"
    if not validation_tasks:
        return (
            "no model was judged: the pool held out no validation tasks (pool.validation: 0), "
            "so the trained models are listed but none is kept over the base"
        )
    return "the base is the result: the held-out gate did not run (training or evaluation off)"


def round_summaries(ctx: RunContext) -> list[RoundSummary]:
    """One row per round that has attempts (none when the run has a single round)."""
    from persd.pipeline.rundir import finished
    from persd.pipeline.store import StageFile

    rounds = ctx.config.rounds
    if rounds.count == 1:
        return []
    variant = ctx.config.round_variant
    rec = ctx.store.records()
    return round_rows(
        attempts=[a for a in rec.attempts if a.task_id in ctx.tasks],
        executions=rec.executions,
        refinements=rec.refinements,
        verifications=rec.verifications,
        examples={
            r: len(StageFile(ctx.paths.data(r) / f"{variant}.jsonl", Example).read())
            for r in range(rounds.count)
        },
        trained={r: finished(ctx.paths.model(variant, r)) for r in range(rounds.count)},
        training=rounds.training,
        tasks_mode=rounds.tasks,
    )
