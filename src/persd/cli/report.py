"""``persd report``: the run report as one self-contained HTML page."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from persd.cli.common import console
from persd.errors import PersdError
from persd.report import write_report


def report(
    run_dir: Annotated[Path, typer.Argument(help="A run directory (`persd run` writes one).")],
    out: Annotated[
        Path | None,
        typer.Option("--out", "-o", help="Where to write (default: RUN_DIR/report.html)."),
    ] = None,
    cases: Annotated[
        int, typer.Option("--cases", help="Failed attempts to show beside their refinement.")
    ] = 3,
) -> None:
    """Write an HTML report of a run: counts, failures, teacher cost, training, pass@k, cases."""
    if cases < 0:
        raise PersdError(f"--cases must be 0 or more, not {cases}")
    path = write_report(run_dir, out, cases=cases)
    console.print(f"report: {path}", soft_wrap=True)
