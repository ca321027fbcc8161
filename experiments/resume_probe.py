"""Does a llama.cpp evaluation resumed from its journal give the texts of an uninterrupted one
(issue 33, the noise floor)? The default student, greedy, on MBPP-test chat prompts.

Two chunks of ``--tasks`` tasks each, X then Y, as two journal chunks of one evaluation:

- uninterrupted: one student decodes X, then Y (what one ``persd eval`` does);
- fresh: a new student decodes Y alone (what a resumed ``persd eval`` does after X was
  journaled);
- cleared (``--cleared``): X, then the decoder's KV memory and shared prefix emptied, then Y;
- threads (``--threads``): Y with the thread count fixed at 2, and at 1, each in a new student.

Prints how many of Y's texts differ between them, and each chunk's shared prompt opening.

    python experiments/resume_probe.py --parallel 32 --tasks 64 --cleared
    python experiments/resume_probe.py --parallel 8 --tasks 32 --threads
"""

from __future__ import annotations

import argparse
import time

STUDENT = "qwen2.5-coder-0.5b-instruct"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--parallel", type=int, default=32)
    ap.add_argument("--tasks", type=int, default=64, help="tasks per chunk")
    ap.add_argument("--cleared", action="store_true")
    ap.add_argument("--threads", action="store_true")
    args = ap.parse_args()

    import llama_cpp

    from persd.llm.base import SamplingParams
    from persd.llm.batch import Request, common_prefix
    from persd.llm.registry import resolve_model
    from persd.llm.student_llama import LlamaStudent
    from persd.prompts import student_prompt
    from persd.tasks import load_benchmark

    n = args.tasks
    tasks = list(load_benchmark("mbpp-test"))
    chunks = {"X": tasks[:n], "Y": tasks[n : 2 * n]}
    params = SamplingParams(temperature=0.0, max_new_tokens=384)
    path = resolve_model(STUDENT).path
    start = time.monotonic()

    def student() -> LlamaStudent:
        return LlamaStudent(path, parallel=args.parallel)

    def texts(s: LlamaStudent, name: str) -> list[str]:
        prompts = [student_prompt(t, chat=True) for t in chunks[name]]
        out = [g[0].text for g in s.generate(prompts, params)]
        print(f"  decoded {name} ({time.monotonic() - start:,.0f} s)", flush=True)
        return out

    def fixed_threads(s: LlamaStudent, threads: int) -> None:
        chooser = s.decoder.threads
        chooser.options, chooser.current, chooser._set = [threads], threads, threads
        chooser.used = {threads: 0}
        llama_cpp.llama_set_n_threads(s.decoder.ctx, threads, threads)

    def differ(a: list[str], b: list[str]) -> str:
        return f"{sum(x != y for x, y in zip(a, b, strict=True))}/{n} texts differ"

    s = student()
    for name, chunk in chunks.items():
        rendered = [tuple(s.renderer.ids(student_prompt(t, chat=True))) for t in chunk]
        ids = [Request(r, params, 0) for r in rendered]
        print(f"chunk {name}: the prompts share their first {common_prefix(ids)} tokens")
    texts(s, "X")
    uninterrupted = texts(s, "Y")
    s.close()
    s = student()
    fresh = texts(s, "Y")
    s.close()
    print(f"uninterrupted vs fresh: {differ(uninterrupted, fresh)}")
    if args.cleared:
        s = student()
        texts(s, "X")
        s.decoder.drop_prefix()
        llama_cpp.llama_memory_clear(s.decoder._mem, True)
        cleared = texts(s, "Y")
        s.close()
        print(f"cleared vs fresh: {differ(cleared, fresh)}")
    if args.threads:
        got = {}
        for threads in (2, 1):
            s = student()
            fixed_threads(s, threads)
            got[threads] = texts(s, "Y")
            s.close()
        print(f"2 threads vs 1: {differ(got[2], got[1])}")


if __name__ == "__main__":
    main()
