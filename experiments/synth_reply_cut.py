"""Where a test-input reply could stop, checked offline on a finished pool build (issue 36).

A build asks the teacher for ``synth.inputs`` calls per task and closes each streamed reply at
``synth.inputs + 3`` lines. The small teacher often grows its calls line by line (``f([1])``,
``f([1, 2])``, ... ``f([1, ..., 18])``) or repeats a phrase inside one line until the token
cap, and every digit is a token, so a few long lines can cost most of a build's decode time.
This replays every stored reply of ``DIR/synth/synth_calls.jsonl`` under other stop rules and
counts, per rule, the tokens that would have been generated (the reply's text up to where the
stream would close, tokenised with the teacher's own vocabulary) and what the build would have
lost: calls parsed, and kept tests (``DIR/synth/synth_tests.jsonl``) whose call the shorter
reply no longer holds, with the tasks that would fall below the build's minimum of tests.
Probing is deterministic per call, so a kept test whose call survives the cut is kept again.

    python experiments/synth_reply_cut.py pools/alpaca-s
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path

from persd.llm.registry import resolve_model
from persd.pipeline.config import SynthConfig
from persd.pipeline.stages.synth import parse_calls
from persd.poolbuild.gates import Split


def _line_cap(text: str, chars: int) -> str:
    """The reply as a stream closed when its current line passes ``chars`` characters: the
    lines before it, and the unfinished line's first ``chars`` characters (generated, then
    dropped)."""
    start = 0
    while True:
        end = text.find("\n", start)
        line_end = len(text) if end < 0 else end
        if line_end - start > chars:
            return text[: start + chars]
        if end < 0:
            return text
        start = end + 1


def _enough_calls(text: str, entry_point: str, n: int) -> str:
    """The reply as a stream closed at the end of the line that completes ``n`` calls."""
    start = 0
    while (end := text.find("\n", start)) >= 0:
        if len(parse_calls(text[: end + 1], entry_point, n)) >= n:
            return text[: end + 1]
        start = end + 1
    return text


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("build", type=Path, help="a pool build directory (persd pool build --out)")
    ap.add_argument("--caps", default="80,120,160", help="line caps in characters to replay")
    args = ap.parse_args()
    cfg, need = SynthConfig(), Split().seen + 3
    tasks = {r["id"]: r for r in map(json.loads, (args.build / "candidates.jsonl").open())}
    calls = [json.loads(x) for x in (args.build / "synth" / "synth_calls.jsonl").open()]
    tests_path = args.build / "synth" / "synth_tests.jsonl"
    kept: dict[str, list[str]] = {}
    if tests_path.exists():  # absent while the build is still asking: calls only
        kept = {
            r["task_id"]: [t["call"] for t in r["tests"]]
            for r in map(json.loads, tests_path.open())
        }
    from llama_cpp import Llama

    teacher = resolve_model("qwen2.5-coder-1.5b-instruct").path
    vocab = Llama(model_path=str(teacher), vocab_only=True, verbose=False)

    def tokens(text: str) -> int:
        return len(vocab.tokenize(text.encode(), add_bos=False, special=False))

    rules: dict[str, Callable[[str, str], str]] = {"as stored": lambda text, ep: text}
    for cap in (int(c) for c in args.caps.split(",")):
        rules[f"line cap {cap}"] = lambda text, ep, cap=cap: _line_cap(text, cap)
    rules["enough calls"] = lambda text, ep: _enough_calls(text, ep, cfg.inputs)
    for cap in (120, 160):
        rules[f"enough calls + line cap {cap}"] = lambda text, ep, cap=cap: _enough_calls(
            _line_cap(text, cap), ep, cfg.inputs
        )
    stored_tokens = sum(c["tokens_out"] for c in calls)
    print(f"{len(calls)} replies, {stored_tokens:,} tokens out as recorded by the build")
    print(
        "| rule | tokens | vs stored | replies cut | calls lost | kept tests lost | "
        "tasks below the minimum |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    base = None
    for name, rule in rules.items():
        total = cut = calls_lost = tests_lost = below = 0
        for c in calls:
            ep = tasks[c["task_id"]]["entry_point"]
            text = rule(c["raw"], ep)
            total += tokens(text)
            cut += text != c["raw"]
            before = parse_calls(c["raw"], ep, cfg.inputs)
            after = set(parse_calls(text, ep, cfg.inputs))
            calls_lost += len([x for x in before if x not in after])
            had = kept.get(c["task_id"], [])
            still = [x for x in had if x in after]
            tests_lost += len(had) - len(still)
            below += len(had) >= need > len(still)
        base = base or total
        print(
            f"| {name} | {total:,} | {total / base:.2f} | {cut} | {calls_lost} | "
            f"{tests_lost} | {below} |"
        )


if __name__ == "__main__":
    main()
