"""``persd run`` and one command per stage. Thin: build the Loop, draw progress, print tables."""

from __future__ import annotations

from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from persd.cli.common import console, err_console
from persd.cli.progress import RichProgress, progress_bars
from persd.config import RunConfig, load_config
from persd.pipeline.plan import make_plan
from persd.pipeline.preflight import run_checks
from persd.pipeline.run import Loop
from persd.pipeline.rundir import RunSummary

ConfigArg = Annotated[
    Path | None, typer.Argument(help="YAML run config; omitted: the built-in offline default.")
]
RunDirOpt = Annotated[
    Path | None,
    typer.Option("--run-dir", "-o", help="Run directory (default: runs/<config name>)."),
]
ForceOpt = Annotated[
    bool, typer.Option("--force", help="Continue in a run dir made with a different config.")
]


def default_config() -> Path:
    """The shipped config ``persd run`` uses when given none."""
    return Path(str(resources.files("persd.pipeline").joinpath("default.yaml")))


def _loop(
    config: Path | None,
    run_dir: Path | None,
    force: bool,
    progress: RichProgress,
    *,
    dry_run: bool = False,
    verbose: bool = False,
) -> Loop:
    cfg: RunConfig = load_config(config or default_config())
    where = run_dir or Path("runs") / (config.stem if config else "default")
    return Loop(cfg, where, progress=progress, force=force, dry_run=dry_run, verbose=verbose)


# How an attempt's failure reads in the table: a status, or an exception's own name.
FAILURE_LABELS = {
    "failed": "wrong result (a test's assert failed)",
    "error": "raised an error",
    "syntax_error": "syntax error",
    "timeout": "timed out",
    "memory": "out of memory",
    "exited_early": "exited early",
    "killed": "killed",
}


def summary_table(s: RunSummary) -> Table:
    t = Table(title="persd run", show_header=True)
    t.add_column("")
    t.add_column("value", justify="right")
    if s.result:
        t.add_row("[bold]result[/bold]", f"[bold]{s.kept or 'base'}[/bold]")
    t.add_row("tasks (removed)", f"{s.tasks} ({s.tasks_removed})")
    t.add_row(
        f"attempts passed ({s.attempts_judged_on} tests)",
        f"{s.attempts_passed}/{s.attempts} ({s.attempt_pass_rate:.1%})",
    )
    for kind, n in s.failures.items():
        t.add_row(f"  attempts failed: {FAILURE_LABELS.get(kind, kind)}", str(n))
    _teacher_rows(t, s)
    for r in s.rounds:
        t.add_row(
            f"round {r.round} ({r.tasks} tasks)",
            f"passed {r.attempts_passed}/{r.attempts}, accepted "
            f"{r.refinements_verified}/{r.refinements}, {r.examples} examples"
            + ("" if r.trained else ", not trained"),
        )
    _gate_rows(t, s)
    for model, by_bench in s.evaluation.items():
        standing = s.standing(model)
        for bench, p1 in by_bench.items():
            vs = s.versus_base.get(model, {}).get(bench)
            extra = f"  +{vs.gained}/−{vs.lost} vs base, p={vs.p_value:.2g}" if vs else ""
            name = f"{model} ({standing})" if standing else model
            t.add_row(f"pass@1 {bench}: {name}", f"{100 * p1:.1f}%{extra}")
    if (floor := s.floor_note()) is not None:
        t.add_row("noise floor", floor)
    for stage, sec in s.stage_seconds.items():
        t.add_row(f"  time: {stage}", _duration(sec))
    if s.wall_seconds is not None:
        t.add_row("time: the whole run (every invocation)", _duration(s.wall_seconds))
    return t


def _teacher_rows(t: Table, s: RunSummary) -> None:
    t.add_row("teacher solutions verified", f"{s.solutions_verified}/{s.solutions}")
    t.add_row(
        "refinements accepted",
        f"{s.refinements_verified}/{s.refinements} ({s.acceptance_rate:.1%})",
    )
    for rule, n in s.data_rules.items():
        t.add_row(f"  teacher programs: {rule}", str(n))
    for name, n in s.examples.items():
        t.add_row(f"  examples: {name}", str(n))
    t.add_row("teacher tokens in / out", f"{s.teacher_tokens_in} / {s.teacher_tokens_out}")
    t.add_row("teacher calls (this invocation)", str(s.teacher_calls_new))
    per = s.cost_per_accepted
    cost = f"${s.teacher_cost_usd:.4f}" + (f" (${per:.5f})" if per is not None else "")
    if s.teacher_local and not s.teacher_cost_usd:
        cost = "local, no cost"
    t.add_row("teacher cost (per accepted)", cost)


def _gate_rows(t: Table, s: RunSummary) -> None:
    if s.validation_tasks:
        t.add_row("validation tasks (held out)", str(s.validation_tasks))
    if s.gate is None:
        return
    g = s.gate
    t.add_row("validation: base", f"{g.base_passed}/{g.validation_tasks}")
    for row in g.rows:
        p = row.vs_base
        t.add_row(
            f"validation: {row.candidate.label}",
            f"{p.passed}/{p.tasks}  +{p.gained}/−{p.lost} p={p.p_value:.2g}  {row.decision}",
        )
    t.add_row("gate rule (to replace the base)", g.rule)


def _duration(sec: float) -> str:
    return f"{sec:.1f} s" if sec < 120 else f"{sec / 60:.1f} min ({sec:,.0f} s)"


def run(
    config: ConfigArg = None,
    run_dir: RunDirOpt = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print the plan and a cost estimate; run nothing.")
    ] = False,
    force: ForceOpt = False,
    train: Annotated[bool, typer.Option(help="Fine-tune on train.variants after building.")] = True,
    evaluate: Annotated[bool, typer.Option(help="Score base and trained students.")] = True,
    verbose: Annotated[
        bool,
        typer.Option(
            "--verbose", "-v", help="Show training and evaluation libraries' own output too."
        ),
    ] = False,
) -> None:
    """Run the whole loop: attempt, execute, refine, verify, build data, train, evaluate.

    Resumable: rerun the same command after an interruption and it continues.
    """
    with progress_bars(err_console) as bars:
        loop = _loop(config, run_dir, force, RichProgress(bars), dry_run=dry_run, verbose=verbose)
        # In seconds, before any stage: a wrong teacher URL or key fails now (one line naming
        # the key), not after minutes of student work.
        checks = run_checks(loop.config, loop.store.root, stop_at_first=not dry_run)
        if dry_run:
            bars.stop()
            for check in checks:
                mark = "[green]ok[/green]" if check.ok else "[red]FAILED[/red]"
                console.print(f"preflight {check.name}: {mark} {check.detail}")
            plan = make_plan(loop)
            t = Table(title=f"plan for {loop.store.root}")
            t.add_column("")
            t.add_column("value", justify="right")
            t.add_row("tasks", str(plan.tasks))
            t.add_row("attempts to sample", str(plan.attempts_missing))
            if plan.synth_calls:
                t.add_row("teacher test-input calls", str(plan.synth_calls))
            t.add_row("teacher solve calls", str(plan.solve_calls))
            t.add_row("teacher refine calls (at most)", str(plan.refine_calls_max))
            t.add_row("teacher input tokens (at most)", str(plan.tokens_in))
            t.add_row("teacher output tokens (at most)", str(plan.tokens_out_max))
            cost = (
                f"${plan.cost_typical_usd:.2f} typical, ${plan.cost_max_usd:.2f} at most"
                if plan.price_known
                else "unknown price (set teacher.price_per_mtok_in/out)"
            )
            t.add_row("teacher cost", cost)
            console.print(t)
            return
        summary = loop.run(train=train, evaluate=evaluate)
    console.print(summary_table(summary))
    if summary.result:
        console.print(f"[bold]result:[/bold] {summary.result}", soft_wrap=True)
    console.print(f"run directory: {loop.store.root}")
    _write_report(loop.store.root)


def _write_report(run_dir: Path) -> None:
    """The HTML report of a finished run; a report that cannot be drawn (the ``report`` extra
    missing) is a note, never a failure of the run it describes."""
    from persd.report import ReportError, write_report

    try:
        console.print(f"report: {write_report(run_dir)}", soft_wrap=True)
    except ReportError as e:
        console.print(f"[yellow]no report:[/] {e}", soft_wrap=True)


def _stage(name: str, doc: str, *before: str) -> Callable[..., None]:
    """A command that runs one stage of the loop (after ``before``, the stages it cannot do
    without: an attempt needs its tasks' tests synthesised)."""

    def command(config: ConfigArg = None, run_dir: RunDirOpt = None, force: ForceOpt = False):
        with progress_bars(err_console) as bars:
            loop = _loop(config, run_dir, force, RichProgress(bars))
            for stage in (*before, name):
                getattr(loop, stage)()
        console.print(summary_table(loop.summary()))

    command.__doc__ = doc
    command.__name__ = name
    return command


STAGE_COMMANDS = {
    "synthesize": _stage(
        "synthesize", "Stage 0: tests for reference-only pool tasks (teacher inputs)."
    ),
    "attempt": _stage(
        "attempt", "Stage 1: the student attempts every task (local weights).", "synthesize"
    ),
    "execute": _stage("execute", "Stage 2: run attempts against SEEN tests (all: attempt.judge)."),
    "refine": _stage("teach", "Stage 3: teacher solutions and refinements of failures."),
    "verify": _stage("verify", "Stage 4: run teacher code against ALL training tests."),
    "build": _stage("build", "Stage 5: write the training sets (data/<variant>.jsonl)."),
}
