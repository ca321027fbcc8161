"""Training throughput on CPU: LoRA against full fine-tuning, float32 against bf16 autocast.

Each setting builds persd's own trainer (``persd.train.sft.make_trainer``: the same TRL
SFTTrainer, dataset and precision logic as ``persd train``) on chat rows made from HumanEval
(instruction -> fenced reference solution), runs ``--warmup`` optimizer steps untimed, then
``--steps`` timed ones, and reports non-padding tokens per second over the timed steps only.
Settings run round-robin ``--rounds`` times and each reports its best round: on a shared
machine, interference only ever slows a round down, and round-robin spreads any drift in it
over all settings. The baseline is LoRA float32, measured in the same run.

Usage: python benchmarks/bench_training.py [--model qwen2.5-coder-0.5b-instruct] [--threads 2]
       [--steps 4] [--warmup 1] [--batch 2] [--rounds 2]
       [--settings lora-fp32,full-fp32,lora-bf16,full-bf16]
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

from persd.records import Example
from persd.tasks import load_benchmark
from persd.train import TrainConfig
from persd.train.sft import make_trainer, resolve_base


def _rows(n: int) -> list[Example]:
    tasks = load_benchmark("humaneval")[:n]
    return [
        Example(
            id=f"bench:{t.id}",
            variant="stand",
            format="text2code",
            prompt=t.instruction,
            completion=f"```python\n{(t.reference or '').strip()}\n```",
            task_id=t.id,
        )
        for t in tasks
    ]


def _timer() -> Any:
    from transformers import TrainerCallback

    class StepTimer(TrainerCallback):
        """Clock and token count at the end of each optimizer step."""

        def __init__(self) -> None:
            self.marks: list[tuple[float, int]] = []

        def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            self.marks.append((time.perf_counter(), state.num_input_tokens_seen))

    return StepTimer()


def measure(setting: str, model_ref: str, rows: list[Example], args: argparse.Namespace) -> float:
    """Tokens/s over the timed steps of one setting ("lora-fp32", "full-bf16", ...)."""
    import torch

    method, dtype = setting.split("-")
    config = TrainConfig(
        method=method,  # type: ignore[arg-type]
        dtype="bfloat16" if dtype == "bf16" else "float32",
        max_steps=args.warmup + args.steps,
        batch_size=args.batch,
        grad_accum=1,
        max_seq_len=args.max_len,
        lr_scheduler="constant",
        warmup_ratio=0.0,
        save_steps=10_000,
        logging_steps=10_000,
        threads=args.threads,
    )
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as out:
        trainer, _ = make_trainer(config, rows, model_ref, Path(out))
        trainer.args.save_strategy = "no"  # no multi-GB checkpoint after the last step
        timer = _timer()
        trainer.add_callback(timer)
        trainer.train()
        (t0, n0), (t1, n1) = timer.marks[args.warmup - 1], timer.marks[-1]
        del trainer
        gc.collect()
    rate = (n1 - n0) / (t1 - t0)
    print(
        f"{setting:>10}: {n1 - n0:6d} tokens in {t1 - t0:7.1f} s = {rate:7.1f} tokens/s", flush=True
    )
    return rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="qwen2.5-coder-0.5b-instruct")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--steps", type=int, default=4, help="timed optimizer steps")
    parser.add_argument("--warmup", type=int, default=1, help="untimed optimizer steps first")
    parser.add_argument("--batch", type=int, default=2, help="sequences per step")
    parser.add_argument("--rounds", type=int, default=2, help="round-robin repeats; best counts")
    parser.add_argument("--max-len", type=int, default=1024)
    parser.add_argument("--settings", default="lora-fp32,full-fp32,lora-bf16,full-bf16")
    args = parser.parse_args()

    import torch
    import transformers
    import trl

    name, model_ref = resolve_base(args.model)
    rows = _rows(args.batch * (args.warmup + args.steps))
    print(
        f"model {name} ({model_ref}); {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} cores, {args.threads} threads; torch {torch.__version__}, "
        f"transformers {transformers.__version__}, trl {trl.__version__}"
    )
    steps = f"{args.warmup} untimed + {args.steps} timed steps"
    print(f"{len(rows)} HumanEval rows, batch {args.batch}, {steps}")
    settings = args.settings.split(",")
    rates: dict[str, float] = {}
    for _ in range(args.rounds):
        for s in settings:
            rates[s] = max(rates.get(s, 0.0), measure(s, model_ref, rows, args))
    print(f"best of {args.rounds} rounds:")
    for s in settings:
        print(f"{s:>10}: {rates[s]:7.1f} tokens/s")
    base = rates.get("lora-fp32")
    if base:
        for setting, rate in rates.items():
            print(f"{setting:>10} / lora-fp32: {rate / base:.2f}x")
    if "full-fp32" in rates and "lora-fp32" in rates:
        print(f"LoRA / full (fp32): {rates['lora-fp32'] / rates['full-fp32']:.2f}x")


if __name__ == "__main__":
    main()
