"""Teacher throughput on managed llama.cpp servers: slots x threads, same model, same prompts.

Baseline: the first configuration, measured in the same run. Each configuration gets a fresh
cache (no hits), one warm-up request per slot, then all prompts at once through the teacher
client (concurrency = what the slots answer at once). Greedy decoding. A configuration
``SxTpP`` is S slots of persd's batch server, each decoding P requests together with T threads
(``teacher.server.parallel``); ``SxT`` is S llama-cpp-python servers, one request each; a
suffix ``lL`` adds L prompt-lookup draft tokens (``teacher.server.lookup``, persd's batch
server even at P = 1). ``--from-run`` replays the conversations a run sent its teacher (a
stage file: ``refinements.jsonl``), where the model restates code it was shown, instead of the
built-in "write a function" prompts.
Greedy text of the two servers can differ in the last bits of the logits, so the table also
counts the replies identical to the first configuration's.

    python benchmarks/bench_teacher.py                      # SmolLM2-135M, 1x1 / 2x1 / 1x2
    python benchmarks/bench_teacher.py --model qwen2.5-coder-0.5b-instruct --prompts 8
    python benchmarks/bench_teacher.py --configs 1x1,2x1,4x1 --max-tokens 128
    python benchmarks/bench_teacher.py --configs 2x1,1x2p4,1x2p8 --prompts 16
    python benchmarks/bench_teacher.py --model qwen2.5-coder-1.5b-instruct --configs 2x1,2x1l8 \
        --from-run results/default-run/refinements.jsonl --prompts 25 --max-tokens 512
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import tempfile
import time
from pathlib import Path

from persd.jsonl import parse_record
from persd.llm.base import Message, SamplingParams
from persd.llm.cache import TeacherCache
from persd.llm.server import ManagedServers
from persd.llm.teacher import OpenAITeacher
from persd.llm.teacher_config import ServerConfig, TeacherConfig
from persd.records import TeacherCall

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


def prompts(n: int, stage_file: Path | None = None) -> list[tuple[Message, ...]]:
    """The first ``n`` conversations of a stage file, or ``n`` built-in requests."""
    if stage_file is None:
        return [
            (Message(role="user", content=f"Write a Python function to {TASKS[i % len(TASKS)]}."),)
            for i in range(n)
        ]
    out = []
    for number, raw in enumerate(stage_file.read_text(encoding="utf-8").splitlines(), 1):
        if raw.strip():
            call = parse_record(raw, TeacherCall, stage_file, number)
            out.append(tuple(Message(role=m["role"], content=m["content"]) for m in call.messages))
    return out[:n]


async def measure(
    servers: ManagedServers, convs: list[tuple[Message, ...]], max_tokens: int, cache_dir: Path
) -> tuple[float, list[str], int]:
    """(wall seconds, reply texts, completion tokens) for all prompts at once."""
    cfg = TeacherConfig(concurrency=servers.capacity, max_attempts=1, timeout_s=600)
    teacher = OpenAITeacher(
        cfg,
        cache=TeacherCache(cache_dir / "teacher.sqlite"),
        base_urls=servers.base_urls,
        endpoint_id=servers.endpoint_id,
        model=servers.model_name,
        managed=True,
        extra_body=servers.extra_body,
    )
    try:
        warm = SamplingParams(max_new_tokens=4, seed=12345)
        hello = (Message(role="user", content="Hi"),)
        await asyncio.gather(*(teacher.chat(hello, warm.model_copy(update={"seed": i}))
                               for i in range(len(servers.base_urls))))  # fmt: skip
        params = SamplingParams(max_new_tokens=max_tokens, temperature=0.0)
        t0 = time.perf_counter()
        replies = await asyncio.gather(*(teacher.chat(p, params) for p in convs))
        wall = time.perf_counter() - t0
    finally:
        await teacher.aclose()
    return wall, [r[0].text for r in replies], sum(r[0].tokens_out for r in replies)


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
    ap.add_argument(
        "--configs",
        default="1x1,2x1,1x2",
        help="SLOTSxTHREADS[pPARALLEL][lLOOKUP], comma separated",
    )
    ap.add_argument("--from-run", type=Path, default=None, help="a stage file of teacher calls")
    ap.add_argument("--prompts", type=int, default=8)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--n-ctx", type=int, default=1024)
    args = ap.parse_args()

    print(f"cpus={os.cpu_count()} before: {busy_processes({os.getpid()})}")
    rows = []
    convs = prompts(args.prompts, args.from_run)
    for spec in args.configs.split(","):
        rest, _, lookup = spec.lower().partition("l")
        shape, _, parallel = rest.partition("p")
        slots, threads = (int(x) for x in shape.split("x"))
        cfg = ServerConfig(model=args.model, slots=slots, threads_per_slot=threads,
                           parallel=int(parallel or 1), lookup=int(lookup or 0),
                           n_ctx=args.n_ctx)  # fmt: skip
        with tempfile.TemporaryDirectory() as tmp, ManagedServers(cfg, log_dir=Path(tmp)) as srv:
            wall, texts, tokens = asyncio.run(measure(srv, convs, args.max_tokens, Path(tmp)))
            others = busy_processes({os.getpid(), *srv.pids})
        rows.append((spec, wall, texts, tokens))
        print(f"{spec}: {wall:.2f}s {len(texts)} requests {tokens} tokens; right after, "
              f"others: {others}")  # fmt: skip

    base_tps = rows[0][3] / rows[0][1]
    print(f"\nmodel {args.model}, {len(convs)} prompts x {args.max_tokens} max tokens, greedy"
          f"{', from ' + str(args.from_run) if args.from_run else ''}")  # fmt: skip
    first = rows[0][2]
    print(f"{'config':>10} {'wall s':>8} {'tok/s':>8} {'req/s':>7} {'vs ' + rows[0][0]:>9} "
          f"{'same text':>10}")  # fmt: skip
    for spec, wall, texts, tokens in rows:
        tps = tokens / wall
        same = sum(a == b for a, b in zip(texts, first, strict=True))
        print(f"{spec:>10} {wall:8.1f} {tps:8.1f} {len(texts) / wall:7.2f} "
              f"{tps / base_tps:8.2f}x {same:>5}/{len(texts)}")  # fmt: skip


if __name__ == "__main__":
    main()
