"""The shared prefix (``student.share_prefix``): a benchmark's prompts decoded whole against
their common opening decoded once and copied into each sequence, in turns, in one run.

Decodes the same seeded sample of benchmark tasks as an evaluation does (the student's chat
prompts, greedy, ``--new-tokens`` at most, each stopped once its program is answered) with
one loaded model and a fresh ``BatchDecoder`` per turn, alternating off, on, off, on ... so
that a drift of the machine's speed falls on both alike. Prints each turn's seconds and
prompt rows decoded, the ratio of each adjacent pair (off / on), their median, and how many
outputs are identical between the two modes (on the default student batches of other shapes
can flip a near tie: docs/STUDENT.md).

    python benchmarks/bench_shared_prefix.py [--benchmark mbpp|humaneval] [--limit 40]
"""

from __future__ import annotations

import argparse
import statistics
import time

from llama_cpp import Llama

from persd.llm.base import SamplingParams
from persd.llm.batch import BatchDecoder, Request
from persd.llm.gguf_q8 import q8_copy
from persd.llm.registry import default_cache_dir, get_spec, model_path
from persd.llm.render import from_llama
from persd.pipeline.config import EvalStageConfig
from persd.pipeline.model_eval import benchmark_tasks
from persd.prompts import student_prompt


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="qwen2.5-coder-0.5b-instruct")
    ap.add_argument("--benchmark", default="mbpp", choices=["mbpp", "humaneval"])
    ap.add_argument("--limit", type=int, default=40, help="a seeded sample, as evaluate.limit")
    ap.add_argument("--parallel", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--new-tokens", type=int, default=384)
    ap.add_argument("--pairs", type=int, default=3, help="off/on turns")
    args = ap.parse_args()
    path = model_path(get_spec(args.model))
    served = q8_copy(path, default_cache_dir() / "serving")
    llm = Llama(model_path=str(served), n_ctx=256, n_threads=args.threads, verbose=False)
    renderer = from_llama(llm, str(path))
    tasks = benchmark_tasks(args.benchmark, EvalStageConfig(limit=args.limit))
    requests = [
        Request(
            tuple(renderer.ids(student_prompt(t, chat=True))),
            SamplingParams(max_new_tokens=args.new_tokens, stop_when_answered=t.entry_point),
            0,
        )
        for t in tasks
    ]
    total = sum(len(r.ids) for r in requests)
    print(f"{len(requests)} {args.benchmark} prompts, {total} prompt tokens", flush=True)
    seconds: dict[bool, list[float]] = {False: [], True: []}
    texts: dict[bool, list[str]] = {}
    for turn in range(2 * args.pairs):
        share = bool(turn % 2)
        decoder = BatchDecoder(
            llm,
            parallel=args.parallel,
            ctx_per_seq=2048,
            threads=args.threads,
            share_prefix=share,
        )
        start = time.perf_counter()
        gens = decoder.run(requests)
        wall = time.perf_counter() - start
        decoder.close()
        seconds[share].append(wall)
        texts.setdefault(share, [g.text for g in gens])
        out = sum(g.tokens_out for g in gens)
        print(
            f"share_prefix {'on ' if share else 'off'}: {wall:6.1f} s, prompt rows decoded "
            f"{decoder.prompt_decoded}, copied {decoder.prompt_copied}, tokens out {out}",
            flush=True,
        )
    ratios = [off / on for off, on in zip(seconds[False], seconds[True], strict=True)]
    same = sum(a == b for a, b in zip(texts[False], texts[True], strict=True))
    print(
        f"off/on per pair: {', '.join(f'{r:.2f}x' for r in ratios)}; median "
        f"{statistics.median(ratios):.2f}x (off median {statistics.median(seconds[False]):.1f} s, "
        f"on median {statistics.median(seconds[True]):.1f} s); identical outputs "
        f"{same}/{len(requests)}"
    )


if __name__ == "__main__":
    main()
