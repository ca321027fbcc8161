"""The run directory: where each of its files is (``RunPaths``), the gate's decision and the
run's summary as typed records, and which trained models finished. The stage files
themselves (attempts.jsonl, ...) are ``store.py``'s. Stages, the CLI and the report find a
run's files here, never by spelling their names."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, Field

from persd.evaluate.paired import Paired

GATE_FILE = "gate.json"
SUMMARY_FILE = "summary.json"


@dataclass(frozen=True)
class RunPaths:
    """Every path of a run directory beside its stage files.

    Round 0 keeps its rows and models at the top (``data/<variant>.jsonl``,
    ``models/<variant>/``); round r>0 below ``r<r>/``. Evaluations are ``eval/<model>/<bench>/``
    and the gate's are ``validation/<label>/``, one report.json and samples per directory."""

    root: Path

    @property
    def config(self) -> Path:
        return self.root / "config.yaml"

    @property
    def report(self) -> Path:
        return self.root / "report.html"

    @property
    def teacher_scores(self) -> Path:
        return self.root / "teacher_scores.jsonl"

    @property
    def models(self) -> Path:
        return self.root / "models"

    def data(self, round_: int = 0) -> Path:
        root = self.root / "data"
        return root if round_ == 0 else root / f"r{round_}"

    def model(self, variant: str, round_: int = 0) -> Path:
        return self.models / variant if round_ == 0 else self.models / f"r{round_}" / variant

    def validation(self, label: str) -> Path:
        return self.root / "validation" / label

    def eval(self, model: str, benchmark: str) -> Path:
        return self.root / "eval" / model / benchmark


class Candidate(BaseModel):
    """One trained model the gate can keep: a variant at one checkpoint."""

    variant: str  # evaluation name: persd_combined, persd_combined@r1
    checkpoint: str  # "epoch 1", ..., or "final"
    path: str  # the adapter / model directory

    @property
    def label(self) -> str:
        """Directory-safe name: ``persd_combined`` (final) or ``persd_combined@epoch1``."""
        if self.checkpoint == "final":
            return self.variant
        return f"{self.variant}@{self.checkpoint.replace(' ', '')}"


class GateRow(BaseModel):
    candidate: Candidate
    vs_base: Paired
    decision: str  # kept | best of its variant, below the rule | not its variant's best


class GateResult(BaseModel):
    validation_tasks: int
    base_passed: int
    rule: str
    rows: list[GateRow]
    kept: str  # "base" or the kept candidate's label
    kept_path: str | None = None
    verdict: str  # the result in words, for the summary, the CLI and the report


class RoundSummary(BaseModel):
    """One round of a multi-round run: how the student that attempted it did, and what the
    round added to the carried-over variant's training."""

    round: int
    tasks: int  # tasks attempted in this round
    attempts: int
    attempts_passed: int  # on the tests ``attempt.judge`` names (seen, by default)
    refinements: int
    refinements_verified: int
    examples: int  # rows of the round variant built from this round
    trained: bool
    training: str  # "continue" or "retrain" (rounds > 0)
    tasks_mode: str  # "failed" or "fresh"

    @property
    def pass_rate(self) -> float:
        return self.attempts_passed / self.attempts if self.attempts else 0.0


class RunSummary(BaseModel):
    # The run's decision in words, first in summary.json: which model is the result, on what
    # evidence, and what the gate's rule required (see ``decision``).
    result: str = ""
    tasks: int
    tasks_removed: int = 0
    attempts: int = 0
    attempts_passed: int = 0
    attempts_judged_on: str = "seen"  # the tests that judged them (config attempt.judge)
    failures: dict[str, int] = Field(default_factory=dict)  # status or exception type -> count
    solutions: int = 0
    solutions_verified: int = 0
    refinements: int = 0
    refinements_verified: int = 0
    examples: dict[str, int] = Field(default_factory=dict)
    # What the data rules did to the teacher's programs before any became a row (verified
    # programs only become rows): rule -> programs
    data_rules: dict[str, int] = Field(default_factory=dict)
    teacher_calls_new: int = 0  # HTTP calls made by THIS invocation (0 on a complete rerun)
    teacher_tokens_in: int = 0
    teacher_tokens_out: int = 0
    teacher_cost_usd: float = 0.0
    teacher_local: bool = False  # a teacher persd serves on this machine: no price, no cost
    # stage -> wall seconds, summed over every invocation of the run directory (timings.jsonl)
    stage_seconds: dict[str, float] = Field(default_factory=dict)
    wall_seconds: float | None = None  # every invocation of ``persd run``, end to end
    evaluation: dict[str, dict[str, float]] = Field(default_factory=dict)  # pass@1, step 0
    validation_tasks: int = 0  # held out of the pool for the gate
    gate: GateResult | None = None  # every trained checkpoint against the base on validation
    kept: str | None = None  # the model the run keeps: "base" or a trained model's label
    # model -> benchmark -> paired comparison with the base on the benchmark's tasks
    versus_base: dict[str, dict[str, Paired]] = Field(default_factory=dict)
    eval_backend: str | None = None  # what scored the benchmarks: whose noise floor applies
    rounds: list[RoundSummary] = Field(default_factory=list)  # multi-round runs only

    @property
    def attempt_pass_rate(self) -> float:
        return self.attempts_passed / self.attempts if self.attempts else 0.0

    @property
    def acceptance_rate(self) -> float:
        return self.refinements_verified / self.refinements if self.refinements else 0.0

    def standing(self, model: str) -> str:
        """How the gate judged an evaluated model: "the result", "rejected by the gate", or
        "" when the run had no gate (or for the base when a trained model was kept)."""
        if self.gate is None:
            return ""
        if model == self.kept:
            return "the result"
        return "" if model == "base" else "rejected by the gate"

    def floor_note(self) -> str | None:
        """The serving path's noise floor, scaled to this run's paired comparisons (the
        gate's and the benchmarks'); None where nothing was compared or never measured."""
        from persd.evaluate.floor import floor_for

        floor = floor_for(self.eval_backend)
        tasks = [p.tasks for by in self.versus_base.values() for p in by.values()]
        tasks += [self.gate.validation_tasks] if self.gate else []
        return floor.note(tasks) if floor and tasks else None

    @property
    def cost_per_accepted(self) -> float | None:
        accepted = self.refinements_verified
        return self.teacher_cost_usd / accepted if accepted else None


def read_summary(root: Path) -> RunSummary | None:
    """The summary a run wrote last; None before its first finished invocation, or when the
    file cannot be read as one (a report still draws what the stage files hold)."""
    try:
        return RunSummary.model_validate_json((root / SUMMARY_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):  # pydantic's ValidationError is a ValueError
        return None


def write_summary(root: Path, summary: RunSummary) -> None:
    (root / SUMMARY_FILE).write_text(summary.model_dump_json(indent=2))


def read_gate(root: Path) -> GateResult | None:
    """The gate's decision in run directory ``root``; None before the gate ran."""
    path = root / GATE_FILE
    return GateResult.model_validate_json(path.read_text()) if path.is_file() else None


def write_gate(root: Path, result: GateResult) -> None:
    (root / GATE_FILE).write_text(result.model_dump_json(indent=2))


def model_name(variant: str, round_: int) -> str:
    """How a trained model is named in eval/ and in summaries: ``persd_combined@r1``."""
    return variant if round_ == 0 else f"{variant}@r{round_}"


def finished(out: Path) -> bool:
    """A training run that completed AND whose model is here: a run directory copied from
    another machine keeps ``train_summary.json`` but never the weights, so it trains again."""
    return (out / "train_summary.json").exists() and (out / "final").is_dir()
