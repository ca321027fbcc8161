"""The journal of an evaluation's generations: what makes a long evaluation resumable.

Every batch of raw generations is appended to ``<out>/generations.jsonl`` as it is made,
under a key that names its arm, step and chunk; a rerun with the same ``--out`` reuses them.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from persd.errors import PersdError
from persd.records import Task


class Journal:
    """Every batch of raw generations, appended to ``<out>/generations.jsonl`` as it is made.

    A rerun with the same ``--out`` reuses them instead of sampling again: sampling is
    seeded, so the reused text is what the same call would produce, and an evaluation cut
    off after an hour resumes where it was. The header line names the evaluation (model,
    benchmark, decoding); reusing another evaluation's generations is refused. The number of
    refinement steps is not part of it: a step-0 run can be continued with refinement steps.
    """

    def __init__(self, path: Path | None, header: dict) -> None:
        self.path, self.reused = path, 0
        self.seconds: float | None = 0.0  # generation time of the batches handed out
        self._done: dict[str, tuple[list[str], list[list[str]], float | None]] = {}
        if path is None:
            return
        if path.exists() and path.stat().st_size:
            text = path.read_text(encoding="utf-8")
            lines = text.splitlines()
            try:
                first = json.loads(lines[0])
            except json.JSONDecodeError:
                raise PersdError(f"{path}:1: not a generations header line") from None
            if first != header:
                diff = sorted(
                    k for k in header.keys() | first.keys() if first.get(k) != header.get(k)
                )
                raise PersdError(
                    f"{path}: generations of another evaluation (differs in {', '.join(diff)}); "
                    "pass another --out or remove that directory"
                )
            whole = lines
            for n, line in enumerate(lines[1:], start=2):
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:
                    if n == len(lines):
                        whole = lines[:-1]  # cut off mid-write: that batch is made again
                        break
                    raise PersdError(f"{path}:{n}: not a JSON line") from None
                self._done[row["key"]] = (row["tasks"], row["texts"], row.get("seconds"))
            if not text.endswith("\n"):  # a write was cut off: keep only whole lines
                path.write_text("".join(line + "\n" for line in whole), encoding="utf-8")
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(header) + "\n", encoding="utf-8")

    def batch(
        self, key: str, tasks: Sequence[Task], make: Callable[[], list[list[str]]]
    ) -> list[list[str]]:
        ids = [t.id for t in tasks]
        done = self._done.get(key)
        if done is not None and done[0] == ids:
            self.reused += 1
            self._add(done[2])
            return done[1]
        start = time.perf_counter()
        texts = make()
        seconds = round(time.perf_counter() - start, 3)
        self._add(seconds)
        if self.path is not None:
            row = {"key": key, "tasks": ids, "texts": texts, "seconds": seconds}
            with self.path.open("a", encoding="utf-8") as f:
                f.write(json.dumps(row) + "\n")
        return texts

    def _add(self, seconds: float | None) -> None:
        self.seconds = None if seconds is None or self.seconds is None else self.seconds + seconds


def journal_key(arm: str, step: int, start: int, size: int) -> str:
    """A chunk's key; chunks of 8 keep the keys journals were written with before batching."""
    return f"{arm}/{step}/{start}" if size == 8 else f"{arm}/{step}/{start}+{size}"
