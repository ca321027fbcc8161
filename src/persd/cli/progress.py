"""The one progress display of the CLI: done/total, rate, elapsed and time left, per stage.

Rates are per unit of the stage (tasks, programs, steps), from rich's moving average of the
last updates, so the estimate follows the current pace rather than the start-up cost.
"""

from __future__ import annotations

from collections.abc import Callable

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text


class RateColumn(ProgressColumn):
    """Units per second, or seconds per unit when slower than one a second."""

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        if not speed:
            return Text("     -/s", style="progress.data.speed")
        text = f"{speed:6.1f}/s" if speed >= 1 else f"{1 / speed:4.1f}s/it"
        return Text(text, style="progress.data.speed")


def progress_bars(console: Console, *, transient: bool = False, width: int = 8) -> Progress:
    return Progress(
        f"[progress.description]{{task.description:>{width}}}",
        BarColumn(),
        MofNCompleteColumn(),
        RateColumn(),
        TimeElapsedColumn(),
        "eta",
        TimeRemainingColumn(),
        console=console,
        transient=transient,
        speed_estimate_period=120.0,
    )


class RichProgress:
    """The pipeline's ``Progress`` drawn as stage bars; notes printed above them."""

    def __init__(self, progress: Progress) -> None:
        self._p = progress

    def start(self, stage: str, total: int) -> Callable[[int], None]:
        bar = self._p.add_task(stage, total=total)
        return lambda n: self._p.advance(bar, n)

    def note(self, message: str) -> None:
        self._p.console.print(f"[dim]{message}[/]")
