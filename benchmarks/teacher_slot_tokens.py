"""What a run's local teacher slots evaluated: prompt tokens and generated tokens, with times.

llama-cpp-python's server logs llama.cpp's timings for every request, and its prompt count is
what the slot evaluated after reusing the prefix its context already held from the previous
request; comparing it with the prompt tokens the run sent shows how much was reused. Reads
``<run dir>/logs/llama-server-*.log`` and the run's ``solutions.jsonl`` / ``refinements.jsonl``.

    python benchmarks/teacher_slot_tokens.py RUN_DIR [RUN_DIR ...]
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

_PROMPT = re.compile(r"prompt eval time =\s+([\d.]+) ms /\s+(\d+) tokens")
_DECODE = re.compile(r"\beval time =\s+([\d.]+) ms /\s+(\d+) runs")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", type=Path)
    args = ap.parse_args()
    for run in args.runs:
        requests = prompt = decode = 0
        prompt_s = decode_s = 0.0
        for log in sorted((run / "logs").glob("llama-server-*.log")):
            for line in log.read_text(errors="replace").splitlines():
                if m := _PROMPT.search(line):
                    requests += 1
                    prompt_s += float(m.group(1)) / 1000
                    prompt += int(m.group(2))
                elif m := _DECODE.search(line):
                    decode_s += float(m.group(1)) / 1000
                    decode += int(m.group(2))
        sent = 0
        for name in ("solutions.jsonl", "refinements.jsonl"):
            path = run / name
            if path.exists():
                sent += sum(json.loads(row)["tokens_in"] for row in path.read_text().splitlines())
        print(
            f"{run}: {requests} requests; prompt tokens sent {sent}, evaluated {prompt} "
            f"({prompt_s:.1f} s), reused {sent - prompt}; generated {decode} ({decode_s:.1f} s)"
        )


if __name__ == "__main__":
    main()
