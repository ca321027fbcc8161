"""Training throughput of a LoRA fine-tune on CPU, before and after issue 35, on the same rows
in one run, beside the FLOP bound (benchmarks/training_bound.py).

Each setting builds persd's own trainer (``persd.train.sft.make_trainer``: the TRL
SFTTrainer, dataset and precision logic of ``persd train``) on chat rows of the student's own
MBPP prompts (``student_prompt``, the prompt it is served) with the fenced reference solution
as the completion, runs ``--warmup`` optimizer steps untimed, then ``--steps`` timed ones of
``--rows`` rows each, and reports tokens/s over the timed steps. Then it scores the trained
adapter's loss on held-out rows: a setting that only changes speed ends with the same loss.

Settings (every one from the same initial adapter, the same rows in the same order):

- ``before``: TRL's own loss (the LM head on every position, per-token entropy and accuracy
  for its logs), one row per micro-batch, ``--rows`` micro-batches accumulated, bf16
  autocast: how runs trained until issue 35 on a CPU with bf16 instructions;
- ``label-only``: persd's loss (``persd.train.loss``: the LM head only where a label is),
  the same micro-batches, bf16;
- ``packed``: the label-only loss, each step's rows in one sequence (``train.packed``), bf16;
- ``label-only-fp32``, ``packed-fp32``: the same two in float32 (what ``dtype: auto`` picks
  where bf16 products are the slower ones, ``persd.train.precision``);
- ``packed-fp32-no-dropout``: ``packed-fp32`` with LoRA dropout 0 (a setting that changes
  what is learnt: its held-out loss says by how much);
- ``label-only-no-dropout``: ``label-only`` (bf16) with LoRA dropout 0, for a CPU where bf16
  wins and the dropout masks are a fifth of a step (docs/BENCHMARKS.md, the Zen 5).

Settings run round-robin ``--rounds`` times and each reports its best round: on a shared
machine interference only slows a round down.

Usage: python benchmarks/bench_training.py [--model qwen2.5-coder-0.5b-instruct]
       [--threads 2] [--rows 8] [--steps 3] [--warmup 1] [--rounds 1]
       [--settings before,packed-fp32] [--no-bound]
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import tempfile
import time
import types
from pathlib import Path
from typing import Any

from persd.llm.student_hf import resolve_base
from persd.prompts import prompt_text, student_prompt
from persd.records import Example
from persd.tasks import load_benchmark
from persd.train import TrainConfig
from persd.train.sft import make_trainer

SETTINGS = {
    "before": {"batch_size": 1, "trl_loss": True, "dtype": "bfloat16"},
    "label-only": {"batch_size": 1, "dtype": "bfloat16"},
    "packed": {"packed": True, "dtype": "bfloat16"},
    "label-only-fp32": {"batch_size": 1, "dtype": "float32"},
    "packed-fp32": {"packed": True, "dtype": "float32"},
    "packed-fp32-no-dropout": {"packed": True, "dtype": "float32", "dropout": 0.0},
    "label-only-no-dropout": {"batch_size": 1, "dtype": "bfloat16", "dropout": 0.0},
}


def rows(first: int, n: int) -> list[Example]:
    """MBPP-train tasks ``first .. first+n``: the student's chat prompt, the fenced reference."""
    tasks = load_benchmark("mbpp-train")[first : first + n]
    return [
        Example(
            id=f"bench:{t.id}",
            variant="self",
            format="text2code",
            prompt=prompt_text(student_prompt(t, chat=True)),
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


def held_out_loss(trainer: Any, held_out: list[Example]) -> float:
    """Mean label-token loss of the trained adapter on rows it never saw."""
    import torch

    from persd.llm.render import from_hf_tokenizer
    from persd.train.data import to_dataset
    from persd.train.loss import label_only_loss

    model = trainer.model.eval()
    tokenizer = trainer.processing_class
    renderer = from_hf_tokenizer(tokenizer, tokenizer.name_or_path)  # as make_trainer's
    data = to_dataset(held_out, "chat", tokenizer, renderer)
    total = count = 0.0
    with torch.no_grad(), trainer.compute_loss_context_manager():
        for ids, mask in zip(data["input_ids"], data["completion_mask"], strict=True):
            labels = [t if m else -100 for t, m in zip(ids, mask, strict=True)]
            inputs = {"input_ids": torch.tensor([ids]), "labels": torch.tensor([labels])}
            n = sum(mask) - (1 if mask[0] else 0)
            total += label_only_loss(model, inputs).item() * n
            count += n
    return total / count


def measure(name: str, model_ref: str, train_rows: list, held_out: list, args: Any) -> tuple:
    """(tokens/s over the timed steps, held-out loss after training) of one setting."""
    import torch
    from trl import SFTTrainer

    s = SETTINGS[name]
    per_batch = s.get("batch_size", args.rows)
    config = TrainConfig.model_validate(
        {
            "dtype": s["dtype"],
            "max_steps": args.warmup + args.steps,
            "batch_size": per_batch,
            "grad_accum": args.rows // per_batch,
            "packed": s.get("packed", False),
            "learning_rate": 1e-4,
            "lr_scheduler": "constant",
            "warmup_ratio": 0.0,
            "save_steps": 10_000,
            "logging_steps": 10_000,
            "threads": args.threads,
            "lora": {"dropout": s.get("dropout", 0.05)},
        }
    )
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as out:
        trainer, _ = make_trainer(config, train_rows, model_ref, Path(out))
        if s.get("trl_loss"):  # the loss runs used before issue 35: TRL's own
            trainer.compute_loss = types.MethodType(SFTTrainer.compute_loss, trainer)
        trainer.args.save_strategy = "no"  # no checkpoint after the last step
        timer = _timer()
        trainer.add_callback(timer)
        trainer.train()
        (t0, n0), (t1, n1) = timer.marks[args.warmup - 1], timer.marks[-1]
        loss = held_out_loss(trainer, held_out)
        del trainer
        gc.collect()
    rate = (n1 - n0) / (t1 - t0)
    print(
        f"{name:>18}: {n1 - n0:6d} tokens in {t1 - t0:6.1f} s = {rate:6.1f} tokens/s; "
        f"held-out loss {loss:.4f} ({config.lora.dropout} dropout)",
        flush=True,
    )
    return rate, loss


def bound(model_ref: str, train_rows: list[Example], args: Any) -> None:
    """The FLOP bound of the rows' shape, in float32 and bfloat16."""
    from transformers import AutoConfig, AutoTokenizer

    from persd.llm.render import from_hf_tokenizer
    from persd.train.data import to_dataset
    from training_bound import count, matmul_rate

    config = AutoConfig.from_pretrained(model_ref)
    tokenizer = AutoTokenizer.from_pretrained(model_ref)
    data = to_dataset(train_rows, "chat", tokenizer, from_hf_tokenizer(tokenizer, model_ref))
    tokens = sum(len(i) for i in data["input_ids"])
    learnt = sum(sum(m) for m in data["completion_mask"]) / tokens
    per_row = tokens / len(train_rows)
    flops = count(config, row_tokens=per_row, rank=16).per_token(learnt)
    print(
        f"FLOPs per training token: {flops / 1e9:.2f} G (rows of {per_row:.0f} tokens, "
        f"{100 * learnt:.0f}% of them learnt)"
    )
    step_tokens = int(per_row * args.rows)
    for dtype in ("float32", "bfloat16"):
        for label, m in (("one row", int(per_row)), (f"{args.rows} rows", step_tokens)):
            rate = matmul_rate(config, tokens=m, dtype=dtype, threads=args.threads)
            print(
                f"  matmul {dtype:>8}, {label:>7} ({m:4d} x hidden): {rate / 1e9:6.1f} GFLOP/s "
                f"-> bound {rate / flops:6.1f} tokens/s"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="qwen2.5-coder-0.5b-instruct")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--rows", type=int, default=8, help="rows per optimizer step")
    parser.add_argument("--steps", type=int, default=3, help="timed optimizer steps")
    parser.add_argument("--warmup", type=int, default=1, help="untimed optimizer steps first")
    parser.add_argument("--rounds", type=int, default=1, help="round-robin repeats; best counts")
    parser.add_argument("--settings", default=",".join(SETTINGS))
    parser.add_argument("--held-out", type=int, default=16, help="rows the loss is scored on")
    parser.add_argument("--no-bound", action="store_true")
    args = parser.parse_args()

    import torch
    import transformers
    import trl

    name, model_ref = resolve_base(args.model)
    train_rows = rows(0, args.rows * (args.warmup + args.steps))
    held_out = rows(len(train_rows), args.held_out)
    flags = " ".join(
        f
        for f in ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16")
        if f in Path("/proc/cpuinfo").read_text()
    )
    print(
        f"model {name}; {platform.processor() or platform.machine()} ({flags}), "
        f"{os.cpu_count()} cores, {args.threads} threads; torch {torch.__version__}, "
        f"transformers {transformers.__version__}, trl {trl.__version__}"
    )
    print(
        f"{len(train_rows)} MBPP-train rows, {args.rows} per optimizer step, "
        f"{args.warmup} untimed + {args.steps} timed steps; loss on {len(held_out)} others"
    )
    if not args.no_bound:
        bound(model_ref, train_rows, args)
    settings = args.settings.split(",")
    best: dict[str, tuple[float, float]] = {}
    for _ in range(args.rounds):
        for s in settings:
            rate, loss = measure(s, model_ref, train_rows, held_out, args)
            if s not in best or rate > best[s][0]:
                best[s] = (rate, loss)
    base = best.get("before")
    print(f"best of {args.rounds} round(s):")
    for s, (rate, loss) in best.items():
        ratio = f"  {rate / base[0]:.2f}x before" if base else ""
        print(f"{s:>18}: {rate:6.1f} tokens/s, held-out loss {loss:.4f}{ratio}")


if __name__ == "__main__":
    main()
