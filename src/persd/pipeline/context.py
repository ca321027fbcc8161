"""What every stage of a run shares: its config, its run store and stage files, the task pool,
where models and data go, the progress display and the stage clock.

Stages are functions of a ``RunContext`` (``stages.attempt.attempt_tasks(ctx, round_)``,
``stages.teach.teach(ctx)``, ...), so each stage's logic lives in its own module under
``pipeline/stages/`` and ``run.Loop`` is only their order. Everything here is read from the
run directory on demand: a resumed run rebuilds the same context from the same files.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from persd.pipeline.pool import Pool, load_pool, with_synthesized
from persd.pipeline.progress import LogProgress, Progress
from persd.pipeline.rundir import RunPaths
from persd.pipeline.store import RunStore
from persd.pipeline.timings import StageTimer
from persd.records import Attempt, Execution, SynthesizedTests, Task, TeacherCall

if TYPE_CHECKING:
    from persd.config import RunConfig
    from persd.llm.base import Student

# Settings that change how a run executes, not what it computes: free to differ on resume.
OPERATIONAL = (
    "sandbox.workers",
    # which modules workers load ahead and whether calls are sent ahead: speed, same verdicts
    "sandbox.preimport",
    "sandbox.import_on_demand",
    "sandbox.send_calls_ahead",
    "teacher.concurrency",
    "teacher.timeout_s",
    "teacher.max_attempts",
    "teacher.backoff_s",
    "teacher.backoff_max_s",
    "teacher.budget_usd",
    "teacher.max_calls",
    "teacher.server.slots",
    "teacher.server.threads_per_slot",
    "teacher.server.parallel",  # which server decodes; replies already cached are reused
    "teacher.server.lookup",  # drafts checked against the model's own sampling, as parallel
    "teacher.server.startup_timeout_s",
)


# Settings added for behaviour older persd had without a key: what an older run directory's
# snapshot meant by not having them. Its teacher replies were drawn under llama-cpp-python's
# server defaults (repeat penalty 1.1), so it resumes only with legacy_sampling: true. Before
# the held-out gate, no task was held out: with today's default (40) the same config would
# draw another pool, and a resume would silently sample tasks the run never had.
IMPLIED_BEFORE: dict[str, object] = {
    "teacher.server.legacy_sampling": True,
    "pool.validation": 0,
}


def snapshot_config(run_dir: Path) -> RunConfig:
    """The config a run directory was made with, read from its snapshot: a key an older persd
    did not write holds what its absence meant (``IMPLIED_BEFORE``), else today's default."""
    import yaml

    from persd.config import load_config

    data = yaml.safe_load(RunPaths(run_dir).config.read_text()) or {}
    for key, value in IMPLIED_BEFORE.items():
        *path, leaf = key.split(".")
        section = data
        for part in path:
            section = section.get(part) if isinstance(section, dict) else None
        if isinstance(section, dict) and leaf not in section:
            section[leaf] = value
    return load_config(None, data)


def _default_student(config: RunConfig) -> Student:
    from persd.llm.student import load_student

    return load_student(config.student)


class RunContext:
    """One run directory, bound to its config (``RunStore.bind`` refuses a config that would
    change what the stored records mean), with its stage files opened."""

    def __init__(
        self,
        config: RunConfig,
        run_dir: Path,
        *,
        progress: Progress | None = None,
        make_student: Callable[[RunConfig], Student] = _default_student,
        force: bool = False,
        dry_run: bool = False,
        verbose: bool = False,
    ) -> None:
        self.config, self.progress = config, progress or LogProgress()
        self.verbose = verbose  # third-party output of stage processes on the terminal
        self.store = RunStore(run_dir)
        self.paths = RunPaths(self.store.root)
        self.store.bind(
            config,
            force=force,
            operational=OPERATIONAL,
            implied=IMPLIED_BEFORE,
            check_only=dry_run,
        )
        self.make_student = make_student
        self.timer = StageTimer(None if dry_run else self.store.root)
        self.teacher_calls_new = 0
        self.attempts = self.store.stage("attempts", Attempt)
        self.executions = self.store.stage("executions", Execution)
        self.solutions = self.store.stage("solutions", TeacherCall)
        self.refinements = self.store.stage("refinements", TeacherCall)
        self.verifications = self.store.stage("verifications", Execution)
        self.synth_calls = self.store.stage("synth_calls", TeacherCall)
        self.synth_tests = self.store.stage("synth_tests", SynthesizedTests)
        self._raw_pool: Pool | None = None
        self._pool: Pool | None = None
        self._tasks: dict[str, Task] | None = None

    # ---- the tasks -----------------------------------------------------------------------

    @property
    def raw_pool(self) -> Pool:
        """The pool as loaded: reference-only tasks still without tests."""
        if self._raw_pool is None:
            self._raw_pool = load_pool(
                self.config.pool,
                synthesize=self.config.synth.enabled,
                mbpp_shape=self.config.prompt.mbpp_shape,
            )
            for note in self._raw_pool.notes:
                self.progress.note(note)
        return self._raw_pool

    @property
    def pool(self) -> Pool:
        """The tasks every stage uses: reference-only tasks carry their synthesised tests;
        those not synthesised yet, or with too few surviving tests, are left out."""
        if self._pool is None:
            made = self.synth_tests.read()
            self._pool = with_synthesized(self.raw_pool, made, self.config.synth)
        return self._pool

    def forget_pool(self) -> None:
        """Read the pool again at next use (after tests were synthesised for it)."""
        self._pool = self._tasks = None

    @property
    def tasks(self) -> dict[str, Task]:
        if self._tasks is None:
            self._tasks = {t.id: t for t in self.pool.tasks}
        return self._tasks

    @property
    def chat(self) -> bool:
        # chat: the completion is the assistant turn (a fenced program); base: raw text.
        return self.config.student.chat

    @property
    def gated(self) -> bool:
        """Whether trained models are judged on held-out validation tasks."""
        return bool(self.config.pool.validation)

    # ---- where things go -----------------------------------------------------------------

    def stage_log(self, stage: str) -> str | None:
        """Where a stage process's own output goes (None with ``verbose``: the terminal)."""
        if self.verbose:
            return None
        self.store.logs.mkdir(parents=True, exist_ok=True)
        return str(self.store.logs / f"{stage.replace('/', '_').replace('@', '_')}.log")
