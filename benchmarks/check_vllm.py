"""Sample a few HumanEval tasks through the vLLM student backend and score them (CUDA machine).

    pip install -e '.[vllm]'
    python benchmarks/check_vllm.py --model Qwen/Qwen2.5-Coder-0.5B-Instruct [--adapter DIR]

Prints each task's verdict, greedy tokens/s, and checks that greedy is reproducible, that
``n`` samples come back per prompt, and that stop sequences hold, as tests/test_student.py
does for the CPU backends.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from pathlib import Path

from persd.llm.base import SamplingParams
from persd.llm.extract import base_stop_sequences, extract_program
from persd.llm.student_vllm import VLLMStudent
from persd.prompts import student_prompt
from persd.sandbox import Job, Sandbox
from persd.tasks import load_humaneval


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="Qwen/Qwen2.5-Coder-0.5B-Instruct")
    parser.add_argument("--adapter", type=Path, default=None)
    parser.add_argument("--tasks", type=int, default=8)
    parser.add_argument("--tensor-parallel-size", type=int, default=1)
    args = parser.parse_args(argv)

    student = VLLMStudent(
        args.model, adapter=args.adapter, tensor_parallel_size=args.tensor_parallel_size
    )
    tasks = load_humaneval()[: args.tasks]
    greedy = SamplingParams(max_new_tokens=384)
    failures = []
    for chat in (True, False):
        prompts = [student_prompt(t, chat=chat) for t in tasks]
        start = time.perf_counter()
        gens = student.generate(prompts, greedy)
        seconds = time.perf_counter() - start
        tokens = sum(g.tokens_out for row in gens for g in row)
        print(f"{'chat' if chat else 'base'}: {tokens / seconds:.0f} tok/s greedy")
        if student.generate(prompts, greedy) != gens:
            failures.append(f"{'chat' if chat else 'base'}: greedy differs between two calls")
        with Sandbox() as sandbox:
            for task, [gen] in zip(tasks, gens, strict=True):
                program = extract_program(
                    gen.text, prompt=task.prompt, entry_point=task.entry_point, chat=chat
                )
                fb = sandbox.run(Job.for_task(task, program))
                print(f"  {task.id:<14} {fb.status:<12} {gen.tokens_out} tokens")
    sampled = student.generate(
        [student_prompt(tasks[0], chat=True)], SamplingParams(n=4, temperature=0.8, seed=1)
    )
    if len(sampled[0]) != 4:
        failures.append(f"n=4 gave {len(sampled[0])} samples")
    task = tasks[0]
    stops = base_stop_sequences(task.prompt, task.entry_point)
    [[cut]] = student.generate([task.prompt], SamplingParams(max_new_tokens=256, stop=stops))
    if any(s in cut.text for s in stops):
        failures.append("a stop sequence was left in the output")
    student.close()
    for line in failures:
        print(f"FAIL {line}")
    print("ok" if not failures else f"{len(failures)} check(s) failed")
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
