"""``persd pool build``: turn a file of instruction + signature + reference rows into a task
pool with synthesised tests (docs/TASKS.md, "Building a pool")."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from persd.cli.common import console, err_console
from persd.cli.progress import RichProgress, progress_bars

pool_app = typer.Typer(
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    add_completion=False,
    help="Task pools: build one from instruction + signature + reference rows; show its tasks.",
)


@pool_app.command("build")
def build(
    source: Annotated[
        Path, typer.Argument(help="JSONL rows: prompt (docstring + signature) and completion.")
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="Build directory (resumable).")],
    config: Annotated[
        Path | None,
        typer.Option(
            "--config", "-c", help="Run config: its teacher:, synth:, sandbox: and pool: keys."
        ),
    ] = None,
    limit: Annotated[
        int | None, typer.Option(help="A seeded sample of this many tasks (all by default).")
    ] = None,
    seed: Annotated[
        int, typer.Option(help="Seed of --limit's sample and of the hand-check ids.")
    ] = 0,
    name: Annotated[
        str | None, typer.Option(help="Task id prefix and source name (default: the file's stem).")
    ] = None,
    examples: Annotated[
        bool,
        typer.Option(
            help="Show the seen tests as >>> examples in each prompt's docstring "
            "(--no-examples: the instruction and signature alone, the paper's prompt)."
        ),
    ] = True,
) -> None:
    """Build a task pool: tests from the teacher's inputs and the reference's outputs."""
    from persd.cli.run import default_config
    from persd.config import load_config
    from persd.poolbuild import build_pool
    from persd.poolbuild.gates import Split

    cfg = load_config(config or default_config())
    with progress_bars(err_console) as bars:
        split = Split(seen=cfg.synth.seen, examples=examples)
        report = build_pool(
            source, out, cfg, name=name, limit=limit, seed=seed, split=split,
            progress=RichProgress(bars),
        )  # fmt: skip
    console.print(f"{report.rows} rows -> {report.tasks_out} tasks in {report.pool}")
    for reason, count in report.removed.items():
        console.print(f"  removed {count:5d}: {reason}", soft_wrap=True)
    console.print(
        f"tests per task: {report.tests_seen} seen, {report.tests_hidden_mean:.1f} hidden "
        f"(at least {report.tests_hidden_min}); teacher calls {report.teacher_calls} "
        f"({report.teacher_calls_new} new), {report.teacher_tokens_out:,} tokens out; "
        f"{report.wall_s:.0f} s"
    )


@pool_app.command("show")
def show(
    pool_dir: Annotated[Path, typer.Argument(help="A build directory (holds pool.jsonl).")],
    ids: Annotated[
        list[str] | None,
        typer.Argument(help="Task ids to show (default: the build's seeded hand-check sample)."),
    ] = None,
) -> None:
    """Print tasks of a built pool as a reviewer reads them: the task, the reference, and each
    test as call == expected, seen tests first. For the hand check of a build's sample."""
    from persd.errors import DataError
    from persd.tasks.user_pool import load_task_pool

    pool = pool_dir / "pool.jsonl" if pool_dir.is_dir() else pool_dir
    tasks = {t.id: t for t in load_task_pool(pool).tasks}
    wanted = ids or _sample_ids(pool.parent / "build.json")
    unknown = [i for i in wanted if i not in tasks]
    if unknown:
        raise DataError(pool, None, None, f"no task {unknown[0]!r} ({len(tasks)} tasks)")
    for n, task_id in enumerate(wanted, 1):
        task = tasks[task_id]
        console.rule(f"{n}/{len(wanted)}  {task_id}")
        console.print(task.prompt.rstrip(), markup=False, highlight=False)
        console.print((task.reference or "").rstrip(), markup=False, highlight=False)
        for kind, tests in (("seen", task.tests_seen), ("hidden", task.tests_hidden)):
            for t in tests:
                console.print(f"  {kind:6s} {t.call} == {t.expected}", markup=False, soft_wrap=True)


def _sample_ids(report: Path) -> list[str]:
    from persd.errors import DataError
    from persd.poolbuild.build import BuildReport

    if not report.is_file():
        raise DataError(report, None, None, "no build report here; name the task ids to show")
    return BuildReport.model_validate_json(report.read_text()).sample
