"""The distillation loop over a run directory, read top to bottom in ``Loop.run``:

    pool -> synth                 the tasks, and tests for those that come with a reference only
    for each round:   attempt -> execute -> teach (solve, verify, refine) -> verify
                      -> build data -> train
    then:             gate (held-out validation) -> evaluate -> summary

Each stage is a function of the run's context in its own module under ``pipeline/stages/``
(their order is declared once, in ``stages.ORDER``) and computes only what its file lacks, so
a killed run resumes where it stopped and a finished one reruns in seconds without a model or
a teacher call.

Generation and execution never overlap: the student is freed before the sandbox runs its
attempts, and teacher servers are stopped before the refinements are verified. On a 2-core
machine a llama.cpp thread that shares its core with sandbox workers drops from ~45 tok/s to a
few, so running the two side by side is slower than running them in turn.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from persd.llm.student import trained_student
from persd.pipeline.context import OPERATIONAL, RunContext
from persd.pipeline.rundir import GateResult, model_name
from persd.pipeline.stages import (
    attempt,
    build,
    evaluate,
    execute,
    gate,
    pool,
    summary,
    synth,
    teach,
    train,
    verify,
)
from persd.pipeline.stages.summary import RoundSummary, RunSummary
from persd.records import Attempt, Example, Execution, Task

if TYPE_CHECKING:
    from persd.evaluate.multistep import EvalReport
    from persd.evaluate.paired import Paired
    from persd.llm.student import StudentConfig

__all__ = ["OPERATIONAL", "Loop", "model_name", "trained_student"]


class Loop(RunContext):
    """One run directory's loop. Each stage is also a method, so ``persd <stage>`` (and a
    test) can run one alone; the work is in the stage modules."""

    def run(self, *, train: bool = True, evaluate: bool = True) -> RunSummary:
        rounds = self.config.rounds.count if train else 1
        if rounds < self.config.rounds.count:
            self.progress.note(
                f"rounds: {self.config.rounds.count} configured, but without training only "
                "round 0 can run"
            )
        self.load_pool()  # the tasks, the gate's held out, what was left out and why
        self.synthesize()  # tests for the tasks that came with a reference only
        datasets: dict[str, list[Example]] = {}
        trained: dict[str, Path] = {}
        for r in range(rounds):
            if r > 0 and not self._round_can_start(r):
                break
            self.attempt(r)  # the student tries the round's tasks
            self.execute()  # ... on their seen tests, in the sandbox
            self.teach()  # the teacher solves and refines what failed; solutions verified
            self.verify()  # refinements on all of their task's tests
            built = self.build(r)  # PERsD, StanD, InpD rows from what was verified
            if r == 0:
                datasets = built
            if train:
                trained |= self.train(r)
        gate = self.validate(trained) if train and self.gated else None
        evals = self.evaluate(trained, gate) if evaluate else {}
        result = self.finish(datasets, gate, evals, len(trained))  # -> summary.json
        self.timer.finish()
        return result

    def _round_can_start(self, round_: int) -> bool:
        variant = self.config.round_variant
        tasks = self.round_tasks(round_)
        if self.trained_model(variant, round_ - 1) is None:
            self.progress.note(
                f"round {round_}: no {variant} model was trained (no examples); stopping"
            )
            return False
        if not tasks:
            self.progress.note(f"round {round_}: no task left to attempt; stopping")
            return False
        self.progress.note(f"round {round_}: {len(tasks)} task(s)")
        return True

    # ---- the stages, one line each -----------------------------------------------------------

    def load_pool(self) -> None:
        pool.load(self)

    def synthesize(self) -> None:
        synth.synthesize(self)

    def attempt(self, round_: int = 0) -> None:
        attempt.attempt_tasks(self, round_)

    def execute(self) -> None:
        execute.execute_attempts(self)

    def teach(self) -> None:
        teach.teach(self)

    def verify(self) -> None:
        verify.verify(self)

    def build(self, round_: int = 0) -> dict[str, list[Example]]:
        return build.build_round(self, round_)

    def train(self, round_: int = 0) -> dict[str, Path]:
        return train.train_round(self, round_)

    def validate(self, trained: dict[str, Path]) -> GateResult | None:
        return gate.validate(self, trained)

    def evaluate(
        self, trained: dict[str, Path] | None = None, gate: GateResult | None = None
    ) -> dict[str, dict[str, EvalReport]]:
        return evaluate.evaluate_models(self, trained, gate)

    def finish(
        self,
        datasets: dict[str, list[Example]],
        gate: GateResult | None,
        evals: dict[str, dict[str, EvalReport]],
        trained: int,
    ) -> RunSummary:
        return summary.finish(self, datasets, gate, evals, trained)

    # ---- what stages and the CLI ask of the run ------------------------------------------------

    def summary(self, datasets: dict[str, list[Example]] | None = None) -> RunSummary:
        """The run's numbers so far, from its files (``persd <stage>`` prints them)."""
        return summary.run_summary(self, datasets)

    def round_tasks(self, round_: int) -> list[Task]:
        return attempt.round_tasks(self, round_)

    def student_config(self, round_: int) -> StudentConfig:
        return attempt.student_config(self, round_)

    def failed_attempts(self) -> list[tuple[Attempt, Execution]]:
        return execute.failed_attempts(self)

    def trained_model(self, variant: str, round_: int) -> Path | None:
        return train.trained_model(self, variant, round_)

    def trained_models(self) -> dict[str, Path]:
        return train.trained_models(self)

    def versus_base(self, names: Sequence[str]) -> dict[str, dict[str, Paired]]:
        return evaluate.versus_base(self, names)

    def round_summaries(self) -> list[RoundSummary]:
        return summary.round_summaries(self)
