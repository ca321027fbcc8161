"""What a run report shows, as data: gathered from a run directory by ``collect``, drawn by
``charts`` and laid out by ``html``. No I/O here."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from persd.errors import PersdError
from persd.evaluate.multistep import EvalReport
from persd.pipeline.rundir import RunSummary


class ReportError(PersdError):
    """The report cannot be written: names the path and what to do."""


class _Data(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class StageCount(_Data):
    stage: str
    file: str  # relative to the run directory
    rows: int


class TeacherUse(_Data):
    """Teacher calls of one kind: direct solutions or refinements of failed attempts."""

    kind: str
    calls: int
    cached: int  # answered from teacher.sqlite by a rerun (paid once, by an earlier run)
    tokens_in: int
    tokens_out: int
    cost_usd: float
    latency_s: float  # mean over calls that reached the teacher


class Verdicts(_Data):
    """How the teacher's programs of one kind fared on all the task's tests."""

    kind: str
    statuses: dict[str, int]  # "passed", a failure status or exception type, "not verified"

    @property
    def total(self) -> int:
        return sum(self.statuses.values())

    @property
    def accepted(self) -> int:
        return self.statuses.get("passed", 0)


class LossCurve(_Data):
    steps: list[int]
    losses: list[float]
    source: str  # "TensorBoard" or "trainer_state.json"


class TrainingRun(_Data):
    variant: str
    summary: dict[str, Any] | None = None  # train_summary.json
    curve: LossCurve | None = None
    note: str = ""  # why there is no curve


class EvalRun(_Data):
    """One report.json: a model on a benchmark."""

    model: str  # "base" or the trained variant, from the directory name
    path: str  # relative to the run directory
    report: EvalReport

    @property
    def benchmark(self) -> str:
        return f"{self.report.benchmark} ({self.report.tasks} tasks)"


DiffKind = Literal["equal", "replace", "delete", "insert"]


class DiffRow(_Data):
    kind: DiffKind
    old_no: int | None = None  # 1-based line numbers
    old: str = ""
    new_no: int | None = None
    new: str = ""


class Case(_Data):
    """A failed attempt, the feedback the teacher read, and the teacher's refinement."""

    task_id: str
    attempt_id: str
    refinement_id: str
    prompt: str  # what the student was asked
    feedback: str  # rendered exactly as the teacher read it
    verdict: str  # "passed" or why verification rejected it
    diff: list[DiffRow]

    @property
    def accepted(self) -> bool:
        return self.verdict == "passed"


class ReportData(_Data):
    run_dir: str
    config_text: str
    settings: dict[str, str]  # the few config keys a reader needs first
    summary: RunSummary
    stages: list[StageCount]
    teacher: list[TeacherUse]
    verdicts: list[Verdicts]
    training: list[TrainingRun]
    evals: list[EvalRun]
    cases: list[Case]
    notes: list[str]  # what was skipped, and why
