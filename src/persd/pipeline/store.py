"""The run directory: one append-only JSONL per stage, keyed by record id.

A stage asks the store which ids it already has, computes only the missing ones and appends
each result as soon as it exists. A process killed mid-write leaves at most one torn last
line; the store drops it on open (with a warning) so the rerun recomputes exactly that record.

Layout::

    RUN_DIR/
      config.yaml          the resolved config this directory belongs to
      attempts.jsonl       Attempt        (student programs)
      executions.jsonl     Execution      (attempts on seen tests, or all: attempt.judge)
      solutions.jsonl      TeacherCall    (teacher's direct solutions)
      refinements.jsonl    TeacherCall    (teacher's fixes of failed attempts)
      verifications.jsonl  Execution      (teacher code on all tests)
      data/<variant>.jsonl Example        (training sets, rebuilt from the above)
      teacher.sqlite       response cache and cost ledger
      timings.jsonl        StageTime      (each stage's wall seconds, per invocation)
      gate.json, summary.json              the gate's decision; the run's numbers
      logs/                server and run logs
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import yaml
from pydantic import BaseModel

from persd.errors import PersdError
from persd.jsonl import parse_record
from persd.records import Attempt, Execution, TeacherCall

log = logging.getLogger(__name__)
R = TypeVar("R", bound=BaseModel)


class RunDirError(PersdError):
    pass


# The loop's stage files in order: (file stem, record type, stage that writes it).
STAGE_FILES: tuple[tuple[str, type[BaseModel], str], ...] = (
    ("attempts", Attempt, "attempt"),
    ("executions", Execution, "execute"),
    ("solutions", TeacherCall, "solve"),
    ("refinements", TeacherCall, "refine"),
    ("verifications", Execution, "verify"),
)


@dataclass(frozen=True)
class StageRecords:
    """Every stage file of a run, read once, joined the way every reader needs them: an
    execution or a verification by the id of the program it ran."""

    attempts: list[Attempt]
    executions: dict[str, Execution]
    solutions: list[TeacherCall]
    refinements: list[TeacherCall]
    verifications: dict[str, Execution]

    def passed_seen(self, attempt_id: str) -> bool:
        """Whether an attempt's execution (on its task's seen tests, or all of them under
        ``attempt.judge: all``) passed."""
        e = self.executions.get(attempt_id)
        return e is not None and e.feedback.passed

    def passed(self, program_id: str) -> bool:
        """Whether the verification of a program (by its id: a teacher's, or an attempt's for
        ``self`` rows) passed every test."""
        v = self.verifications.get(program_id)
        return v is not None and v.feedback.passed

    def failed_attempts(self) -> list[tuple[Attempt, Execution]]:
        """Attempts whose execution failed, with it, in attempt order."""
        return [
            (a, self.executions[a.id])
            for a in self.attempts
            if a.id in self.executions and not self.executions[a.id].feedback.passed
        ]


class StageFile:
    """One stage's JSONL: ids on disk, append, read back as records."""

    def __init__(self, path: Path, record: type[R]) -> None:
        self.path, self.record = path, record
        self._ids: set[str] | None = None

    def _repair_tail(self) -> None:
        # A kill -9 during a write leaves a last line without its newline: drop it.
        if not self.path.exists() or self.path.stat().st_size == 0:
            return
        with self.path.open("rb+") as f:
            f.seek(-1, os.SEEK_END)
            if f.read(1) == b"\n":
                return
            data = self.path.read_bytes()
            cut = data.rfind(b"\n") + 1
            log.warning("%s: dropping a torn last line (%d bytes)", self.path, len(data) - cut)
            f.truncate(cut)

    def ids(self) -> set[str]:
        if self._ids is None:
            self._ids = {r.id for r in self.read()}  # type: ignore[attr-defined]
        return self._ids

    def read(self, *, repair: bool = True) -> list:
        """The records on disk. ``repair=False`` is for readers of a file another process may be
        writing (reports): the file is left alone and a last line without its newline yet is
        skipped instead of cut."""
        if repair:
            self._repair_tail()
        if not self.path.exists():
            return []
        out = []
        with self.path.open(encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                if not line.strip() or not line.endswith("\n"):
                    continue
                out.append(parse_record(line, self.record, self.path, n))
        return out

    def append(self, records: Iterable[BaseModel]) -> None:
        """Write records durably, one line each, as soon as they exist."""
        self._repair_tail()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as f:
            for r in records:
                f.write(r.model_dump_json() + "\n")
                f.flush()
                if self._ids is not None:
                    self._ids.add(r.id)  # type: ignore[attr-defined]
            os.fsync(f.fileno())

    def rewrite(self, records: Iterable[BaseModel]) -> None:
        """Replace the file atomically (derived outputs such as training sets)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(self.path.suffix + ".tmp")
        with tmp.open("w", encoding="utf-8") as f:
            for r in records:
                f.write(r.model_dump_json() + "\n")
        os.replace(tmp, self.path)
        self._ids = None


class RunStore:
    """A run directory bound to one config."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.logs = root / "logs"

    def bind(
        self,
        config: BaseModel,
        *,
        force: bool = False,
        operational: tuple[str, ...] = (),
        implied: Mapping[str, object] | None = None,
        check_only: bool = False,
    ) -> None:
        """Create the directory, or check it belongs to ``config`` (no silent stacking); a
        directory without records (``has_records``) takes the new config.

        Keys under an ``operational`` prefix (worker counts, timeouts, budgets) change how a
        run executes, not what it computes, so they may differ on resume. A key absent from an
        older snapshot held its default, unless ``implied`` names the value its absence meant
        (a setting added for behaviour that older persd had without saying so). ``check_only``
        (a dry run) checks and writes nothing, not even the directory.
        """
        if not check_only:
            self.root.mkdir(parents=True, exist_ok=True)
            self.logs.mkdir(exist_ok=True)
        snapshot = self.root / "config.yaml"
        new_data = config.model_dump(mode="json")
        text = yaml.safe_dump(new_data, sort_keys=True)
        changed: list[str] = []
        if snapshot.exists():
            old = yaml.safe_load(snapshot.read_text()) or {}
            # A key a newer persd added is absent from an older snapshot: it changed nothing
            # when it holds its default.
            defaults = type(config)().model_dump(mode="json")
            implied = dict(implied or {})

            def was(key: str) -> object:  # what an absent key meant in the old snapshot
                return implied[key] if key in implied else _lookup(defaults, key)

            changed = sorted(
                k
                for k in _diff_keys(old, yaml.safe_load(text))
                if not any(k == p or k.startswith(p + ".") for p in operational)
                and not (_missing(old, k) and was(k) == _lookup(new_data, k))
            )
        if changed and not force and self.has_records():
            raise RunDirError(
                f"{self.root}: holds a run with a different config (changed: "
                f"{', '.join(changed[:5])}); use another --run-dir, or --force to continue anyway"
            )
        if not check_only:
            snapshot.write_text(text)

    def stage(self, name: str, record: type[R]) -> StageFile:
        return StageFile(self.root / f"{name}.jsonl", record)

    def has_records(self) -> bool:
        """Whether any stage has written here. A directory holding only its config snapshot
        and logs (a run stopped by its preflight: a dead teacher, a missing key) computed
        nothing the config could invalidate, so a corrected config simply replaces it."""
        if not self.root.is_dir():
            return False
        bookkeeping = {"config.yaml", "logs", "timings.jsonl", "report.html"}
        return any(
            p.name not in bookkeeping and not (p.is_file() and p.stat().st_size == 0)
            for p in self.root.iterdir()
        )

    def records(self, *, repair: bool = True) -> StageRecords:
        """All stage files, read once (``repair=False``: for readers of a run in progress)."""
        rows = {name: self.stage(name, rec).read(repair=repair) for name, rec, _ in STAGE_FILES}
        return StageRecords(
            attempts=rows["attempts"],
            executions={e.id: e for e in rows["executions"]},
            solutions=rows["solutions"],
            refinements=rows["refinements"],
            verifications={v.id: v for v in rows["verifications"]},
        )

    def dataset(self, variant: str, record: type[R]) -> StageFile:
        return StageFile(self.root / "data" / f"{variant}.jsonl", record)


def _diff_keys(old: object, new: object, prefix: str = "") -> Iterator[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        for key in set(old) | set(new):
            yield from _diff_keys(old.get(key), new.get(key), f"{prefix}{key}.")
    elif old != new:
        yield prefix.rstrip(".")


_ABSENT = object()


def _lookup(data: object, key: str) -> object:
    for part in key.split("."):
        if not isinstance(data, dict) or part not in data:
            return _ABSENT
        data = data[part]
    return data


def _missing(data: object, key: str) -> bool:
    return _lookup(data, key) is _ABSENT
