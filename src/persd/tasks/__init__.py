"""Coding tasks with the tests a student may see and the tests that score it.

Benchmarks ship with persd (HumanEval, MBPP; see ``persd/data/README.md``); users bring their
own pools as JSONL (docs/TASKS.md). Loading executes nothing: seen tests are precomputed.
"""

from __future__ import annotations

import difflib
from pathlib import Path

from persd.errors import PersdError
from persd.records import Task
from persd.tasks.humaneval import load_humaneval
from persd.tasks.mbpp import SPLITS as MBPP_SPLITS
from persd.tasks.mbpp import MbppShape, load_mbpp
from persd.tasks.user_pool import PoolResult, Skipped, load_task_pool

__all__ = [
    "BENCHMARKS",
    "PoolResult",
    "Skipped",
    "load_benchmark",
    "load_humaneval",
    "load_mbpp",
    "load_task_pool",
]

# "mbpp-test" etc. name one MBPP split; "mbpp" is all 974 tasks.
BENCHMARKS = ("humaneval", "mbpp", *(f"mbpp-{split}" for split in MBPP_SPLITS))


def load_benchmark(name: str, *, mbpp_shape: MbppShape = "docstring") -> tuple[Task, ...]:
    """A shipped benchmark by name: "humaneval", "mbpp", or "mbpp-<split>" ("mbpp-test");
    MBPP prompts in ``mbpp_shape`` (``prompt.mbpp_shape``). A path ending in ``.jsonl`` is a
    task pool (docs/TASKS.md), e.g. one ``persd pool build`` wrote."""
    key = name.strip().lower()
    if key.endswith(".jsonl"):
        return load_task_pool(Path(name.strip())).tasks
    if key == "humaneval":
        return load_humaneval()
    if key == "mbpp":
        return load_mbpp(shape=mbpp_shape)
    if key.startswith("mbpp-") and key.removeprefix("mbpp-") in MBPP_SPLITS:
        return load_mbpp(key.removeprefix("mbpp-"), shape=mbpp_shape)
    close = difflib.get_close_matches(key, BENCHMARKS, n=1)
    hint = (
        f"did you mean '{close[0]}'?"
        if close
        else f"known: {', '.join(BENCHMARKS)}, or a task pool .jsonl"
    )
    raise PersdError(f"unknown benchmark '{name}'; {hint}")
