"""Gather what a report shows from a run directory: the stage files (through ``RunStore``),
``summary.json``, training logs and evaluation reports. Missing parts become notes, never
errors: a report of a run stopped after its first stage is still a report."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from persd.evaluate.multistep import EvalReport
from persd.pipeline.rundir import RunPaths, RunSummary, read_summary
from persd.pipeline.stages.summary import failure_kind, summarise
from persd.pipeline.store import STAGE_FILES, RunStore, StageFile
from persd.records import Example, Execution, TeacherCall
from persd.report.cases import pick_cases
from persd.report.data import (
    EvalRun,
    ReportData,
    ReportError,
    StageCount,
    TeacherUse,
    Verdicts,
)
from persd.report.training import training_runs

FEEDBACK_CHARS = 1200  # prompt.feedback_max_chars's default, for configs that predate it
# The summary fields a report takes from summary.json rather than recounting the stage files.
RUN_ONLY = {
    "teacher_local",
    "wall_seconds",
    "kept",
    "rounds",
    "validation_tasks",
    "gate",
    "eval_backend",
    "versus_base",
}


def collect(run_dir: Path, *, cases: int = 3) -> ReportData:
    """Everything the report shows, read from ``run_dir``."""
    config_path = RunPaths(run_dir).config
    if not run_dir.is_dir():
        raise ReportError(f"{run_dir}: no such directory")
    if not config_path.is_file():
        raise ReportError(
            f"{run_dir}: not a run directory (no config.yaml); give the directory `persd run` "
            "wrote (default: runs/<config name>)"
        )
    config_text = config_path.read_text(encoding="utf-8")
    config = _mapping(config_text)
    saved = read_summary(run_dir) or RunSummary(tasks=0)  # the stage files say the rest
    store = RunStore(run_dir)
    # A report may read a run that is still going: never cut the line a stage is writing.
    rec = store.records(repair=False)
    attempts, executions, verifications = rec.attempts, rec.executions, rec.verifications
    solutions, refinements = rec.solutions, rec.refinements
    rows = {name: getattr(rec, name) for name, _, _ in STAGE_FILES}
    datasets = {
        p.stem: _snapshot(store.dataset(p.stem, Example))
        for p in sorted(RunPaths(run_dir).data().glob("*.jsonl"))
    }
    stages = [
        StageCount(stage=name, file=f"{name}.jsonl", rows=len(rows[name]))
        for name, _, _ in STAGE_FILES
    ]
    stages += [
        StageCount(stage=f"data: {name}", file=f"data/{name}.jsonl", rows=len(examples))
        for name, examples in datasets.items()
    ]
    summary = summarise(
        tasks=saved.tasks or len({a.task_id for a in attempts}),
        tasks_removed=saved.tasks_removed,
        attempts=attempts,
        executions=executions,
        solutions=solutions,
        refinements=refinements,
        verifications=verifications,
        datasets=datasets,
        teacher_calls_new=0,  # a report makes none
        stage_seconds=saved.stage_seconds,
    )
    # What only the run knew when it finished: its decision, its gate, its evaluations.
    summary = summary.model_copy(update={k: getattr(saved, k) for k in RUN_ONLY} | _result(saved))
    notes: list[str] = []
    evals = _evals(run_dir, notes)
    teach = config.get("teach") or {}
    train = config.get("train") or {}
    return ReportData(
        run_dir=str(run_dir),
        config_text=config_text,
        settings=_settings(config),
        summary=summary,
        stages=stages,
        teacher=[_use("solutions", solutions), _use("refinements", refinements)],
        verdicts=[
            _verdicts("solutions", solutions, verifications),
            _verdicts("refinements", refinements, verifications),
        ],
        training=training_runs(run_dir, list(train.get("variants") or [])),
        evals=evals,
        cases=pick_cases(
            refinements,
            {a.id: a for a in attempts},
            executions,
            verifications,
            n=cases,
            feedback_chars=int(
                (config.get("prompt") or {}).get("feedback_max_chars")
                or teach.get("feedback_max_chars")
                or FEEDBACK_CHARS
            ),
        ),
        notes=notes,
    )


def _snapshot(stage: StageFile) -> list:
    # A report may read a run that is still going: never cut the line a stage is writing.
    return stage.read(repair=False)


def _mapping(text: str) -> dict[str, Any]:
    # Read leniently: a run made by an older persd must still get a report, so the config is
    # not validated against today's RunConfig; only the few keys used here are read.
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError:
        return {}
    return data if isinstance(data, dict) else {}


# (label, dotted config key): what a reader needs before the numbers make sense
SETTINGS = (
    ("student", "student.model"),
    ("teacher", "teacher.model"),
    ("task pool", "pool.source"),
    ("pool size (limit)", "pool.limit"),
    ("attempts per task", "attempt.n"),
    ("attempt temperature", "attempt.temperature"),
    ("teacher refine template", "teach.refine_template"),
    ("student refine template", "prompt.refine_template"),
    ("trained variants", "train.variants"),
    ("training method", "train.method"),
    ("evaluated on", "evaluate.benchmarks"),
    ("evaluation tasks (limit)", "evaluate.limit"),
    ("refinement steps at evaluation", "evaluate.refine_steps"),
)


def _settings(config: Mapping[str, Any]) -> dict[str, str]:
    out: dict[str, str] = {}
    for label, key in SETTINGS:
        value: Any = config
        for part in key.split("."):
            value = value.get(part) if isinstance(value, Mapping) else None
        if isinstance(value, list):
            value = ", ".join(str(v) for v in value) or "(none)"
        if value is None:
            value = "(all)" if key.endswith("limit") else "(not set)"
        out[label] = str(value)
    return out


def _result(saved: RunSummary) -> dict[str, Any]:
    """A summary.json older than ``result``: the gate's verdict was its decision."""
    return {"result": saved.result or (saved.gate.verdict if saved.gate else "")}


def _use(kind: str, calls: Sequence[TeacherCall]) -> TeacherUse:
    fetched = [c for c in calls if not c.cached]
    return TeacherUse(
        kind=kind,
        calls=len(calls),
        cached=len(calls) - len(fetched),
        tokens_in=sum(c.tokens_in for c in calls),
        tokens_out=sum(c.tokens_out for c in calls),
        cost_usd=sum(c.cost_usd for c in calls),
        latency_s=sum(c.latency_s for c in fetched) / len(fetched) if fetched else 0.0,
    )


def _verdicts(
    kind: str, calls: Sequence[TeacherCall], verifications: Mapping[str, Execution]
) -> Verdicts:
    counts: Counter[str] = Counter()
    for c in calls:
        v = verifications.get(c.id)
        if v is None:
            counts["not verified"] += 1
        else:
            counts["passed" if v.feedback.passed else failure_kind(v)] += 1
    ordered = {"passed": counts.pop("passed")} if "passed" in counts else {}
    return Verdicts(kind=kind, statuses=ordered | dict(counts.most_common()))


def _evals(run_dir: Path, notes: list[str]) -> list[EvalRun]:
    """Every evaluation report in the run directory: ``eval/<model>/<benchmark>/`` from
    ``persd run``, and any other ``<dir>/<model>/report.json`` a user evaluated into it."""
    runs: list[EvalRun] = []
    for path in sorted(run_dir.rglob("report.json")):
        rel = path.relative_to(run_dir)
        if rel.parts[0] in ("models", "logs") or len(rel.parts) < 2:
            continue
        try:
            report = EvalReport.model_validate_json(path.read_text(encoding="utf-8"))
        except (OSError, ValueError, ValidationError) as e:
            reason = e.errors()[0]["msg"] if isinstance(e, ValidationError) else str(e)
            notes.append(f"{rel}: left out, not an evaluation report ({reason})")
            continue
        if not report.steps:
            notes.append(f"{rel}: left out, holds no scores")
            continue
        model = rel.parts[1] if rel.parts[0] == "eval" and len(rel.parts) > 2 else rel.parts[-2]
        run = EvalRun(model=model, path=str(rel), report=report)
        if any((r.model, r.benchmark) == (model, run.benchmark) for r in runs):
            run = run.model_copy(update={"model": f"{model} ({rel.parent.parent})"})
        runs.append(run)
    # The run's own evaluations first, then any a user added; the base student first.
    return sorted(
        runs,
        key=lambda r: (r.path.split("/")[0] != "eval", r.benchmark, r.model != "base", r.model),
    )
