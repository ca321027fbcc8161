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
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from persd.evaluate.paired import Paired, paired
from persd.pipeline.attempt import missing_tasks, run_attempts
from persd.pipeline.build import build_datasets
from persd.pipeline.evaluate import evaluate_isolated
from persd.pipeline.execute import execute
from persd.pipeline.gate import GateResult, candidates, decide, per_task
from persd.pipeline.isolate import run_isolated
from persd.pipeline.pool_stage import Pool, load_pool
from persd.pipeline.progress import LogProgress, Progress
from persd.pipeline.store import RunDirError, RunStore, StageFile
from persd.pipeline.summary import RoundSummary, RunSummary, round_rows, summarise
from persd.pipeline.synth import (
    needs_tests,
    parse_calls,
    probe_all,
    synth_requests,
    with_tests,
)
from persd.pipeline.teach import ask_teacher, refine_requests, solve_requests
from persd.pipeline.training import train_variant
from persd.records import Attempt, Example, Execution, SynthesizedTests, Task, TeacherCall
from persd.sandbox import Sandbox
from persd.tasks import load_benchmark
from persd.train.config import TrainConfig

if TYPE_CHECKING:
    from persd.config import RunConfig
    from persd.llm.base import Student, Teacher
    from persd.llm.student import StudentConfig
    from persd.pipeline.config import TeachConfig
    from persd.pipeline.store import StageFile
    from persd.pipeline.teach import Extract, TeacherRequest

STAGES = ("attempt", "execute", "solve", "refine", "verify", "build", "train", "evaluate")
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
        dry_run: bool = False,
        verbose: bool = False,
    ) -> None:
        self.config, self.progress = config, progress or LogProgress()
        self.verbose = verbose  # third-party output of stage processes on the terminal
        self.store = RunStore(run_dir)
        self.store.bind(config, force=force, operational=OPERATIONAL, check_only=dry_run)
        self.make_student = make_student
        self.timer = _Timer()
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

    # ---- inputs ------------------------------------------------------------------------

    @property
    def raw_pool(self) -> Pool:
        """The pool as loaded: reference-only tasks still without tests."""
        if self._raw_pool is None:
            self._raw_pool = load_pool(self.config.pool, synthesize=self.config.synth.enabled)
            for note in self._raw_pool.notes:
                self.progress.note(note)
        return self._raw_pool

    @property
    def pool(self) -> Pool:
        """The tasks every stage uses: reference-only tasks carry their synthesised tests;
        those not synthesised yet, or with too few surviving tests, are left out."""
        if self._pool is None:
            raw = self.raw_pool
            made = {r.task_id: r for r in self.synth_tests.read()}
            tasks, removed = [], dict(raw.removed)
            for task in raw.tasks:
                if not needs_tests(task):
                    tasks.append(task)
                elif task.id not in made:
                    removed[task.id] = "tests not synthesised yet"
                elif (ready := with_tests(task, made[task.id], self.config.synth)) is None:
                    removed[task.id] = "too few synthesised tests survived"
                else:
                    tasks.append(ready)
            self._pool = Pool(
                tasks=tuple(tasks), notes=raw.notes, removed=removed, validation=raw.validation
            )
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

    def round_tasks(self, round_: int) -> list[Task]:
        """The tasks round ``round_`` attempts (see ``RoundsConfig.tasks``)."""
        tasks = list(self.pool.tasks)
        rounds = self.config.rounds
        if rounds.tasks == "fresh":
            n = len(tasks)
            return tasks[round_ * n // rounds.count : (round_ + 1) * n // rounds.count]
        if round_ == 0:
            return tasks
        runs = {e.id: e for e in self.executions.read()}
        failed = {
            a.task_id
            for a in self.attempts.read()
            if a.round == round_ - 1 and a.id in runs and not runs[a.id].feedback.passed
        }
        return [t for t in tasks if t.id in failed]

    def student_config(self, round_: int) -> StudentConfig:
        """Round 0 attempts with the base student; round r with round r-1's trained model."""
        if round_ == 0:
            return self.config.student
        model = self.trained_model(self.config.round_variant, round_ - 1)
        if model is None:
            raise RunDirError(
                f"{self.store.root}: round {round_} needs the model trained in round "
                f"{round_ - 1} ({self.config.round_variant}), and none was trained"
            )
        return trained_student(self.config.student, model)

    def synthesize(self) -> None:
        """Tests for reference-only pool tasks: teacher inputs, reference outputs (synth.py)."""
        cfg = self.config.synth
        pending = [t for t in self.raw_pool.tasks if needs_tests(t)]
        todo = [t for t in pending if t.id not in self.synth_tests.ids()]
        if not cfg.enabled or not todo:
            return  # nothing to ask or probe: every later call of a run lands here
        requests = [r for r in synth_requests(todo, cfg) if r.id not in self.synth_calls.ids()]
        if requests:
            asyncio.run(self._with_teacher(lambda lazy: self._ask_synth(lazy, requests)))
        with self.timer.stage("synthesize"), Sandbox(self.config.sandbox) as sandbox:
            advance = self.progress.start("synthesize: probe", len(todo))
            calls = self.synth_calls.read()
            probe_all(todo, calls, self.synth_tests, sandbox, cfg, on_done=advance)
        self._pool = self._tasks = None  # the tasks now carry their tests
        made = [r for r in self.synth_tests.read() if r.task_id in {t.id for t in pending}]
        kept = sum(len(r.tests) for r in made)
        short = sum(len(r.tests) < cfg.min_tests for r in made)
        self.progress.note(
            f"synthesize: {kept} test(s) for {len(made) - short} task(s) from "
            f"{sum(r.proposed for r in made)} proposed input(s); {short} task(s) dropped "
            f"(fewer than {cfg.min_tests} tests survived)"
        )

    async def _ask_synth(self, lazy: _lazy_teacher, requests: list) -> None:
        cfg = self.config.synth
        # The teacher's sampling for test inputs is the synth section's, not teach's.
        params = self.config.teach.model_copy(
            update={
                "temperature": cfg.temperature,
                "max_new_tokens": cfg.max_new_tokens,
                "seed": cfg.seed,
            }
        )
        async with lazy as get_teacher:
            await self._ask(
                "synthesize",
                get_teacher,
                requests,
                params,
                self.synth_calls,
                lambda text, task: "\n".join(parse_calls(text, task.entry_point, cfg.inputs)),
                label="synthesize: ask",
            )

    async def _ask(
        self,
        stage: str,
        get_teacher: Callable[[], Awaitable[Teacher]],
        requests: Sequence[TeacherRequest],
        params: TeachConfig,
        store: StageFile,
        extract: Extract,
        *,
        label: str | None = None,
    ) -> None:
        """One timed, progress-reporting round of teacher calls, stored as they arrive."""
        with self.timer.stage(stage):
            advance = self.progress.start(label or stage, len(requests))
            await ask_teacher(
                requests, await get_teacher(), params, store, extract=extract, on_done=advance
            )

    def attempt(self, round_: int = 0) -> None:
        self.synthesize()
        tasks = self.round_tasks(round_)
        todo = missing_tasks(tasks, self.attempts, self.config.attempt, round_)
        if not todo:
            return
        with self.timer.stage("attempt"):
            label = "attempt" if round_ == 0 else f"attempt r{round_}"
            advance = self.progress.start(label, len(todo))
            config = self.config.model_copy(update={"student": self.student_config(round_)})
            student = self.make_student(config)
            try:
                run_attempts(
                    tasks,
                    student,
                    self.attempts,
                    self.config.attempt,
                    chat=self.chat,
                    round_=round_,
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
        asyncio.run(self._with_teacher(lambda lazy: self._teach_with(lazy, solve, failed)))

    async def _with_teacher(self, work: Callable[[_lazy_teacher], Awaitable[None]]) -> None:
        """Run ``work`` with a teacher opened on first use; count the HTTP calls it made."""
        from persd.llm.teacher import open_teacher

        lazy = _lazy_teacher(open_teacher, self.config, self.store.root)
        try:
            await work(lazy)
        finally:
            self.teacher_calls_new += lazy.http_requests

    async def _teach_with(self, lazy: _lazy_teacher, solve: list, failed: list) -> None:
        cfg = self.config.teach
        # Refinement requests depend on verified solutions (the paper template's reference),
        # so solutions are checked first; if nothing is left to ask, no server is started.
        async with lazy as get_teacher:
            if any(r.id not in self.solutions.ids() for r in solve):
                await self._ask("solve", get_teacher, solve, cfg, self.solutions, _extract_teacher)
            await asyncio.to_thread(self._verify_solutions)
            references = self._verified_solutions()
            requests, fallbacks = refine_requests(
                self.tasks,
                failed,
                references,
                cfg,
                feedback_max_chars=self.config.prompt.feedback_max_chars,
            )
            if fallbacks:
                self.progress.note(
                    f"refine: {fallbacks} task(s) had no verified reference; used the one-turn "
                    "template for them"
                )
            todo = [r for r in requests if r.id not in self.refinements.ids()]
            if todo:
                await self._ask(
                    "refine", get_teacher, todo, cfg, self.refinements, _extract_teacher
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

    def data_dir(self, round_: int = 0) -> Path:
        root = self.store.root / "data"
        return root if round_ == 0 else root / f"r{round_}"

    def model_dir(self, variant: str, round_: int = 0) -> Path:
        root = self.store.root / "models"
        return root / variant if round_ == 0 else root / f"r{round_}" / variant

    def trained_model(self, variant: str, round_: int) -> Path | None:
        """The newest model of ``variant`` trained in a round <= ``round_`` (a round with no
        examples trains nothing and leaves the previous round's model in place)."""
        for r in range(round_, -1, -1):
            out = self.model_dir(variant, r)
            if _finished(out):
                return out / "final"
        return None

    def build(self, round_: int = 0) -> dict[str, list[Example]]:
        from persd.llm.prompts import student_prompt

        tasks = self.round_tasks(round_)
        attempts = [a for a in self.attempts.read() if a.round == round_]
        variants = self.config.data.variants if round_ == 0 else (self.config.round_variant,)
        with self.timer.stage("build"):
            built = build_datasets(
                tasks,
                attempts,
                {e.id: e for e in self.executions.read()},
                self.solutions.read(),
                self.refinements.read(),
                {v.id: v for v in self.verifications.read()},
                variants=variants,
                chat=self.chat,
                student_prompt=lambda t: student_prompt(t, chat=self.chat),
                prompt_config=self.config.prompt,
                unfiltered=self.config.data.unfiltered and round_ == 0,
                seed=self.config.data.seed,
            )
            for name, rows in built.rows.items():
                StageFile(self.data_dir(round_) / f"{name}.jsonl", Example).rewrite(rows)
            for reason, count in sorted(built.skipped.items()):
                self.progress.note(f"build: {count} × {reason}")
        return built.rows

    def train(self, round_: int = 0) -> dict[str, Path]:
        """Fine-tune the student on each ``train.variants`` set (round 0) or on the round
        variant (later rounds), each in its own process; a finished model is kept, an
        interrupted one resumes from its newest checkpoint."""
        cfg = self.config.train
        fmt = "chat" if self.chat else "base"
        continuing = round_ > 0 and self.config.rounds.training == "continue"
        variants = cfg.variants if round_ == 0 else (self.config.round_variant,)
        trained: dict[str, Path] = {}
        for variant in variants:
            out = self.model_dir(variant, round_)
            name = model_name(variant, round_)
            if _finished(out):
                trained[name] = out / "final"
                continue
            if not _has_rows(self.data_dir(round_) / f"{variant}.jsonl"):
                # Nothing new this round: the previous round's model stays the student.
                self.progress.note(f"train: {name} has no examples; not trained")
                continue
            rounds = [round_] if round_ == 0 or continuing else list(range(round_ + 1))
            data = [self.data_dir(r) / f"{variant}.jsonl" for r in rounds]
            data = [d for d in data if _has_rows(d)]
            base, init_adapter = self.config.student.model, None
            if continuing:
                previous = self.trained_model(variant, round_ - 1)
                if previous is None:
                    raise RunDirError(
                        f"{self.store.root}: round {round_} continues round {round_ - 1}'s "
                        f"{variant} model, and none was trained"
                    )
                if cfg.method == "lora":
                    init_adapter = str(previous)
                else:
                    base = str(previous)
            resume = out.exists() and any(out.glob("checkpoint-*"))
            if out.exists() and not resume:
                shutil.rmtree(out)  # a start that wrote no checkpoint: nothing to keep
            extra = {"format": fmt, "resume": resume, "init_adapter": init_adapter}
            if self.gated and self.config.gate.epochs:
                # Every epoch's checkpoint stays, for the gate to score.
                extra |= {"save_strategy": "epoch", "save_total_limit": None}
            settings = TrainConfig.model_validate(cfg.model_dump(exclude={"variants"}) | extra)
            with self.timer.stage(f"train {name}"):
                self.progress.note(f"train: {name} ({', '.join(map(str, data))}) -> {out}")
                model_dir = run_isolated(
                    f"train {name}",
                    train_variant,
                    settings.model_dump_json(),
                    json.dumps([str(d) for d in data]),
                    base,
                    str(out),
                    on_note=lambda m, name=name: self.progress.note(f"train {name}: {m}"),
                    log_path=self._stage_log(f"train-{name}"),
                )
            trained[name] = Path(model_dir)
        return trained

    def trained_models(self) -> dict[str, Path]:
        """Every model a previous invocation finished training, by evaluation name."""
        found: dict[str, Path] = {}
        for variant in self.config.train.variants:
            if _finished(self.model_dir(variant)):
                found[variant] = self.model_dir(variant) / "final"
        variant = self.config.round_variant if self.config.train.variants else None
        for r in range(1, self.config.rounds.count):
            if variant and _finished(self.model_dir(variant, r)):
                found[model_name(variant, r)] = self.model_dir(variant, r) / "final"
        return found

    def _stage_log(self, stage: str) -> str | None:
        """Where a stage process's own output goes (None with ``verbose``: the terminal)."""
        if self.verbose:
            return None
        self.store.logs.mkdir(parents=True, exist_ok=True)
        return str(self.store.logs / f"{stage.replace('/', '_').replace('@', '_')}.log")

    @property
    def gated(self) -> bool:
        """Whether trained models are judged on held-out validation tasks."""
        return bool(self.config.pool.validation)

    def _evaluate_one(
        self, name: str, model: Path | None, bench: str, out: Path, tasks: Sequence[Task] | None
    ) -> dict:
        """One model on one benchmark (or on ``tasks``), in its own process; reused when done."""
        if (out / "report.json").exists():
            return json.loads((out / "report.json").read_text())
        cfg = self.config.evaluate
        if tasks is not None:
            cfg = cfg.model_copy(update={"refine_steps": 0})  # the gate compares step 0 only
        base = self.config.student
        student = (trained_student(base, model) if model else base).model_dump(mode="json")
        student["backend"] = cfg.backend or student["backend"]
        total = len(tasks) if tasks is not None else cfg.limit or len(load_benchmark(bench))
        label = "validate" if tasks is not None else "eval"
        with self.timer.stage(f"{label} {name}"):
            return run_isolated(
                f"{label} {name} on {bench}",
                evaluate_isolated,
                json.dumps(student),
                self.config.sandbox.model_dump_json(),
                cfg.model_dump_json(),
                bench,
                str(out),
                self.config.prompt.model_dump_json(),
                json.dumps([t.model_dump(mode="json") for t in tasks]) if tasks else "null",
                on_tick=self.progress.start(f"{label} {name} {bench}", total),
                on_note=self.progress.note,
                log_path=self._stage_log(f"{label}-{name}-{bench}"),
            )

    def validate(self, trained: dict[str, Path]) -> GateResult | None:
        """The held-out gate (gate.py): base and every trained checkpoint on the validation
        tasks; the decision is written to ``gate.json``."""
        tasks = self.pool.validation
        if not tasks or not trained:
            return None
        root = self.store.root / "validation"
        self._evaluate_one("base", None, "validation", root / "base", tasks)
        base = per_task(root / "base")
        scored = []
        for name, final in trained.items():
            for cand in candidates(name, final, epochs=self.config.gate.epochs):
                out = root / cand.label
                self._evaluate_one(cand.label, Path(cand.path), "validation", out, tasks)
                scored.append((cand, per_task(out)))
        result = decide(base, scored, self.config.gate)
        (self.store.root / "gate.json").write_text(result.model_dump_json(indent=2))
        self.progress.note(f"gate: {result.verdict}")
        return result

    def evaluate(
        self, trained: dict[str, Path] | None = None, gate: GateResult | None = None
    ) -> dict[str, dict]:
        """Score the base student and each trained model with the same settings. With a gate,
        each variant is scored at the checkpoint the gate found best for it."""
        if trained is None:
            trained = self.trained_models()
        if gate is None and (self.store.root / "gate.json").exists():
            gate = GateResult.model_validate_json((self.store.root / "gate.json").read_text())
        if gate is not None:
            # Each variant at its best checkpoint, named for it (persd_combined@epoch1).
            best = {
                row.candidate.variant: row.candidate
                for row in gate.rows
                if row.decision != "not its variant's best"
            }
            trained = {
                (best[n].label if n in best else n): (Path(best[n].path) if n in best else p)
                for n, p in trained.items()
            }
        results: dict[str, dict] = {}
        for name, model in [("base", None), *trained.items()]:
            for bench in self.config.evaluate.benchmarks:
                out = self.store.root / "eval" / name / bench
                results.setdefault(name, {})[bench] = self._evaluate_one(
                    name, model, bench, out, None
                )
        return results

    def versus_base(self, names: Sequence[str]) -> dict[str, dict[str, Paired]]:
        """Each evaluated model against the base, per benchmark, paired per task."""
        out: dict[str, dict[str, Paired]] = {}
        for bench in self.config.evaluate.benchmarks:
            base_dir = self.store.root / "eval" / "base" / bench
            if not (base_dir / "samples_base.jsonl").exists():
                continue
            base = per_task(base_dir)
            for name in names:
                model_dir = self.store.root / "eval" / name / bench
                if name != "base" and (model_dir / "samples_base.jsonl").exists():
                    out.setdefault(name, {})[bench] = paired(base, per_task(model_dir))
        return out

    # ---- all of it ---------------------------------------------------------------------

    def run(self, *, train: bool = True, evaluate: bool = True) -> RunSummary:
        rounds = self.config.rounds.count if train else 1
        if rounds < self.config.rounds.count:
            self.progress.note(
                f"rounds: {self.config.rounds.count} configured, but without training only "
                "round 0 can run"
            )
        datasets: dict[str, list[Example]] = {}
        trained: dict[str, Path] = {}
        for r in range(rounds):
            if r > 0 and not self._round_can_start(r):
                break
            self.attempt(r)
            self.execute()
            self.teach()
            self.verify()
            built = self.build(r)
            if r == 0:
                datasets = built
            if train:
                trained |= self.train(r)
        gate = self.validate(trained) if train and self.gated else None
        evals = self.evaluate(trained, gate) if evaluate else {}
        summary = self.summary(datasets).model_copy(
            update={
                "evaluation": _pass1(evals),
                "validation_tasks": len(self.pool.validation),
                "gate": gate,
                "kept": gate.kept if gate else None,
                "versus_base": self.versus_base(list(evals)),
            }
        )
        (self.store.root / "summary.json").write_text(summary.model_dump_json(indent=2))
        return summary

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
            tasks_by_id=tasks,
        ).model_copy(update={"rounds": self.round_summaries()})

    def round_summaries(self) -> list[RoundSummary]:
        """One row per round that has attempts (none when the run has a single round)."""
        if self.config.rounds.count == 1:
            return []
        variant = self.config.round_variant
        return round_rows(
            attempts=[a for a in self.attempts.read() if a.task_id in self.tasks],
            executions={e.id: e for e in self.executions.read()},
            refinements=self.refinements.read(),
            verifications={v.id: v for v in self.verifications.read()},
            examples={
                r: len(StageFile(self.data_dir(r) / f"{variant}.jsonl", Example).read())
                for r in range(self.config.rounds.count)
            },
            trained={
                r: _finished(self.model_dir(variant, r)) for r in range(self.config.rounds.count)
            },
            training=self.config.rounds.training,
            tasks_mode=self.config.rounds.tasks,
        )


def _finished(out: Path) -> bool:
    """A training run that completed AND whose model is here: a run directory copied from
    another machine keeps ``train_summary.json`` but never the weights, so it trains again."""
    return (out / "train_summary.json").exists() and (out / "final").is_dir()


def _has_rows(path: Path) -> bool:
    return path.exists() and bool(path.read_text().strip())


def model_name(variant: str, round_: int) -> str:
    """How a trained model is named in eval/ and in summaries: ``persd_combined@r1``."""
    return variant if round_ == 0 else f"{variant}@r{round_}"


def trained_student(base: StudentConfig, model: Path) -> StudentConfig:
    """The student config that samples a trained model: the base weights plus the adapter
    (LoRA; llama.cpp applies it to the same GGUF) or the trained weights themselves (full
    fine-tuning, an HF directory llama.cpp cannot read, so transformers samples it)."""
    if (model / "adapter_config.json").is_file():
        return base.model_copy(update={"adapter": model})
    backend = "transformers" if base.backend == "llama_cpp" else base.backend
    return base.model_copy(update={"model": str(model), "adapter": None, "backend": backend})


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
