"""Decontamination: drop training tasks whose text overlaps an evaluation benchmark.

Overlap is measured on word n-grams of the task statement plus its reference code, normalised
(lower case, identifiers and numbers kept, punctuation dropped). A training task is
contaminated when it shares at least one n-gram with any task of the benchmarks it will be
evaluated on. The default n=13 is GPT-3's convention. On MBPP validation+train against
HumanEval + MBPP test it removes 63 of 464 tasks, all MBPP siblings whose statement and
solution code are near copies ("largest positive number" ~ "largest negative number"); n=10
removes 122 and n=6 flags 379 on shared boilerplate alone.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from persd.records import Task

_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*|\d+")


def _ngrams(text: str, n: int) -> set[tuple[str, ...]]:
    words = [w.lower() for w in _WORD.findall(text)]
    return {tuple(words[i : i + n]) for i in range(len(words) - n + 1)}


def _task_text(task: Task) -> str:
    return f"{task.instruction}\n{task.reference or ''}"


@dataclass
class Contamination:
    """What the check found: kept tasks, and each removed task with the task it overlaps."""

    kept: tuple[Task, ...]
    removed: dict[str, str] = field(default_factory=dict)  # train task id -> benchmark task id
    ngram: int = 13

    def describe(self) -> str:
        if not self.removed:
            return f"decontamination ({self.ngram}-grams): no overlap"
        pairs = ", ".join(f"{a}~{b}" for a, b in list(self.removed.items())[:8])
        more = "" if len(self.removed) <= 8 else f" (+{len(self.removed) - 8} more)"
        return (
            f"decontamination ({self.ngram}-grams): removed {len(self.removed)} task(s) "
            f"overlapping the evaluation benchmarks: {pairs}{more}"
        )


def decontaminate(
    pool: Sequence[Task], benchmarks: Iterable[Task], *, n: int = 13
) -> Contamination:
    """Remove pool tasks sharing a word n-gram with any benchmark task (same id: removed too).

    Each removed task is reported with the first benchmark task (in the order given) it
    overlaps, so the report is the same on every run.
    """
    index: dict[tuple[str, ...], str] = {}
    order: dict[str, int] = {}  # benchmark task id -> position: membership and report order
    for task in benchmarks:
        order.setdefault(task.id, len(order))
        for gram in _ngrams(_task_text(task), n):
            index.setdefault(gram, task.id)
    kept, removed = [], {}
    for task in pool:
        if task.id in order:
            removed[task.id] = task.id
            continue
        # Every overlapping benchmark task, then the first in benchmark order: a set's order
        # follows the process's string hashing, so picking "any" hit named a different
        # benchmark task from one run to the next.
        hits = {index[g] for g in _ngrams(_task_text(task), n) if g in index}
        if not hits:
            kept.append(task)
        else:
            removed[task.id] = min(hits, key=order.__getitem__)
    return Contamination(kept=tuple(kept), removed=removed, ngram=n)
