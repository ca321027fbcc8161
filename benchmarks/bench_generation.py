"""Student sampling speed: transformers (fp32/bf16, batch 1 and 8) against llama.cpp.

Every backend samples the same chat prompts (the first HumanEval tasks) with the same params;
tokens/s counts generated tokens (rows that stop early are not padded into the count) over wall
time including prompt processing. The baseline is single-stream llama.cpp measured in the same
run. The issue's target: batched student sampling >= single-stream llama.cpp on the same model.

    python benchmarks/bench_generation.py                       # SmolLM2-135M (registry)
    python benchmarks/bench_generation.py --model qwen2.5-coder-0.5b-instruct --tokens 64
    python benchmarks/bench_generation.py --lora                # + a rank-16 LoRA, merged/unmerged

``main(argv)`` returns the rows, so other sections (the teacher's slots) can be added.
"""

from __future__ import annotations

import argparse
import gc
import os
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from persd.llm.base import Prompt, SamplingParams, Student
from persd.llm.registry import resolve_model
from persd.prompts import student_prompt
from persd.tasks import load_humaneval

Row = tuple[str, float, int, float]  # name, tokens/s, tokens, seconds


def _measure(name: str, student: Student, prompts: Sequence[Prompt], params: SamplingParams) -> Row:
    student.generate(prompts[:1], params.model_copy(update={"max_new_tokens": 8}))  # warm-up
    start = time.perf_counter()
    gens = student.generate(prompts, params)
    seconds = time.perf_counter() - start
    tokens = sum(g.tokens_out for row in gens for g in row)
    row = (name, tokens / seconds, tokens, seconds)
    print(f"  {name:<42} {row[1]:7.1f} tok/s  ({tokens} tokens in {seconds:.1f} s)", flush=True)
    return row


def _random_lora(hf_dir: Path, out: Path) -> Path:
    """A rank-16 LoRA on every linear layer, with non-zero B so it changes the outputs."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(hf_dir, dtype=torch.float32)
    targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    peft = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, target_modules=targets))
    torch.manual_seed(0)
    for name, param in peft.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(param, std=0.01)
    peft.save_pretrained(out)
    return out


def bench_student(args: argparse.Namespace) -> list[Row]:
    from persd.llm.student_hf import HFStudent, convert_gguf_to_hf
    from persd.llm.student_llama import LlamaStudent

    resolved = resolve_model(args.model)
    if resolved.kind != "gguf" or resolved.path is None:
        raise SystemExit(f"{args.model}: this benchmark compares backends on a GGUF model")
    gguf = resolved.path
    hf_dir = convert_gguf_to_hf(gguf)  # once; later runs reuse it
    tasks = load_humaneval()[: args.prompts]
    prompts = [student_prompt(t, chat=True) for t in tasks]
    params = SamplingParams(temperature=0.8, top_p=0.95, max_new_tokens=args.tokens, seed=0)
    print(f"model {resolved.name}: {len(prompts)} chat prompts, {args.tokens} new tokens each")
    print(f"load average before: {os.getloadavg()[0]:.2f}")

    rows: list[Row] = []
    runs: list[tuple[str, Callable[[], Student]]] = [
        (
            f"llama.cpp, 1 stream, {args.threads} thread(s)",
            lambda: LlamaStudent(gguf, threads=args.threads, n_ctx=2048),
        ),
    ]
    if args.lora_gguf:
        runs.append(
            (
                f"llama.cpp + GGUF LoRA, {args.threads} thread(s)",
                lambda: LlamaStudent(
                    gguf, threads=args.threads, n_ctx=2048, lora_path=args.lora_gguf
                ),
            )
        )
    for dtype in args.dtypes.split(","):
        for batch in (int(b) for b in args.batches.split(",")):
            runs.append(
                (
                    f"transformers {dtype}, batch {batch}",
                    lambda d=dtype, b=batch: HFStudent(
                        hf_dir, dtype=d, batch_size=b, threads=args.threads
                    ),
                )
            )
    if args.lora:
        adapter = _random_lora(hf_dir, Path(tempfile.mkdtemp(prefix="persd-bench-lora-")))
        for merge in (True, False):
            label = "merged" if merge else "unmerged"
            runs.append(
                (
                    f"transformers bf16 + LoRA {label}, b 8",
                    lambda m=merge: HFStudent(
                        hf_dir,
                        adapter=adapter,
                        merge_adapter=m,
                        dtype="bfloat16",
                        batch_size=8,
                        threads=args.threads,
                    ),
                )
            )
    for name, build in runs:
        student = build()
        try:
            rows.append(_measure(name, student, prompts, params))
        finally:
            student.close()
            del student
            gc.collect()
    base = rows[0][1]
    print(f"\nratio to single-stream llama.cpp ({base:.1f} tok/s):")
    for name, rate, _, _ in rows:
        print(f"  {name:<42} {rate / base:5.2f}x")
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    return rows


def main(argv: Sequence[str] | None = None) -> list[Row]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--tokens", type=int, default=128, help="max new tokens per sample")
    parser.add_argument("--threads", type=int, default=1, help="same for every backend")
    parser.add_argument("--dtypes", default="bfloat16,float32", help="transformers dtypes")
    parser.add_argument("--batches", default="1,8", help="transformers batch sizes")
    parser.add_argument("--lora", action="store_true", help="also time a random rank-16 LoRA")
    parser.add_argument("--lora-gguf", type=Path, help="a GGUF LoRA to time with llama.cpp")
    args = parser.parse_args(argv)
    return bench_student(args)


if __name__ == "__main__":
    main()
