"""What a few LoRA steps on a handful of rows do to the default student, on held-out tasks.

Trains the default student on one training file with each learning rate given, then scores
the base and every trained model greedily on a seeded sample of HumanEval tasks (never the
first N), paired per task against the base (exact McNemar). Resumable: a finished model or
evaluation is reused. Run from the project root:

    python experiments/recipe_sweep.py DATA.jsonl OUT_DIR --lrs 2e-4,2e-5 --tasks 40
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
from pathlib import Path

STUDENT = "qwen2.5-coder-0.5b-instruct"


def _train(data: Path, out: Path, lr: float, epochs: float) -> None:
    if (out / "train_summary.json").exists():
        return
    code = (
        "import sys; from pathlib import Path; from persd.train.config import TrainConfig;"
        "from persd.train.sft import train;"
        f"train(TrainConfig(format='chat', epochs={epochs}, learning_rate={lr}, batch_size=1,"
        f" grad_accum=8, save_steps=1000), [Path({str(data)!r})], {STUDENT!r}, Path({str(out)!r}))"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def _evaluate(adapter: Path | None, task_ids: list[str], out: Path) -> dict[str, bool]:
    report = out / "per_task.json"
    if report.exists():
        return json.loads(report.read_text())
    code = f"""
import json
from pathlib import Path
from persd.evaluate.multistep import evaluate_student
from persd.llm.student import StudentConfig, load_student
from persd.sandbox import Sandbox, SandboxConfig
from persd.tasks import load_benchmark
ids = {task_ids!r}
by_id = {{t.id: t for t in load_benchmark('humaneval')}}
tasks = [by_id[i] for i in ids]
adapter = {str(adapter) if adapter else None!r}
cfg = StudentConfig(model={STUDENT!r}, backend='llama_cpp', adapter=adapter)
student = load_student(cfg)
with Sandbox(SandboxConfig()) as sb:
    evaluate_student(student, tasks, sb, benchmark='humaneval', out_dir=Path({str(out)!r}))
student.close()
"""
    subprocess.run([sys.executable, "-c", code], check=True)
    samples = next(out.glob("samples*.jsonl"))
    per_task = {r["task_id"]: r["passed"] for r in map(json.loads, samples.open())}
    report.write_text(json.dumps(per_task, indent=1))
    return per_task


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("data", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--lrs", default="2e-4,2e-5")
    ap.add_argument("--epochs", type=float, default=2.0)
    ap.add_argument("--tasks", type=int, default=40)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    from persd.evaluate.paired import mcnemar_exact
    from persd.tasks import load_benchmark

    ids = [t.id for t in load_benchmark("humaneval")]
    sample = sorted(random.Random(args.seed).sample(ids, args.tasks), key=ids.index)
    base = _evaluate(None, sample, args.out / "eval-base")
    rows = [f"base: {sum(base.values())}/{len(base)}"]
    print(rows[0], flush=True)
    for lr in args.lrs.split(","):
        tag = f"lr{lr}" + (f"-e{args.epochs:g}" if args.epochs != 2.0 else "")
        model = args.out / tag
        _train(args.data, model, float(lr), args.epochs)
        got = _evaluate(model / "final", sample, args.out / f"eval-{tag}")
        gained = sum(got[t] and not base[t] for t in sample)
        lost = sum(base[t] and not got[t] for t in sample)
        line = (
            f"{tag}: {sum(got.values())}/{len(got)}  +{gained}/-{lost}  "
            f"p={mcnemar_exact(gained, lost):.3f}"
        )
        rows.append(line)
        print(line, flush=True)
    with (args.out / "table.txt").open("a") as f:
        f.write("\n".join(rows) + "\n")


if __name__ == "__main__":
    main()
