"""How long each stage of a run took, kept with the run's records (``timings.jsonl``).

A run's timings are data: a resume that finds every record already there must not erase the
minutes the first invocation spent computing them. Each stage appends one line when it ends
(its wall seconds, in this invocation), and each ``persd run`` appends one line for its whole
wall time; the summary adds them up over every invocation of the run directory.

A run directory written before this file existed kept its last invocation's stage times only
in ``summary.json``; those are taken over once, as the file's first lines.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Literal

from pydantic import BaseModel

from persd.pipeline.rundir import SUMMARY_FILE
from persd.pipeline.store import StageFile

TIMINGS_FILE = "timings.jsonl"


class StageTime(BaseModel):
    """One stage (or one whole invocation) of one invocation, in wall seconds."""

    stage: str
    seconds: float
    kind: Literal["stage", "invocation"] = "stage"
    ended: str = ""  # UTC, ISO 8601; "" for times taken over from an older summary.json


class StageTimer:
    """Wall seconds per stage name, summed over every invocation of the run directory.

    Without a ``root`` (a throwaway context) nothing is written and only this invocation's
    times are known."""

    def __init__(self, root: Path | None = None) -> None:
        self._file = StageFile(root / TIMINGS_FILE, StageTime) if root is not None else None
        self._here: list[StageTime] = []
        self._started = time.perf_counter()
        if root is not None and self._file is not None and not self._file.path.exists():
            self._take_over(root / SUMMARY_FILE)

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self._record(StageTime(stage=name, seconds=time.perf_counter() - t0, ended=_now()))

    def _record(self, row: StageTime) -> None:
        if self._file is not None and self._file.path.parent.is_dir():
            self._file.append([row])
        else:
            self._here.append(row)

    def _rows(self) -> list[StageTime]:
        stored = self._file.read() if self._file is not None else []
        return [*stored, *self._here]

    @property
    def seconds(self) -> dict[str, float]:
        """Stage name -> wall seconds, over every invocation, in the order stages first ran."""
        out: dict[str, float] = {}
        for row in self._rows():
            if row.kind == "stage":
                out[row.stage] = out.get(row.stage, 0.0) + row.seconds
        return out

    def wall_seconds(self) -> float:
        """Every finished invocation's wall time plus this one's so far."""
        done = sum(r.seconds for r in self._rows() if r.kind == "invocation")
        return done + self.elapsed()

    def elapsed(self) -> float:
        return time.perf_counter() - self._started

    def finish(self, command: str = "persd run") -> None:
        """Record this invocation's wall time (once, at its end)."""
        self._record(
            StageTime(stage=command, seconds=self.elapsed(), kind="invocation", ended=_now())
        )

    def _take_over(self, summary: Path) -> None:
        if not summary.is_file():
            return
        try:
            old = json.loads(summary.read_text(encoding="utf-8")).get("stage_seconds") or {}
        except (json.JSONDecodeError, AttributeError):
            return
        rows = [StageTime(stage=str(k), seconds=float(v)) for k, v in old.items()]
        if rows and self._file is not None:
            # The invocation that wrote them lasted at least as long as its stages together.
            total = sum(r.seconds for r in rows)
            self._file.append(
                [*rows, StageTime(stage="persd run", seconds=total, kind="invocation")]
            )


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
