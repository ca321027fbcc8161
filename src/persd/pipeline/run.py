"""The distillation loop over a run directory: attempt → execute → solve → refine → verify →
build data. Each stage computes only what its file lacks, so a killed run resumes where it
stopped and a finished one reruns in seconds without a model or a teacher call.

Generation and execution never overlap: the student is freed before the sandbox runs its
attempts, and teacher servers are stopped before the refinements are verified. On a 2-core
machine a llama.cpp thread that shares its core with sandbox workers drops from ~45 tok/s to a
few, so running the two side by side is slower than running them in turn.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from persd.pipeline.attempt import missing_tasks, run_attempts
from persd.pipeline.build import build_datasets
from persd.pipeline.execute import execute
from persd.pipeline.heavy import evaluate_model, train_variant
from persd.pipeline.isolate import run_isolated
from persd.pipeline.pool import Pool, load_pool
from persd.pipeline.progress import LogProgress, Progress
from persd.pipeline.store import RunStore
from persd.pipeline.summary import RunSummary, summarise
from persd.pipeline.teach import ask_teacher, refine_requests, solve_requests
from persd.records import Attempt, Example, Execution, Task, TeacherCall
from persd.sandbox import Sandbox
from persd.tasks import load_benchmark
from persd.train.config import TrainConfig

if TYPE_CHECKING:
    from persd.config import RunConfig
    from persd.llm.base import Student, Teacher

STAGES = ("attempt", "execute", "solve", "refine", "verify", "build", "train", "evaluate")
# Settings that change how a run executes, not what it computes: free to differ on resume.
OPERATIONAL = (
    "sandbox.workers",
    "teacher.concurrency",
    "teacher.timeout_s",
    "teacher.max_attempts",
    "teacher.backoff_s",
    "teacher.backoff_max_s",
    "teacher.budget_usd",
    "teacher.max_calls",
    "teacher.server.slots",
    "teacher.server.threads_per_slot",
    "teacher.server.startup_timeout_s",
)


class _Timer:
    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - t0


def _extract_teacher(text: str, task: Task) -> str:
    from persd.llm.extract import extract_program

    return extract_program(text, prompt=task.prompt, entry_point=task.entry_point, chat=True)


def _default_student(config: RunConfig) -> Student:
    from persd.llm.student import load_student

    return load_student(config.student)


class Loop:
    """One run directory's loop. Stages are methods so ``persd <stage>`` can run one alone."""

    def __init__(
        self,
        config: RunConfig,
        run_dir: Path,
        *,
        progress: Progress | None = None,
        make_student: Callable[[RunConfig], Student] = _default_student,
        force: bool = False,
    ) -> None:
        self.config, self.progress = config, progress or LogProgress()
        self.store = RunStore(run_dir)
        self.store.bind(config, force=force, operational=OPERATIONAL)
        self.make_student = make_student
        self.timer = _Timer()
        self.teacher_calls_new = 0
        self.attempts = self.store.stage("attempts", Attempt)
        self.executions = self.store.stage("executions", Execution)
        self.solutions = self.store.stage("solutions", TeacherCall)
        self.refinements = self.store.stage("refinements", TeacherCall)
        self.verifications = self.store.stage("verifications", Execution)
        self._pool: Pool | None = None
        self._tasks: dict[str, Task] | None = None

    # ---- inputs ------------------------------------------------------------------------

    @property
    def pool(self) -> Pool:
        if self._pool is None:
            self._pool = load_pool(self.config.pool)
            for note in self._pool.notes:
                self.progress.note(note)
        return self._pool

    @property
    def tasks(self) -> dict[str, Task]:
        if self._tasks is None:
            self._tasks = {t.id: t for t in self.pool.tasks}
        return self._tasks

    @property
    def chat(self) -> bool:
        # chat: the completion is the assistant turn (a fenced program); base: raw text.
        return self.config.student.chat

    # ---- stages ------------------------------------------------------------------------

    def attempt(self) -> None:
        tasks = self.pool.tasks
        todo = missing_tasks(tasks, self.attempts, self.config.attempt, 0)
        if not todo:
            return
        with self.timer.stage("attempt"):
            advance = self.progress.start("attempt", len(todo))
            student = self.make_student(self.config)
            try:
                run_attempts(
                    tasks,
                    student,
                    self.attempts,
                    self.config.attempt,
                    chat=self.chat,
                    on_done=advance,
                )
            finally:
                student.close()  # free the weights before the sandbox and the teacher run

    def execute(self) -> None:
        programs = [
            (a.id, a.task_id, a.code) for a in self.attempts.read() if a.task_id in self.tasks
        ]
        self._run_programs("execute", programs, self.executions, test_set="seen")

    def _run_programs(self, stage: str, programs: Sequence, out, *, test_set) -> None:
        todo = [p for p in programs if p[0] not in out.ids()]
        if not todo:
            return
        with self.timer.stage(stage), Sandbox(self.config.sandbox) as sandbox:
            advance = self.progress.start(stage, len(todo))
            execute(todo, self.tasks, out, sandbox, test_set=test_set, on_done=advance)

    def failed_attempts(self) -> list[tuple[Attempt, Execution]]:
        runs = {e.id: e for e in self.executions.read()}
        return [
            (a, runs[a.id])
            for a in self.attempts.read()
            if a.id in runs and not runs[a.id].feedback.passed and a.task_id in self.tasks
        ]

    def teach(self) -> None:
        """Solve every task, verify the solutions, then refine every failed attempt."""
        cfg = self.config.teach
        solve = solve_requests(self.pool.tasks, cfg) if cfg.solve else []
        need_solve = [r for r in solve if r.id not in self.solutions.ids()]
        failed = self.failed_attempts()
        if not need_solve and not failed:
            self._verify_solutions()
            return
        asyncio.run(self._teach(solve, failed))

    async def _teach(self, solve: list, failed: list) -> None:
        from persd.llm.teacher import open_teacher

        lazy = _lazy_teacher(open_teacher, self.config, self.store.root)
        try:
            await self._teach_with(lazy, solve, failed)
        finally:
            self.teacher_calls_new += lazy.http_requests

    async def _teach_with(self, lazy: _lazy_teacher, solve: list, failed: list) -> None:

        cfg = self.config.teach
        # Refinement requests depend on verified solutions (the paper template's reference),
        # so solutions are checked first; if nothing is left to ask, no server is started.
        async with lazy as get_teacher:
            if any(r.id not in self.solutions.ids() for r in solve):
                with self.timer.stage("solve"):
                    advance = self.progress.start("solve", len(solve))
                    await ask_teacher(
                        solve,
                        await get_teacher(),
                        cfg,
                        self.solutions,
                        extract=_extract_teacher,
                        on_done=advance,
                    )
            await asyncio.to_thread(self._verify_solutions)
            references = self._verified_solutions()
            requests, fallbacks = refine_requests(self.tasks, failed, references, cfg)
            if fallbacks:
                self.progress.note(
                    f"refine: {fallbacks} task(s) had no verified reference; used the one-turn "
                    "template for them"
                )
            todo = [r for r in requests if r.id not in self.refinements.ids()]
            if todo:
                with self.timer.stage("refine"):
                    advance = self.progress.start("refine", len(todo))
                    await ask_teacher(
                        todo,
                        await get_teacher(),
                        cfg,
                        self.refinements,
                        extract=_extract_teacher,
                        on_done=advance,
                    )

    def _verify_solutions(self) -> None:
        programs = [
            (s.id, s.task_id, s.code) for s in self.solutions.read() if s.task_id in self.tasks
        ]
        self._run_programs("verify", programs, self.verifications, test_set="all")

    def _verified_solutions(self) -> dict[str, str]:
        ok = {v.id for v in self.verifications.read() if v.feedback.passed}
        out: dict[str, str] = {}
        for s in self.solutions.read():
            if s.id in ok:
                out.setdefault(s.task_id, s.code)
        return out

    def verify(self) -> None:
        programs = [
            (r.id, r.task_id, r.code) for r in self.refinements.read() if r.task_id in self.tasks
        ]
        self._verify_solutions()
        self._run_programs("verify", programs, self.verifications, test_set="all")

    def build(self) -> dict[str, list[Example]]:
        from persd.llm.prompts import student_prompt

        with self.timer.stage("build"):
            built = build_datasets(
                self.pool.tasks,
                self.attempts.read(),
                {e.id: e for e in self.executions.read()},
                self.solutions.read(),
                self.refinements.read(),
                {v.id: v for v in self.verifications.read()},
                variants=self.config.data.variants,
                chat=self.chat,
                student_prompt=lambda t: student_prompt(t, chat=self.chat),
                refine_template=self.config.data.refine_template,
                feedback_chars=self.config.teach.feedback_max_chars,
                unfiltered=self.config.data.unfiltered,
            )
            for name, rows in built.rows.items():
                self.store.dataset(name, Example).rewrite(rows)
            for reason, count in sorted(built.skipped.items()):
                self.progress.note(f"build: {count} × {reason}")
        return built.rows

    def train(self) -> dict[str, Path]:
        """Fine-tune the student on each ``train.variants`` set, each in its own process; a
        finished variant is kept, an interrupted one resumes from its newest checkpoint."""
        cfg = self.config.train
        fmt = "chat" if self.chat else "base"
        trained: dict[str, Path] = {}
        for variant in cfg.variants:
            out = self.store.root / "models" / variant
            data = self.store.root / "data" / f"{variant}.jsonl"
            if (out / "train_summary.json").exists():
                trained[variant] = out / "final"
                continue
            if not data.exists() or not data.read_text().strip():
                self.progress.note(f"train: {variant} has no examples; not trained")
                continue
            resume = out.exists() and any(out.glob("checkpoint-*"))
            if out.exists() and not resume:
                shutil.rmtree(out)  # a start that wrote no checkpoint: nothing to keep
            settings = TrainConfig.model_validate(
                cfg.model_dump(exclude={"variants"}) | {"format": fmt, "resume": resume}
            )
            with self.timer.stage(f"train {variant}"):
                self.progress.note(f"train: {variant} ({data}) -> {out}")
                model_dir = run_isolated(
                    f"train {variant}",
                    train_variant,
                    settings.model_dump_json(),
                    str(data),
                    self.config.student.model,
                    str(out),
                )
            trained[variant] = Path(model_dir)
        return trained

    def evaluate(self, trained: dict[str, Path] | None = None) -> dict[str, dict]:
        """Score the base student and each trained variant with the same settings."""
        cfg = self.config.evaluate
        if trained is None:  # the variants a previous invocation finished training
            models = self.store.root / "models"
            trained = {
                v: models / v / "final"
                for v in self.config.train.variants
                if (models / v / "train_summary.json").exists()
            }
        results: dict[str, dict] = {}
        for name, adapter in [("base", None), *trained.items()]:
            student = self.config.student.model_dump(mode="json")
            student["backend"] = cfg.backend or student["backend"]
            student["adapter"] = str(adapter) if adapter else None
            for bench in cfg.benchmarks:
                out = self.store.root / "eval" / name / bench
                if (out / "report.json").exists():
                    results.setdefault(name, {})[bench] = json.loads(
                        (out / "report.json").read_text()
                    )
                    continue
                total = cfg.limit or len(load_benchmark(bench))
                with self.timer.stage(f"eval {name}"):
                    results.setdefault(name, {})[bench] = run_isolated(
                        f"evaluate {name} on {bench}",
                        evaluate_model,
                        json.dumps(student),
                        self.config.sandbox.model_dump_json(),
                        cfg.model_dump_json(),
                        bench,
                        str(out),
                        on_tick=self.progress.start(f"eval {name} {bench}", total),
                    )
        return results

    # ---- all of it ---------------------------------------------------------------------

    def run(self, *, train: bool = True, evaluate: bool = True) -> RunSummary:
        self.attempt()
        self.execute()
        self.teach()
        self.verify()
        datasets = self.build()
        trained = self.train() if train else {}
        evals = self.evaluate(trained) if evaluate else {}
        summary = self.summary(datasets).model_copy(update={"evaluation": _pass1(evals)})
        (self.store.root / "summary.json").write_text(summary.model_dump_json(indent=2))
        return summary

    def summary(self, datasets: dict[str, list[Example]] | None = None) -> RunSummary:
        if datasets is None:
            datasets = {
                p.stem: self.store.dataset(p.stem, Example).read()
                for p in sorted((self.store.root / "data").glob("*.jsonl"))
            }
        tasks = self.tasks
        return summarise(
            tasks=len(tasks),
            tasks_removed=len(self.pool.removed),
            attempts=[a for a in self.attempts.read() if a.task_id in tasks],
            executions={e.id: e for e in self.executions.read()},
            solutions=[s for s in self.solutions.read() if s.task_id in tasks],
            refinements=[r for r in self.refinements.read() if r.task_id in tasks],
            verifications={v.id: v for v in self.verifications.read()},
            datasets=datasets,
            teacher_calls_new=self.teacher_calls_new,
            stage_seconds=self.timer.seconds,
        )


def _pass1(evals: dict[str, dict]) -> dict[str, dict[str, float]]:
    """model -> benchmark -> pass@1 at step 0 (the table's headline numbers)."""
    return {
        model: {bench: r["steps"][0]["pass_at"]["1"] for bench, r in by_bench.items()}
        for model, by_bench in evals.items()
    }


class _lazy_teacher:  # noqa: N801 - used as a context manager, like contextlib's
    """Open the teacher (and start its server) only when a request actually needs it."""

    def __init__(self, opener: Callable, config: RunConfig, run_dir: Path) -> None:
        self._opener, self._config, self._run_dir = opener, config, run_dir
        self._cm = None
        self._teacher: Teacher | None = None

    async def __aenter__(self) -> Callable:
        async def get() -> Teacher:
            if self._teacher is None:
                self._cm = self._opener(self._config.teacher, run_dir=self._run_dir)
                self._teacher = await self._cm.__aenter__()
            return self._teacher

        return get

    @property
    def http_requests(self) -> int:
        """HTTP calls the teacher made (retries included); cache hits are not calls."""
        return int(getattr(self._teacher, "http_requests", 0))

    async def __aexit__(self, *exc: object) -> None:
        if self._cm is not None:
            await self._cm.__aexit__(*exc)
