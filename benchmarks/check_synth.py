"""How good are synthesised tests? Judge real student programs with them and with the task's
own tests, and count where the two verdicts agree.

Takes the tasks of a finished run (default: the committed default run, 40 MBPP tasks), strips
their tests so only the instruction and the reference remain, has persd synthesise tests with
the given teacher (the same code path as ``persd run`` on a reference-only pool), then runs
every attempt of that run against (a) the synthesised tests and (b) the task's own hidden
tests, in the same sandbox.

A synthesised suite is useful when it fails what the real tests fail (no wrong program slips
through) and passes what they pass (no correct program is rejected).

Usage: python benchmarks/check_synth.py [--run results/default-run]
       [--teacher qwen2.5-coder-1.5b-instruct] [--out /tmp/check-synth]
"""

from __future__ import annotations

import argparse
import json
import time
from collections import Counter
from pathlib import Path

from persd.config import load_config
from persd.pipeline.run import Loop
from persd.pipeline.store import StageFile
from persd.records import Attempt
from persd.sandbox import Job, Sandbox
from persd.tasks import load_benchmark


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", type=Path, default=Path("results/default-run"))
    ap.add_argument("--teacher", default="qwen2.5-coder-1.5b-instruct")
    ap.add_argument("--out", type=Path, default=Path("/tmp/check-synth"))
    args = ap.parse_args()

    attempts = StageFile(args.run / "attempts.jsonl", Attempt).read()
    wanted = {a.task_id for a in attempts}
    tasks = {
        t.id: t
        for name in ("mbpp-validation", "mbpp-train")
        for t in load_benchmark(name)
        if t.id in wanted
    }
    args.out.mkdir(parents=True, exist_ok=True)
    pool = args.out / "reference_only.jsonl"
    with pool.open("w") as f:
        for t in tasks.values():
            row = {
                "id": t.id,
                "instruction": t.instruction,
                "entry_point": t.entry_point,
                "prompt": t.prompt,
                "reference": t.reference,
                "setup_code": t.setup_code,
            }
            f.write(json.dumps(row) + "\n")

    config = load_config(
        None,
        {
            "pool": {"source": str(pool), "decontaminate": False},
            "teacher": {
                "model": args.teacher,
                "api_key_env": None,
                "server": {"model": args.teacher, "slots": 2},
            },
        },
    )
    loop = Loop(config, args.out / "run", force=True)
    t0 = time.perf_counter()
    loop.synthesize()
    took = time.perf_counter() - t0
    made = {r.task_id: r for r in loop.synth_tests.read()}
    synth_tasks = {t.id: t for t in loop.pool.tasks}

    dropped: Counter[str] = Counter()
    for r in made.values():
        dropped.update(r.dropped)
    kept = [len(r.tests) for r in made.values()]
    print(f"teacher {args.teacher}: {len(made)} tasks asked, {took:.0f} s")
    print(
        f"inputs proposed {sum(r.proposed for r in made.values())}, kept {sum(kept)}; "
        f"dropped {dict(dropped)}"
    )
    print(
        f"tasks with >= {config.synth.min_tests} tests: {len(synth_tasks)}/{len(made)}; "
        f"tests per task min/median/max {min(kept)}/{sorted(kept)[len(kept) // 2]}/{max(kept)}"
    )

    judged = [a for a in attempts if a.task_id in synth_tasks]
    with Sandbox(config.sandbox) as sandbox:
        real = sandbox.run_many([Job.for_task(tasks[a.task_id], a.code) for a in judged])
        synth = sandbox.run_many(
            [Job.for_task(synth_tasks[a.task_id], a.code, "hidden") for a in judged]
        )
        refs = sandbox.run_many(
            [Job.for_task(synth_tasks[t], tasks[t].reference or "", "hidden") for t in synth_tasks]
        )
    table = Counter((r.passed, s.passed) for r, s in zip(real, synth, strict=True))
    print(f"references passing their synthesised tests: {sum(f.passed for f in refs)}/{len(refs)}")
    print(f"student attempts judged: {len(judged)} (tasks with synthesised tests)")
    print("                       synth pass  synth fail")
    print(f"real tests pass        {table[(True, True)]:>10}  {table[(True, False)]:>10}")
    print(f"real tests fail        {table[(False, True)]:>10}  {table[(False, False)]:>10}")
    agree = table[(True, True)] + table[(False, False)]
    print(f"agreement {agree}/{len(judged)}")
    for a, r, s in zip(judged, real, synth, strict=True):
        if r.passed != s.passed:
            print(f"  disagree {a.task_id}: real {r.status}, synthesised {s.status}")


if __name__ == "__main__":
    main()
