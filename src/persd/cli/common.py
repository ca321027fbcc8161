"""What every command shares: the two consoles and the one place errors become lines."""

from __future__ import annotations

import logging
import sys

import typer
from rich.console import Console
from rich.logging import RichHandler

from persd.errors import PersdError

console = Console()
err_console = Console(stderr=True)


def run_app(app: typer.Typer) -> None:
    """Run a typer app; a ``PersdError`` (expected and explained) is printed as ``error:``
    lines, unwrapped because users grep them, and exit code 1, with no traceback."""
    logging.basicConfig(
        level=logging.WARNING,
        format="%(message)s",
        handlers=[RichHandler(console=err_console, show_path=False, show_time=False)],
    )
    from persd.cli.progress import pull_progress
    from persd.llm.registry import downloads_shown_by

    try:
        # A model pulled anywhere in a command (persd run's preflight, a backend) is drawn.
        with pull_progress(err_console) as update, downloads_shown_by(update):
            app()
    except PersdError as e:
        for line in str(e).splitlines():
            sys.stderr.write(f"error: {line}\n")
        raise SystemExit(1) from None
