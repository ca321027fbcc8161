"""The noise floor of an evaluation (issue 33): tasks that flip when nothing was trained.

The untrained default student, greedy, n=1, on MBPP test (500) and HumanEval (164), three ways:

- A: the default run's evaluation path (llama_cpp, StudentConfig defaults: 32 sequences,
  shared prefix, Q5_0 served as Q8_0);
- B: the path a trained model takes: a PEFT LoRA with the run's default LoRA settings whose
  delta is exactly zero (PEFT initialises lora_B to zero; saved untrained), given to the same
  student config as ``adapter``, so llama.cpp converts it to a GGUF LoRA and applies it, as
  ``llm.student.trained_student`` does for a run's trained model;
- C: A at another batch arrangement (``--c-parallel`` sequences, default 16: chunks of 64
  tasks instead of 128, so other batch neighbours and other batch shapes).

Each evaluation is ``pipeline.model_eval.evaluate_model`` (what ``persd eval --out`` and a run
call) writing under OUT/<path>/<benchmark>; reruns resume from those journals. A's journals
are those of ``persd eval -m qwen2.5-coder-0.5b-instruct --backend llama_cpp -b BENCH --out``.
Then the flip table: per pair (A vs B, A vs C) and benchmark, pass@1 of both, identical
texts, tasks gained / lost, exact McNemar p; a pair not yet finished is compared on the tasks
both have journaled, scored here, and marked partial. Run from the project root:

    nice -n 10 python experiments/noise_floor.py results/noise-floor
    nice -n 10 python experiments/noise_floor.py results/noise-floor --only B --first 128
    python experiments/noise_floor.py results/noise-floor --table-only
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

STUDENT = "qwen2.5-coder-0.5b-instruct"
BENCHMARKS = ("mbpp-test", "humaneval")
# The adapter's weights never go into results/ (no weights in git); it is rebuilt from a seed.
ADAPTER = Path("runs/noise-floor/zero-adapter")


def zero_adapter(out: Path) -> Path:
    """A PEFT LoRA on the student with the run's default LoRA settings, untrained: lora_B is
    zero, so base + adapter computes exactly what the base does."""
    if (out / "adapter_model.safetensors").exists():
        return out
    import torch
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM

    from persd.llm.student_hf import resolve_base
    from persd.train.config import TrainConfig
    from persd.train.sft import _lora_config

    torch.manual_seed(0)  # lora_A is random (Kaiming); only B = 0 matters for the delta
    _, ref = resolve_base(STUDENT)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(ref), _lora_config(TrainConfig()))
    b = [p for name, p in model.named_parameters() if "lora_B" in name]
    assert b and all(float(p.abs().max()) == 0.0 for p in b), "lora_B is not zero"
    model.save_pretrained(out)
    return out


def evaluations(c_parallel: int) -> dict[str, dict]:
    """Path name -> the StudentConfig fields that make it."""
    return {
        "A": {"backend": "llama_cpp"},
        "B": {"backend": "llama_cpp", "adapter": str(ADAPTER)},
        "C": {"backend": "llama_cpp", "parallel": c_parallel},
    }


def _complete(out: Path, bench: str) -> bool:
    """A finished evaluation of every task of ``bench`` (not a ``--first N`` one)."""
    from persd.tasks import load_benchmark

    report = out / "report.json"
    return report.exists() and json.loads(report.read_text())["tasks"] == len(load_benchmark(bench))


def evaluate(fields: dict, bench: str, out: Path, first: int | None = None) -> None:
    """One evaluation into ``out``; with ``first``, only the benchmark's first N tasks: they
    are the first chunks of the whole evaluation (the same journal keys), which a later run
    without ``first`` resumes from."""
    from persd.llm.student import StudentConfig
    from persd.pipeline.config import EvalStageConfig
    from persd.pipeline.model_eval import benchmark_tasks, evaluate_model
    from persd.prompts import PromptConfig
    from persd.sandbox import SandboxConfig

    if _complete(out, bench):
        return
    cfg = EvalStageConfig(seed=0, sample_seed=0)  # what `persd eval` builds by default
    prompt = PromptConfig(mbpp_shape="docstring")
    tasks = benchmark_tasks(bench, cfg, prompt)[:first] if first else None
    start = time.monotonic()
    shown = [-1]

    def progress(stage: str, done: int, total: int) -> None:
        if stage == "sample" and 10 * done // total > shown[0]:
            shown[0] = 10 * done // total
            print(f"  {out}: {done}/{total} ({time.monotonic() - start:,.0f} s)", flush=True)

    report = evaluate_model(
        StudentConfig(model=STUDENT, **fields),
        cfg,
        SandboxConfig(),
        benchmark=bench,
        out=out,
        prompt=prompt,
        tasks=tasks,
        on_progress=progress,
    )
    print(
        f"{out}: pass@1 {100 * report.pass1('base', 0):.1f}%, generation "
        f"{report.generate_s:,.0f} s, wall {time.monotonic() - start:,.0f} s",
        flush=True,
    )


def _finished(eval_dir: Path) -> dict[str, tuple[str, bool]]:
    """Task id -> (raw step-0 text, verdict) of a finished evaluation."""
    rows = (json.loads(x) for x in (eval_dir / "samples_base.jsonl").read_text().splitlines())
    return {r["task_id"]: (r["history"][0]["raw"], r["passed"]) for r in rows if r["index"] == 0}


def _journaled(eval_dir: Path) -> dict[str, str]:
    """Task id -> raw step-0 text of every batch an evaluation has journaled so far."""
    path = eval_dir / "generations.jsonl"
    if not path.exists():
        return {}
    rows = [json.loads(x) for x in path.read_text().splitlines()[1:]]
    return {
        t: texts[0]
        for r in rows
        if r["key"].startswith("base/0/")
        for t, texts in zip(r["tasks"], r["texts"], strict=True)
    }


def _scored(bench: str, texts: dict[str, str]) -> dict[str, tuple[str, bool]]:
    """Journaled texts scored as the evaluation scores them (extracted, hidden tests)."""
    from persd.llm.extract import extract_program
    from persd.sandbox import Job, Sandbox, SandboxConfig
    from persd.tasks import load_benchmark

    tasks = [t for t in load_benchmark(bench) if t.id in texts]
    jobs = [
        Job.for_task(
            t,
            extract_program(texts[t.id], prompt=t.prompt, entry_point=t.entry_point, chat=True),
            "hidden",
        )
        for t in tasks
    ]
    verdicts: dict[str, tuple[str, bool]] = {}
    with Sandbox(SandboxConfig()) as sandbox:
        for i, fb in sandbox.imap(jobs):
            verdicts[tasks[i].id] = (texts[tasks[i].id], fb.passed)
    return verdicts


def _pair(root: Path, first: str, second: str, bench: str) -> tuple[dict, dict, str] | None:
    """Both evaluations' (text, verdict) per task: finished ones as written, else what both
    have journaled, scored here (a partial row)."""
    a_dir, b_dir = root / first / bench, root / second / bench
    if _complete(a_dir, bench) and _complete(b_dir, bench):
        return _finished(a_dir), _finished(b_dir), ""
    a, b = _journaled(a_dir), _journaled(b_dir)
    shared = {t: a[t] for t in a if t in b}
    if not shared:
        return None
    b = {t: b[t] for t in shared}
    return _scored(bench, shared), _scored(bench, b), " (partial)"


def flip_table(root: Path) -> list[str]:
    """One markdown row per pair and benchmark: finished evaluations, or the tasks both have
    journaled so far (marked partial)."""
    from persd.evaluate.paired import paired

    lines = [
        "| pair | benchmark | tasks | pass@1 first | pass@1 second | identical texts | "
        "gained | lost | McNemar p |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for first, second in (("A", "B"), ("A", "C")):
        for bench in BENCHMARKS:
            found = _pair(root, first, second, bench)
            if found is None:
                continue
            a, b, partial = found
            p = paired({t: v[1] for t, v in a.items()}, {t: v[1] for t, v in b.items()})
            same = sum(a[t][0] == b[t][0] for t in a if t in b)
            lines.append(
                f"| {first} vs {second} | {bench}{partial} | {p.tasks} | "
                f"{100 * p.base_passed / p.tasks:.1f}% | {100 * p.passed / p.tasks:.1f}% | "
                f"{same} | +{p.gained} | −{p.lost} | {p.p_value:.2g} |"
            )
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--c-parallel", type=int, default=16)
    ap.add_argument("--only", default="A,B,C", help="paths to evaluate, e.g. A,B")
    ap.add_argument("--benchmarks", default=",".join(BENCHMARKS))
    ap.add_argument("--first", type=int, help="only the first N tasks (resumable later)")
    ap.add_argument("--table-only", action="store_true")
    args = ap.parse_args()
    if not args.table_only:
        paths = evaluations(args.c_parallel)
        if "B" in args.only.split(","):
            zero_adapter(ADAPTER)
        # Path by path: both benchmarks of A first, then B, then C.
        for name in args.only.split(","):
            for bench in args.benchmarks.split(","):
                evaluate(paths[name], bench, args.out / name / bench, args.first)
    print("\n".join(flip_table(args.out)))


if __name__ == "__main__":
    main()
