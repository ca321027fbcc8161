"""Teacher throughput on managed llama.cpp servers: slots x threads, same model, same prompts.

Baseline: 1 slot x 1 thread, measured in the same run. Each configuration gets a fresh cache
(no hits), one warm-up request per slot, then all prompts at once through the teacher client
(concurrency = slots). Greedy decoding, so every configuration generates the same text.

    python benchmarks/bench_teacher.py                      # SmolLM2-135M, 1x1 / 2x1 / 1x2
    python benchmarks/bench_teacher.py --model qwen2.5-coder-0.5b-instruct --prompts 8
    python benchmarks/bench_teacher.py --configs 1x1,2x1,4x1 --max-tokens 128
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import tempfile
import time
from pathlib import Path

from persd.llm.base import Message, SamplingParams
from persd.llm.cache import TeacherCache
from persd.llm.server import ManagedServers
from persd.llm.teacher import OpenAITeacher
from persd.llm.teacher_config import ServerConfig, TeacherConfig

TASKS = [
    "return the n-th Fibonacci number",
    "check whether a string is a palindrome, ignoring case and spaces",
    "merge two sorted lists into one sorted list",
    "count the vowels in a string",
    "return the prime factors of an integer",
    "flatten a nested list of integers",
    "return the longest common prefix of a list of strings",
    "rotate a list to the right by k places",
    "convert a Roman numeral to an integer",
    "return the running maximum of a list",
    "group words that are anagrams of each other",
    "compute the edit distance between two strings",
]


def prompts(n: int) -> list[tuple[Message, ...]]:
    return [
        (Message(role="user", content=f"Write a Python function to {TASKS[i % len(TASKS)]}."),)
        for i in range(n)
    ]


async def measure(
    servers: ManagedServers, n_prompts: int, max_tokens: int, cache_dir: Path
) -> tuple[float, int, int]:
    """(wall seconds, requests, completion tokens) for all prompts at once."""
    cfg = TeacherConfig(concurrency=len(servers.base_urls), max_attempts=1, timeout_s=600)
    teacher = OpenAITeacher(
        cfg,
        cache=TeacherCache(cache_dir / "teacher.sqlite"),
        base_urls=servers.base_urls,
        endpoint_id=servers.endpoint_id,
        model=servers.model_name,
        managed=True,
    )
    try:
        warm = SamplingParams(max_new_tokens=4, seed=12345)
        hello = (Message(role="user", content="Hi"),)
        await asyncio.gather(*(teacher.chat(hello, warm.model_copy(update={"seed": i}))
                               for i in range(len(servers.base_urls))))  # fmt: skip
        params = SamplingParams(max_new_tokens=max_tokens, temperature=0.0)
        t0 = time.perf_counter()
        replies = await asyncio.gather(*(teacher.chat(p, params) for p in prompts(n_prompts)))
        wall = time.perf_counter() - t0
    finally:
        await teacher.aclose()
    return wall, len(replies), sum(r[0].tokens_out for r in replies)


def busy_processes(exclude: set[int]) -> str:
    """What else uses the CPU right now (a 1 s sample by top), so the numbers can be judged."""
    out = subprocess.run(
        ["top", "-b", "-c", "-n2", "-d1", "-w200"], capture_output=True, text=True, check=False
    ).stdout
    last = out.rsplit("PID USER", 1)[-1].splitlines()[1:]
    busy = []
    for line in last:
        f = line.split(None, 11)
        if len(f) == 12 and int(f[0]) not in exclude and float(f[8]) >= 10:
            busy.append(f"{f[11][:40]} {float(f[8]):.0f}%")
    return ", ".join(busy) or "nothing above 10% CPU"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m-instruct", help="registry name or GGUF path")
    ap.add_argument("--configs", default="1x1,2x1,1x2", help="SLOTSxTHREADS, comma separated")
    ap.add_argument("--prompts", type=int, default=8)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--n-ctx", type=int, default=1024)
    args = ap.parse_args()

    print(f"cpus={os.cpu_count()} before: {busy_processes({os.getpid()})}")
    rows = []
    for spec in args.configs.split(","):
        slots, threads = (int(x) for x in spec.lower().split("x"))
        cfg = ServerConfig(model=args.model, slots=slots, threads_per_slot=threads,
                           n_ctx=args.n_ctx)  # fmt: skip
        with tempfile.TemporaryDirectory() as tmp, ManagedServers(cfg, log_dir=Path(tmp)) as srv:
            wall, n, tokens = asyncio.run(measure(srv, args.prompts, args.max_tokens, Path(tmp)))
            others = busy_processes({os.getpid(), *srv.pids})
        rows.append((spec, wall, n, tokens))
        print(f"{spec}: {wall:.2f}s {n} requests {tokens} tokens; right after, others: {others}")

    base_tps = rows[0][3] / rows[0][1]
    print(f"\nmodel {args.model}, {args.prompts} prompts x {args.max_tokens} max tokens, greedy")
    print(f"{'slots x threads':>16} {'tok/s':>8} {'req/s':>7} {'vs ' + rows[0][0]:>8}")
    for spec, wall, n, tokens in rows:
        tps = tokens / wall
        print(f"{spec:>16} {tps:8.1f} {n / wall:7.2f} {tps / base_tps:7.2f}x")


if __name__ == "__main__":
    main()
