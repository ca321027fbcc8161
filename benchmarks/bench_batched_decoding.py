"""Aggregate decode rate of llama.cpp with 1, 4, 8 and 16 sequences at once (llm/batch.py).

Decodes the first HumanEval chat prompts greedily, ``parallel`` at a time, and times every
``llama_decode`` call: steps that feed one token per sequence give the decode rate (tokens/s
over all sequences), steps that feed prompts give the prefill rate. The baseline is the same
decoder with one sequence, measured in the same run, so the ratio is what batching buys.

    python benchmarks/bench_batched_decoding.py [--model qwen2.5-coder-0.5b-instruct] [--threads 2]
        [--serve file,q8]
"""

from __future__ import annotations

import argparse
import time

import llama_cpp
from llama_cpp import Llama

from persd.llm.base import SamplingParams
from persd.llm.batch import BatchDecoder, Request
from persd.llm.gguf_q8 import q8_copy
from persd.llm.registry import default_cache_dir, get_spec, model_path
from persd.llm.render import from_llama
from persd.prompts import student_prompt
from persd.tasks import load_humaneval


class _Timed:
    """llama_cpp with ``llama_decode`` timed, split into decode steps and prompt steps."""

    def __init__(self, parallel: int) -> None:
        self.parallel = parallel
        self.decode = [0, 0.0]  # tokens, seconds
        self.prefill = [0, 0.0]

    def __getattr__(self, name: str):
        return getattr(llama_cpp, name)

    def llama_decode(self, ctx, b):  # noqa: ANN001
        start = time.perf_counter()
        rc = llama_cpp.llama_decode(ctx, b)
        spent = time.perf_counter() - start
        slot = self.decode if b.n_tokens <= self.parallel else self.prefill
        slot[0] += b.n_tokens
        slot[1] += spent
        return rc


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="qwen2.5-coder-0.5b-instruct")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--parallel", default="1,4,8,16")
    ap.add_argument("--new-tokens", type=int, default=96)
    ap.add_argument(
        "--serve",
        default="file",
        help="comma-separated weight formats: file (as pulled), q8 (Q5_0 matrices as Q8_0, "
        "student.q8_serving); every ratio is against one sequence of the first",
    )
    args = ap.parse_args()
    path = model_path(get_spec(args.model))
    tasks = load_humaneval()
    params = SamplingParams(max_new_tokens=args.new_tokens)
    base = None
    for serve in args.serve.split(","):
        served = q8_copy(path, default_cache_dir() / "serving") if serve == "q8" else path
        llm = Llama(model_path=str(served), n_ctx=256, n_threads=args.threads, verbose=False)
        renderer = from_llama(llm, str(path))
        for parallel in (int(p) for p in args.parallel.split(",")):
            decoder = BatchDecoder(llm, parallel=parallel, ctx_per_seq=1024, threads=args.threads)
            timed = _Timed(parallel)
            decoder._lib = timed  # noqa: SLF001 - the benchmark's probe
            ids = [tuple(renderer.ids(student_prompt(t, chat=True))) for t in tasks[:parallel]]
            decoder.run([Request(i, params, 0) for i in ids])
            decoder.close()
            rate = timed.decode[0] / timed.decode[1]
            base = base or rate
            print(
                f"{args.model} {serve} threads={args.threads} parallel={parallel:2d}: "
                f"decode {rate:6.1f} tokens/s ({rate / base:.2f}x one sequence), "
                f"prefill {timed.prefill[0] / max(timed.prefill[1], 1e-9):6.1f} tokens/s",
                flush=True,
            )
        llm.close()


if __name__ == "__main__":
    main()
