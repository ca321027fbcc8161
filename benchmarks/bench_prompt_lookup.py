"""Prompt-lookup decoding on the batch decoder: wall time and how many drafted tokens stay.

Decodes the first N HumanEval prompts (the student's chat prompts, greedy, 384 new tokens at
most, stopped once the program is answered) with ``parallel`` sequences, once per setting
``L:G`` (L draft tokens guessed from the last G tokens' earlier occurrence; ``0:3`` is plain
decoding, the baseline, measured in the same run). Prints wall time, tokens/s, the ratio to
the baseline, drafted and kept tokens, and how many replies equal the baseline's text.

    python benchmarks/bench_prompt_lookup.py [--tasks 16] [--parallel 16] [--settings 0:3,8:3,8:6]
"""

from __future__ import annotations

import argparse
import time

from persd.llm.base import SamplingParams
from persd.llm.registry import resolve_model
from persd.llm.student_llama import LlamaStudent
from persd.prompts import student_prompt
from persd.tasks import load_humaneval


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="qwen2.5-coder-0.5b-instruct")
    ap.add_argument("--tasks", type=int, default=16)
    ap.add_argument("--parallel", type=int, default=16)
    ap.add_argument("--settings", default="0:3,8:3,8:6", help="LOOKUP:NGRAM, comma separated")
    args = ap.parse_args()
    tasks = load_humaneval()[: args.tasks]
    prompts = [student_prompt(t, chat=True) for t in tasks]
    params = [SamplingParams(max_new_tokens=384, stop_when_answered=t.entry_point) for t in tasks]
    path = resolve_model(args.model).path
    rows = []
    for setting in args.settings.split(","):
        lookup, ngram = (int(x) for x in setting.split(":"))
        student = LlamaStudent(path, parallel=args.parallel, n_ctx=2048, lookup=lookup)
        student.decoder.lookup_ngram = ngram
        try:
            t0 = time.perf_counter()
            gens = student.generate_each(prompts, params)
            wall = time.perf_counter() - t0
            d = student.decoder
            rows.append((setting, wall, [g[0] for g in gens], d.drafted, d.accepted))
        finally:
            student.close()
        print(f"{setting}: {wall:.1f} s", flush=True)
    base_wall, base = rows[0][1], rows[0][2]
    print(f"\n{args.model}, {len(tasks)} HumanEval prompts, {args.parallel} sequences, greedy")
    print(f"{'L:G':>6} {'wall s':>8} {'tok/s':>7} {'vs ' + rows[0][0]:>8} {'drafted':>8} "
          f"{'kept':>6} {'kept %':>7} {'same text':>10}")  # fmt: skip
    for setting, wall, gens, drafted, kept in rows:
        tokens = sum(g.tokens_out for g in gens)
        same = sum(a.text == b.text for a, b in zip(gens, base, strict=True))
        share = f"{100 * kept / drafted:.0f}%" if drafted else "-"
        print(f"{setting:>6} {wall:8.1f} {tokens / wall:7.1f} {base_wall / wall:7.2f}x "
              f"{drafted:8d} {kept:6d} {share:>7} {same:>5}/{len(gens)}")  # fmt: skip


if __name__ == "__main__":
    main()
