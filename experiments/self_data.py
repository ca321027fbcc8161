"""What a ``self`` run's data stage made (issue 33, lever 1): how often the student's samples
pass, how many tasks it solves sometimes but not always (what self-training can sharpen), and
the rows it keeps. Reads the run directory's stage files only.

    python experiments/self_data.py results/gain-self
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir", type=Path)
    run = ap.parse_args().run_dir
    attempts = _rows(run / "attempts.jsonl")
    seen = {e["id"]: e["feedback"]["status"] == "passed" for e in _rows(run / "executions.jsonl")}
    every = {
        e["id"]: e["feedback"]["status"] == "passed" for e in _rows(run / "verifications.jsonl")
    }
    by_task: dict[str, list[bool]] = defaultdict(list)
    cut = 0
    for a in attempts:
        by_task[a["task_id"]].append(every.get(a["id"], False))
        cut += a["tokens_out"] >= a["sampling"]["max_new_tokens"]
    n = len(attempts)
    k = max(len(v) for v in by_task.values())
    print(f"{len(by_task)} tasks x {k} samples = {n} attempts ({cut} cut at max_new_tokens)")
    print(f"passed the seen tests: {sum(seen.get(a['id'], False) for a in attempts)} of {n}")
    print(f"passed all tests: {sum(every.values())} of {n} ({100 * sum(every.values()) / n:.1f}%)")
    always = sum(all(v) for v in by_task.values())
    some = sum(any(v) and not all(v) for v in by_task.values())
    never = sum(not any(v) for v in by_task.values())
    print(f"tasks solved by every sample: {always}; by some, not all: {some}; by none: {never}")
    print(f"pass@{k} (all tests): {100 * (always + some) / len(by_task):.1f}%")
    rows = _rows(run / "data" / "self.jsonl")
    tasks = {r["task_id"] for r in rows}
    chars = sum(len(r["completion"]) for r in rows) / max(len(rows), 1)
    print(f"self rows: {len(rows)} from {len(tasks)} tasks; completions of {chars:.0f} characters")


if __name__ == "__main__":
    main()
