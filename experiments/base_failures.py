"""Why the base student fails a benchmark task (issue 33): each failure in one class.

Reads an evaluation directory (``persd eval --out`` or a run's ``eval/<row>/<benchmark>``): the
step-0 raw outputs from ``generations.jsonl`` (the journal: it is there while an evaluation is
still running, ``samples_base.jsonl`` only at its end), extracts each program with persd's own
``extract_program``, runs it on the hidden tests in persd's sandbox and puts every failed task in
the first class that fits, in this order:

- ``extraction``: the raw output holds a program that passes, which the extraction did not take
  (another fenced block, the block before tidying, the blocks joined, the prompt around a body);
  the harness lost a correct answer;
- ``truncation``: the output used (nearly) all of ``max_new_tokens`` with no closed answer, and
  was cut inside code (a cut in the usage example after a whole function is not this class);
- ``format``: no code at all, or code that defines no function;
- ``wrong name``: a function, but not the one the tests call;
- ``syntax error``;
- ``missing import``: a NameError on a stdlib module or a ``typing`` name;
- ``wrong signature``: a TypeError about the arguments of the call;
- ``timeout``: the CPU or wall-clock limit (or memory);
- ``runtime <Exception>``: any other exception, by type;
- ``wrong logic``: it ran and an assertion failed.

Then a table per benchmark (count, share of failures, share of tasks) and a JSON summary with
each failed task's class. The verdicts are checked against ``samples_base.jsonl`` when it exists.
Run from the project root:

    python experiments/base_failures.py results/pair2-fixed/run/eval/base/humaneval \
        results/pair2-fixed/run/eval/base/mbpp-test --out results/base-failures/pair2-base.json
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections import Counter
from pathlib import Path

from persd.llm.extract import (
    answer_complete,
    attach_prompt_context,
    defines,
    drop_test_code,
    extract_program,
    fenced_blocks,
)
from persd.records import Feedback, Task
from persd.sandbox import Job, Sandbox, SandboxConfig
from persd.tasks import load_benchmark

STUDENT = "qwen2.5-coder-0.5b-instruct"
# Re-tokenising a generated text can merge or split a token at the edges: "used the budget"
# means within this many tokens of max_new_tokens.
TOKEN_SLACK = 8
_TYPING = {"List", "Dict", "Tuple", "Optional", "Set", "Any", "Union", "Callable", "Iterable"}
_NAME_ERROR = re.compile(r"name '(\w+)' is not defined")
_ARGS_ERROR = re.compile(r"positional argument|keyword argument|takes \d+|required argument")
# EvalPlus's MBPP+ task ids: v0.1.0 is what Qwen's published MBPP figure was scored on.
SUBSETS = tuple(Path(f"results/base-failures/mbpp-plus-{v}-ids.txt") for v in ("v0.1.0", "v0.2.0"))


def read_journal(eval_dir: Path) -> tuple[dict, dict[str, str]]:
    """The journal's header and each task's first step-0 raw output."""
    lines = (eval_dir / "generations.jsonl").read_text(encoding="utf-8").splitlines()
    header, raw = json.loads(lines[0]), {}
    for line in lines[1:]:
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue  # a batch being written right now
        if row["key"].startswith("base/0/"):
            raw.update({t: texts[0] for t, texts in zip(row["tasks"], row["texts"], strict=True)})
    return header, raw


def read_subset(path: Path) -> set[str]:
    """MBPP task ids ("MBPP/12") from a file of numbers; lines starting with # are comments."""
    text = "".join(line for line in path.read_text().splitlines(True) if not line.startswith("#"))
    return {f"MBPP/{n}" for n in text.split()}


def recorded_verdicts(eval_dir: Path) -> dict[str, bool]:
    path = eval_dir / "samples_base.jsonl"
    if not path.exists():
        return {}
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return {r["task_id"]: r["passed"] for r in rows if r["index"] == 0}


def alternatives(raw: str, task: Task, program: str) -> list[str]:
    """Other programs a reasonable extractor could have taken from ``raw``."""
    blocks = [code for _, code in fenced_blocks(raw)]
    pieces = [*blocks, "\n\n".join(blocks)] if blocks else [raw]
    found: list[str] = []
    for code in pieces:
        with_context = attach_prompt_context(code, task.prompt, task.entry_point)
        tidy = attach_prompt_context(
            drop_test_code(code, task.entry_point), task.prompt, task.entry_point
        )
        with_prompt = f"{task.prompt.rstrip()}\n{code}"  # a body, or helpers the prompt had
        found += [code, with_context, tidy, with_prompt]
    return [p for p in dict.fromkeys(found) if p.strip() and p != program]


def count_tokens(texts: dict[str, str]) -> dict[str, int]:
    """Tokens of each raw output under the student's own vocabulary (weights not loaded)."""
    from persd.llm.registry import get_spec, model_path
    from persd.llm.render import from_gguf

    vocab = from_gguf(model_path(get_spec(STUDENT)))
    return {k: len(vocab.encode(t, first=False)) for k, t in texts.items()}


def run_hidden(jobs: list[Job], sandbox: Sandbox) -> list[Feedback]:
    out: list[Feedback | None] = [None] * len(jobs)
    for i, fb in sandbox.imap(jobs):
        out[i] = fb
    return out  # type: ignore[return-value]


def _exception(fb: Feedback) -> tuple[str | None, str]:
    """The exception that failed the program and its message."""
    if fb.exception:
        return fb.exception, fb.message or ""
    failure = fb.first_failure
    if failure is not None and failure.exception:
        return failure.exception, failure.message or ""
    return None, ""


def truncated(raw: str, entry_point: str, *, tokens: int, max_new_tokens: int) -> bool:
    """Whether the token budget cut the solution: used up, no closed answer, and the last line
    is indented (inside a function), not a top-level print or comment of a usage example."""
    if answer_complete(raw, entry_point) or tokens < max_new_tokens - TOKEN_SLACK:
        return False
    last = next((ln for ln in reversed(raw.splitlines()) if ln.strip()), "")
    return last[:1].isspace()


def classify(
    task: Task,
    raw: str,
    program: str,
    fb: Feedback,
    *,
    alt_passes: bool,
    tokens: int,
    max_new_tokens: int,
) -> str:
    """The class of one failed task (module docstring, in order)."""
    if alt_passes:
        return "extraction"
    if truncated(raw, task.entry_point, tokens=tokens, max_new_tokens=max_new_tokens):
        return "truncation"
    if not re.search(r"^\s*def \w+", program, re.M):
        return "format"
    if not defines(program, task.entry_point):
        return "wrong name"
    if fb.status == "syntax_error":
        return "syntax error"
    if fb.status in ("timeout", "memory", "output_limit"):
        return "timeout"
    exc, message = _exception(fb)
    if exc == "NameError":
        name = (_NAME_ERROR.search(message) or [None, ""])[1]
        if name in sys.stdlib_module_names or name in _TYPING:
            return "missing import"
    if exc == "TypeError" and _ARGS_ERROR.search(message):
        return "wrong signature"
    if exc:
        return f"runtime {exc}"
    return "wrong logic" if fb.status == "failed" else fb.status


def failures_of(eval_dir: Path, sandbox: Sandbox, *, subsets: dict[str, set[str]]) -> dict:
    """Every failure's class for one evaluation directory, and pass@1 on each subset of ids."""
    header, raw = read_journal(eval_dir)
    tasks = {t.id: t for t in load_benchmark(header["benchmark"]) if t.id in raw}
    programs = {
        k: extract_program(raw[k], prompt=t.prompt, entry_point=t.entry_point, chat=header["chat"])
        for k, t in tasks.items()
    }
    ids = list(tasks)
    scored = run_hidden([Job.for_task(tasks[k], programs[k]) for k in ids], sandbox)
    verdicts = dict(zip(ids, scored, strict=True))
    failed = [k for k in ids if not verdicts[k].passed]
    alt = [(k, p) for k in failed for p in alternatives(raw[k], tasks[k], programs[k])]
    alt_fb = run_hidden([Job.for_task(tasks[k], p) for k, p in alt], sandbox)
    rescued = {k: p for (k, p), fb in zip(alt, alt_fb, strict=True) if fb.passed}
    tokens = count_tokens({k: raw[k] for k in failed})
    classes = {
        k: classify(
            tasks[k],
            raw[k],
            programs[k],
            verdicts[k],
            alt_passes=k in rescued,
            tokens=tokens[k],
            max_new_tokens=header["max_new_tokens"],
        )
        for k in failed
    }
    recorded = recorded_verdicts(eval_dir)
    return {
        "eval_dir": str(eval_dir),
        "benchmark": header["benchmark"],
        "tasks": len(ids),
        "passed": len(ids) - len(failed),
        "disagree_with_record": sorted(k for k in recorded if recorded[k] != verdicts[k].passed),
        "counts": dict(Counter(classes.values()).most_common()),
        # MBPP only: the tasks that are also in EvalPlus's MBPP+ (scored with our prompts and tests)
        "subsets": {
            name: {
                "tasks": sum(k in ids_in for k in ids),
                "passed": sum(verdicts[k].passed for k in ids if k in ids_in),
                "counts": dict(Counter(c for k, c in classes.items() if k in ids_in).most_common()),
            }
            for name, ids_in in subsets.items()
        },
        "classes": classes,
        "alternatives_tried": len(alt),
        "rescued_programs": rescued,
        "tokens": tokens,
    }


def _pct(k: int, n: int) -> str:
    return f"{100 * k / n:.1f}%" if n else "-"


def table(summary: dict) -> str:
    n, failed = summary["tasks"], summary["tasks"] - summary["passed"]
    lines = [
        f"{summary['benchmark']} ({summary['eval_dir']}): {summary['passed']}/{n} passed "
        f"({100 * summary['passed'] / n:.1f}%), {failed} failed",
        "| class | tasks | of failures | of all tasks |",
        "|---|---|---|---|",
    ]
    for cls, c in summary["counts"].items():
        lines.append(f"| {cls} | {c} | {100 * c / failed:.1f}% | {100 * c / n:.1f}% |")
    for name, sub in summary["subsets"].items():
        k, m = sub["passed"], sub["tasks"]
        rest, rest_passed = n - m, summary["passed"] - k
        if m:
            lines.append(
                f"in {name}: {k}/{m} ({_pct(k, m)}); "
                f"the other {rest}: {rest_passed}/{rest} ({_pct(rest_passed, rest)})"
            )
    if summary["disagree_with_record"]:
        differ = summary["disagree_with_record"]
        lines.append(f"verdicts differing from samples_base.jsonl: {differ}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("eval_dirs", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, help="JSON summary (default: print only)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument(
        "--subset", type=Path, action="append", help="MBPP ids to report apart (repeatable)"
    )
    args = parser.parse_args()
    with Sandbox(SandboxConfig(workers=args.workers)) as sandbox:
        subsets = {p.stem.removesuffix("-ids"): read_subset(p) for p in args.subset or SUBSETS}
        summaries = [failures_of(d, sandbox, subsets=subsets) for d in args.eval_dirs]
    for s in summaries:
        print(table(s), end="\n\n")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(summaries, indent=1) + "\n")
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
