"""The early stop of chat replies, checked offline on every stored evaluation reply.

Evaluation stops a chat reply once ``persd.llm.extract.answer_complete`` holds: a closed block
defines the entry point, or the first block, still open, defines it and then begins top-level
test code (a usage example). This script replays each stored reply under ``results/`` (the
``generations.jsonl`` journals of MBPP test and HumanEval evaluations), cuts it at the first
newline or backtick where ``answer_complete`` holds (generation checks after each token that
holds one of them), and counts:

- replies that end earlier, and the characters they would not have generated (all, and per
  journal with ``--per-file``);
- cut replies whose extracted program differs from the whole reply's (should be 0).

With ``--against OLD_SRC`` (a checkout's ``src``, e.g. a worktree of the previous commit) it
also extracts every whole reply with that checkout's ``extract_program``, counts the programs
that differ and scores both versions of each on the task's hidden tests in the sandbox.

    python experiments/early_stop_check.py
    python experiments/early_stop_check.py --against /tmp/old/src
"""

from __future__ import annotations

import argparse
import importlib.util
import json
from collections.abc import Iterator
from pathlib import Path

from persd.llm.extract import answer_complete, extract_program
from persd.records import Task
from persd.tasks import load_benchmark

BENCHES = ("mbpp-test", "humaneval")


def replies(root: Path) -> Iterator[tuple[Path, Task, str, bool]]:
    """(journal, task, reply text, chat) of every stored reply of a known benchmark task."""
    tasks = {(b, t.id): t for b in BENCHES for t in load_benchmark(b)}
    for path in sorted(root.glob("**/generations.jsonl")):
        lines = path.read_text().splitlines()
        head = json.loads(lines[0])
        if head.get("benchmark") not in BENCHES:
            continue
        for line in lines[1:]:
            batch = json.loads(line)
            for task_id, texts in zip(batch["tasks"], batch["texts"], strict=True):
                task = tasks.get((head["benchmark"], task_id))
                for text in texts if task else ():
                    yield path, task, text, bool(head.get("chat"))


def stop_point(text: str, entry_point: str) -> int | None:
    """Where generation would have stopped (None: at the reply's own end)."""
    for i, ch in enumerate(text):
        if ch in "\n`" and answer_complete(text[: i + 1], entry_point):
            return i + 1 if i + 1 < len(text) else None
    return None


def check_cuts(root: Path, per_file: bool) -> None:
    total = cut = chars = saved = differ = 0
    by_file: dict[Path, list[int]] = {}
    for path, task, text, chat in replies(root):
        if not chat:
            continue
        total, chars = total + 1, chars + len(text)
        stop = stop_point(text, task.entry_point)
        row = by_file.setdefault(path, [0, 0])
        row[0] += len(text)
        if stop is None:
            continue
        cut, saved, row[1] = cut + 1, saved + len(text) - stop, row[1] + len(text) - stop
        kw = {"prompt": task.prompt, "entry_point": task.entry_point, "chat": True}
        if extract_program(text[:stop], **kw) != extract_program(text, **kw):
            differ += 1
            print(f"differs: {path} {task.id}")
    print(
        f"{total} chat replies; {cut} end earlier; {saved:,} of {chars:,} characters "
        f"not generated ({saved / max(chars, 1):.1%}); programs that differ: {differ}"
    )
    for path, (n, s) in by_file.items() if per_file else ():
        print(f"  {path}: {s / max(n, 1):.1%}")


def check_against(root: Path, old_src: Path) -> None:
    from persd.sandbox import Job, Sandbox

    spec = importlib.util.spec_from_file_location("old_extract", old_src / "persd/llm/extract.py")
    assert spec and spec.loader
    old = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(old)
    n, changed = 0, []
    for _, task, text, chat in replies(root):
        kw = {"prompt": task.prompt, "entry_point": task.entry_point, "chat": chat}
        n += 1
        new_program, old_program = extract_program(text, **kw), old.extract_program(text, **kw)
        if new_program != old_program:
            changed.append((task, new_program, old_program))
    flips = 0
    with Sandbox() as sandbox:
        for task, new_program, old_program in changed:
            a = sandbox.run(Job.for_task(task, new_program)).status
            b = sandbox.run(Job.for_task(task, old_program)).status
            if a != b:
                flips += 1
                print(f"verdict changed: {task.id} {b} -> {a}")
    print(f"{n} replies; {len(changed)} programs differ from {old_src}'s; verdicts changed {flips}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--root", type=Path, default=Path("results"))
    ap.add_argument("--against", type=Path, help="another checkout's src/ to compare extraction")
    ap.add_argument("--per-file", action="store_true")
    args = ap.parse_args()
    check_cuts(args.root, args.per_file)
    if args.against:
        check_against(args.root, args.against)


if __name__ == "__main__":
    main()
