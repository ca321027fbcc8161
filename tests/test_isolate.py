"""Stage processes: ticks, notes, results and errors cross the process boundary."""

from __future__ import annotations

import os

import pytest

from persd.errors import PersdError
from persd.pipeline.isolate import StageProcessError, run_isolated


def _work(n: int, *, tick, note) -> dict:
    for i in range(n):
        note(f"step {i + 1}")
        tick(1)
    return {"pid": os.getpid(), "n": n}


def _fails(*, tick, note) -> None:
    note("about to fail")
    raise PersdError("data/x.jsonl:3: missing field 'prompt'")


def test_ticks_notes_and_result_come_back_from_another_process():
    ticks: list[int] = []
    notes: list[str] = []
    out = run_isolated("work", _work, 3, on_tick=ticks.append, on_note=notes.append)
    assert out["n"] == 3 and out["pid"] != os.getpid()
    assert ticks == [1, 1, 1]
    assert notes == ["step 1", "step 2", "step 3"]


def test_a_persd_error_is_raised_again_with_its_message_and_notes_before_it_arrive():
    notes: list[str] = []
    with pytest.raises(StageProcessError, match=r"data/x.jsonl:3: missing field 'prompt'"):
        run_isolated("fails", _fails, on_note=notes.append)
    assert notes == ["about to fail"]
