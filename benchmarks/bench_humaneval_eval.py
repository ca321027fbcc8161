"""Greedy evaluation of the default student (HumanEval, or ``--benchmark mbpp-test``): one
sequence at a time against many, and with prompt-lookup drafts, Q5_0 matrices served as Q8_0,
without the shared prefix, or without the early stop at a reply's usage example.

Runs the same evaluation (``persd.pipeline.model_eval.evaluate_model``, as ``persd eval`` does:
the student's chat prompts, greedy, 384 new tokens at most, stopped once the program is
answered, scored in the sandbox) with the llama.cpp student decoding ``parallel`` sequences
together, for each value given (``P+L``: P sequences with up to L prompt-lookup draft tokens
each, ``student.lookup``; ``Pq8``: ``student.q8_serving``; ``np``: every prompt decoded
whole, ``student.share_prefix`` off; ``nx``: a reply is stopped only once a closed block
defines the entry point, not already at the first top-level test line of its open block, the
rule before issue 35: ``extract.answer_complete``); the first is the baseline,
measured in the same run. Prints wall time, generation time, pass@1, the ratio to the
baseline, and how far greedy outputs agree per task (identical text; same verdict), with the
paired test of the two pass/fail lists: batching (or other kernels) changes the order of
floating-point sums, so the last bits of the logits, and a near tie between two tokens can go
the other way.

    python benchmarks/bench_humaneval_eval.py [--parallel 1,16,16+8,16q8,32q8np] [--limit N]
    python benchmarks/bench_humaneval_eval.py --benchmark mbpp-test --parallel 32q8,32q8nx
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import time
from pathlib import Path

from persd.evaluate.paired import paired
from persd.llm import extract
from persd.llm.student import StudentConfig
from persd.pipeline.config import EvalStageConfig
from persd.pipeline.model_eval import benchmark_tasks, evaluate_model
from persd.sandbox import SandboxConfig

_SPEC = re.compile(r"^(\d+)(?:\+(\d+))?((?:q8|np|nx)*)$")
_NEVER = re.compile(r"(?!)")  # a pattern that matches nothing


def _samples(out: Path) -> dict[str, dict]:
    with (out / "samples_base.jsonl").open() as f:
        return {row["task_id"]: row for row in map(json.loads, f)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="qwen2.5-coder-0.5b-instruct")
    ap.add_argument(
        "--parallel",
        default="1,16,16+8",
        help="comma-separated P or P+L (L lookup draft tokens), then q8 to serve Q5_0 "
        "matrices as Q8_0 (student.q8_serving), then np to decode every prompt whole "
        "(student.share_prefix off), nx to stop a reply only at a closed block (not at its "
        "usage example); the first is the baseline",
    )
    ap.add_argument("--benchmark", default="humaneval", help="humaneval or mbpp-test")
    ap.add_argument("--limit", type=int, default=None, help="a seeded sample (default: all)")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", type=Path, default=Path("bench-humaneval-eval"))
    args = ap.parse_args()
    tasks = benchmark_tasks(args.benchmark, EvalStageConfig(limit=args.limit))
    test_line = extract._TEST_LINE
    rows = []
    for parallel in args.parallel.split(","):
        if (spec := _SPEC.match(parallel)) is None:
            ap.error(f"--parallel: {parallel!r} is not P[+L][q8][np][nx]")
        p, lookup, flags = spec.groups()
        # nx: the stop rule before issue 35, for a same-run before/after
        extract._TEST_LINE = _NEVER if "nx" in flags else test_line
        out = args.out / f"parallel-{parallel}"
        shutil.rmtree(out, ignore_errors=True)  # a resumed journal would not be timed
        cfg = StudentConfig(
            model=args.model,
            backend="llama_cpp",
            parallel=int(p),
            lookup=int(lookup or 0),
            q8_serving="q8" in flags,
            share_prefix="np" not in flags,
            threads=args.threads,
        )
        start = time.perf_counter()
        report = evaluate_model(
            cfg, EvalStageConfig(), SandboxConfig(), benchmark=args.benchmark, out=out, tasks=tasks
        )
        wall = time.perf_counter() - start
        rows.append((parallel, wall, report, _samples(out)))
        print(
            f"parallel {parallel:>4}: wall {wall:7.1f} s, generation {report.generate_s:7.1f} s, "
            f"pass@1 {100 * report.pass1('base', 0):.1f}% on {len(tasks)} tasks",
            flush=True,
        )
    base_p, base_wall, base_report, base = rows[0]
    summary = []
    for parallel, wall, report, samples in rows:
        same_text = sum(samples[t]["completion"] == base[t]["completion"] for t in base)
        same_verdict = sum(samples[t]["status"] == base[t]["status"] for t in base)
        pair = paired(
            {t: r["passed"] for t, r in base.items()}, {t: r["passed"] for t, r in samples.items()}
        )
        line = {
            "parallel": parallel,
            "wall_s": round(wall, 1),
            "generate_s": round(report.generate_s or 0.0, 1),
            "pass_at_1": report.pass1("base", 0),
            "speedup_wall": round(base_wall / wall, 2),
            "speedup_generation": round(
                (base_report.generate_s or 0) / (report.generate_s or 1), 2
            ),
            "identical_text": same_text,
            "same_verdict": same_verdict,
            "versus_baseline": pair.describe(),
            "tasks": len(base),
        }
        summary.append(line)
        print(
            f"parallel {parallel:>4} vs {base_p}: {line['speedup_wall']:.2f}x wall, "
            f"{line['speedup_generation']:.2f}x generation; identical greedy text "
            f"{same_text}/{len(base)}, same verdict {same_verdict}/{len(base)}; "
            f"pass/fail {pair.describe()}"
        )
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")


if __name__ == "__main__":
    main()
