"""Build persd's benchmark data files from the original HumanEval and MBPP rows.

    python scripts/build_task_data.py [--humaneval FILE] [--mbpp FILE]

Writes ``src/persd/data/humaneval.jsonl`` (the original fields plus ``seen_tests``),
``src/persd/data/mbpp.jsonl`` (the original fields only) and ``docs/HUMANEVAL_SEEN_TESTS.md``
(per-task counts). Deterministic: the same inputs give byte-identical outputs.

Seen tests are the docstring examples (``persd.tasks.docstring``) that the canonical solution
passes. The canonical solution is trusted benchmark code, but it still runs in a child
process with a time limit, never in this process: one runaway example must not hang the build.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import sys
from collections import Counter
from collections.abc import Sequence
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from persd.records import Test
from persd.sandbox.compare import parse_expected, values_match
from persd.tasks.asserts import call_test
from persd.tasks.docstring import extract_examples
from persd.tasks.mbpp import entry_point_of
from persd.tasks.mbpp import task_from_row as mbpp_task

REPO = Path(__file__).resolve().parent.parent
DATA = REPO / "src" / "persd" / "data"
SHARED = REPO.parent / "shared" / "data"
HUMANEVAL_FIELDS = ("task_id", "prompt", "canonical_solution", "test", "entry_point")
MBPP_FIELDS = ("task_id", "text", "code", "test_list", "test_setup_code", "challenge_test_list")
TIME_LIMIT_S = 10.0  # per task, all its examples together; canonical solutions take < 1 s


def _run_calls(program: str, calls: Sequence[str], conn: Connection) -> None:
    """Child process: run the program, evaluate each call, send back (ok, value-or-error)."""
    results: list[tuple[bool, Any]] = []
    namespace: dict[str, Any] = {"__name__": "__persd_reference__"}
    try:
        exec(compile(program, "<reference>", "exec"), namespace)
    except BaseException as e:  # report anything: the parent decides
        conn.send([(False, f"the program raised {type(e).__name__}: {e}")] * len(calls))
        return
    for call in calls:
        try:
            results.append((True, eval(call, namespace)))
        except BaseException as e:
            results.append((False, f"raised {type(e).__name__}: {e}"))
    try:
        conn.send(results)
    except Exception as e:  # a value that does not pickle
        conn.send([(False, f"result not transferable ({type(e).__name__})")] * len(calls))


def run_reference(program: str, calls: Sequence[str]) -> list[tuple[bool, Any]]:
    """Evaluate ``calls`` against ``program`` in a child process with a time limit."""
    if not calls:
        return []
    ctx = multiprocessing.get_context("spawn")
    parent, child = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_run_calls, args=(program, list(calls), child), daemon=True)
    proc.start()
    child.close()
    try:
        if parent.poll(TIME_LIMIT_S):
            return parent.recv()
        return [(False, f"timed out after {TIME_LIMIT_S:g} s")] * len(calls)
    except EOFError:
        return [(False, "the child exited without a report")] * len(calls)
    finally:
        proc.kill()
        proc.join()
        parent.close()


def validate(test: Test, result: tuple[bool, Any]) -> str | None:
    """None when the reference passes the test, else why not."""
    ok, actual = result
    if not ok:
        return str(actual)
    assert test.expected is not None  # call tests always carry one
    if values_match(parse_expected(test.expected), actual, test.comparison):
        return None
    return f"returned {actual!r}, the docstring says {test.expected}"


def build_humaneval(
    rows: list[dict[str, Any]],
) -> tuple[list[dict[str, Any]], list[str], list[str]]:
    """Output rows with validated ``seen_tests``, summary lines and per-task table rows."""
    out, report = [], []
    totals: Counter[str] = Counter()
    for row in rows:
        extraction = extract_examples(row["prompt"], row["entry_point"])
        tests = [call_test(e.call, e.value) for e in extraction.examples]
        program = row["prompt"] + row["canonical_solution"]
        results = run_reference(program, [t.call or "" for t in tests])
        kept, rejected = [], []
        for test, result in zip(tests, results, strict=True):
            reason = validate(test, result)
            (kept if reason is None else rejected).append((test, reason))
        seen = [t.model_dump(include={"call", "expected", "comparison", "source"}) for t, _ in kept]
        out.append({**{k: row[k] for k in HUMANEVAL_FIELDS}, "seen_tests": seen})
        totals.update(
            found=len(tests),
            kept=len(kept),
            rejected=len(rejected),
            unparsed=len(extraction.unparsed),
            with_seen=bool(kept),
        )
        styles = ", ".join(sorted({e.style for e in extraction.examples}))
        notes = [f"rejected `{t.call}`: {why}" for t, why in rejected]
        notes += [f"unparsed `{u.text}`: {u.reason}" for u in extraction.unparsed]
        if not tests and not extraction.unparsed:
            notes.append("no example written as a call, 'For ...' or 'Input: ... Output:'")
        line = f"| {row['task_id']} | {len(kept)} | {len(rejected)} | "
        cell = "<br>".join(notes).replace("\n", " ").replace("|", "\\|")
        line += f"{len(extraction.unparsed)} | {styles} | {cell} |"
        report.append(line)
        print(
            f"{row['task_id']}: {len(kept)} seen ({len(rejected)} rejected, "
            f"{len(extraction.unparsed)} unparsed)"
        )
    summary = [
        f"- tasks with at least one seen test: {totals['with_seen']} of {len(rows)}",
        f"- seen tests kept: {totals['kept']}",
        f"- examples rejected because the canonical solution disagrees: {totals['rejected']}",
        f"- example-like docstring text that did not parse: {totals['unparsed']}",
    ]
    return out, summary, report


def build_mbpp(rows: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[str]]:
    """Output rows (original fields, by task id) and notes on entry points and test kinds."""
    rows = sorted(rows, key=lambda r: int(r["task_id"]))
    out = [{k: row[k] for k in MBPP_FIELDS} for row in rows]
    kinds: Counter[str] = Counter()
    notes = []
    for number, row in enumerate(out, start=1):
        task = mbpp_task(row, line=number)
        kinds.update(t.kind for t in task.tests_hidden)
        theirs = rows[number - 1].get("entrypoint")
        ours = entry_point_of(row["test_list"], row["code"])
        if theirs is not None and theirs != ours:
            why = "whitespace only" if theirs.strip() == ours else "different name"
            notes.append(
                f"MBPP/{row['task_id']}: entry point {ours!r}, input says {theirs!r} ({why})"
            )
    notes.append(f"MBPP asserts: {kinds['call']} call tests, {kinds['assert']} assert tests")
    return out, notes


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    with path.open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def _write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    with path.open("w", encoding="utf-8", newline="\n") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


REPORT_HEADER = """# HumanEval seen tests: per-task report

Generated by `scripts/build_task_data.py`; do not edit. A seen test is a docstring example that
parsed as a call of the entry point and a Python literal, and that the canonical solution
passes. *Rejected*: the canonical solution returns something else (the docstring is wrong or
describes something else). *Unparsed*: text that looked like an example but is not a call
with a literal value.

"""


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--humaneval",
        type=Path,
        default=SHARED / "humaneval_persd_formatted.jsonl",
        help="HumanEval rows (task_id, prompt, canonical_solution, test, entry_point)",
    )
    parser.add_argument(
        "--mbpp",
        type=Path,
        default=SHARED / "mbpp_persd_formatted.jsonl",
        help="MBPP rows (task_id, text, code, test_list, test_setup_code, challenge_test_list)",
    )
    args = parser.parse_args(argv)

    humaneval, summary, table = build_humaneval(_read_jsonl(args.humaneval))
    _write_jsonl(DATA / "humaneval.jsonl", humaneval)
    header = ["| task | seen | rejected | unparsed | styles | notes |", "|---|---|---|---|---|---|"]
    text = REPORT_HEADER + "\n".join([*summary, "", *header, *table]) + "\n"
    (REPO / "docs" / "HUMANEVAL_SEEN_TESTS.md").write_text(text, encoding="utf-8")

    mbpp, notes = build_mbpp(_read_jsonl(args.mbpp))
    _write_jsonl(DATA / "mbpp.jsonl", mbpp)

    print("\n".join(summary))
    print("\n".join(notes))
    return 0


if __name__ == "__main__":
    sys.exit(main())
