"""The one progress display of the CLI: done/total, rate, elapsed and time left, per stage.

Rates are per unit of the stage (tasks, programs, steps), from rich's moving average of the
last updates, so the estimate follows the current pace rather than the start-up cost.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.filesize import decimal
from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TaskID,
    TimeElapsedColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
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
    """The pipeline's ``Progress`` drawn as stage bars; notes printed above them.

    Without a terminal (``persd run | tee run.log``, a CI log) a bar draws nothing, so each
    stage prints a line when it starts and at every tenth of its units instead: a log shows
    that a 13-minute stage is moving, and how fast."""

    def __init__(self, progress: Progress) -> None:
        self._p = progress

    def start(self, stage: str, total: int) -> Callable[[int], None]:
        bar = self._p.add_task(stage, total=total)
        if self._p.console.is_terminal:
            return lambda n: self._p.advance(bar, n)
        return _ProgressLines(self._p, bar, stage, total)

    def note(self, message: str) -> None:
        self._p.console.print(f"[dim]{message}[/]")


class _ProgressLines:
    """``advance(n)`` that also prints ``stage: done/total (elapsed)`` at each tenth."""

    def __init__(self, progress: Progress, bar: TaskID, stage: str, total: int) -> None:
        self._p, self._bar, self._stage, self._total = progress, bar, stage, total
        self._done, self._tenth, self._t0 = 0, 0, time.monotonic()
        progress.console.print(f"{stage}: 0/{total}", highlight=False)

    def __call__(self, n: int) -> None:
        self._p.advance(self._bar, n)
        self._done += n
        tenth = 10 * self._done // max(self._total, 1)
        if tenth > self._tenth:
            self._tenth = tenth
            seconds = time.monotonic() - self._t0
            self._p.console.print(
                f"{self._stage}: {self._done}/{self._total} ({seconds:.0f} s)", highlight=False
            )


@contextmanager
def pull_progress(console: Console) -> Iterator[Callable[[str, int, int], None]]:
    """A model pull's display (``persd.llm.registry.pull``'s ``progress``): one bar per phase
    (downloading, assembling a model), bytes of total, rate, elapsed and time left, and a line
    when a download ends. Without a terminal (a log, ``$(...)``) only lines.

    Drawn from a pull's first update until its phases end, so a cached model prints nothing;
    it nests inside ``persd run``'s stage bars (rich >= 14.1 draws nested live displays).
    """
    shown: dict[str, Progress] = {}  # the bars on screen now, under "bars"
    tasks: dict[str, TaskID] = {}
    began: dict[str, float] = {}

    def update(phase: str, done: int, total: int) -> None:
        _say_download(console, phase, done, total, began)
        if not console.is_terminal:  # logs and $(...) get lines, not a bar's last frame
            return
        if "bars" not in shown:
            shown["bars"] = _bytes_bars(console)
            shown["bars"].start()
            tasks.clear()
        bars = shown["bars"]
        if phase not in tasks:
            tasks[phase] = bars.add_task(phase, total=total)
        bars.update(tasks[phase], completed=done, total=total)
        if all(task.finished for task in bars.tasks):
            shown.pop("bars").stop()

    try:
        yield update
    finally:
        if "bars" in shown:
            shown.pop("bars").stop()


def _bytes_bars(console: Console) -> Progress:
    return Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeElapsedColumn(),
        "eta",
        TimeRemainingColumn(),
        console=console,
        transient=True,
    )


def _say_download(
    console: Console, phase: str, done: int, total: int, began: dict[str, float]
) -> None:
    """A line when a download starts (without a terminal) and when it ends: a record of what
    the first minutes of a run went to."""
    if not phase.startswith("downloading"):
        return
    if phase not in began:
        began[phase] = time.monotonic()
        if not console.is_terminal:
            console.print(f"{phase}: {decimal(total)}", highlight=False)
    elif done >= total > 0 and began[phase] > 0:
        seconds = time.monotonic() - began[phase]
        began[phase] = 0.0  # said once
        console.print(f"{phase}: {decimal(total)} in {seconds:.0f} s", highlight=False)
