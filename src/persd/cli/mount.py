"""The ``persd`` app: every command group mounted on one typer app."""

from __future__ import annotations

import typer

from persd.cli import eval as eval_cli
from persd.cli import models, pool, report, run, score, train
from persd.cli.common import run_app

app = typer.Typer(
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,  # keys and samples live in locals
    add_completion=False,
    help="Personalised distillation for code models: attempt, execute, refine, verify, train.",
)
app.command()(score.score)
app.command("check-references")(score.check_references)
app.command()(score.tasks)
app.add_typer(models.models_app, name="models")
app.add_typer(pool.pool_app, name="pool")
app.command("eval")(eval_cli.eval_command)
app.command("train")(train.train_command)
app.command("run")(run.run)
app.command("report")(report.report)
for _name, _command in run.STAGE_COMMANDS.items():
    app.command(_name)(_command)


def main() -> None:
    run_app(app)
