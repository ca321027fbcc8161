"""Two checks of an evaluation's verdicts from outside persd's scoring path (issue 33).

For every task of an evaluation directory (``base_failures.py`` reads the same journal), the
program persd's ``extract_program`` takes from the raw output is run in a plain ``python -c``
subprocess (10 s timeout, no sandbox: use it only on recorded outputs of a known model):

- ``--original``: against the benchmark's own test code (HumanEval's ``check`` function, MBPP's
  three asserts with the task's setup code). Counts the tasks where persd's sandbox and a plain
  run disagree: the sandbox losing or inventing a pass.
- ``--evalplus MbppPlus.jsonl``: MBPP only, against the asserts EvalPlus keeps with each MBPP+
  task (its ``assertion`` field: corrected expected values, floats by ``math.isclose``). Says how
  many of our verdicts would change under EvalPlus's tests on the tasks both sets share. EvalPlus
  also rewrote some prompts (a signature without MBPP's length argument), so a program written
  for our prompt can fail there for that reason alone; the differing tasks are listed, each with
  its verdict under EvalPlus's asserts.

    python experiments/base_failures_crosscheck.py results/pair2-fixed/run/eval/base/mbpp-test \
        --original --evalplus MbppPlus-v0.1.0.jsonl
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from base_failures import read_journal, recorded_verdicts

from persd.llm.extract import extract_program
from persd.records import Task
from persd.tasks import load_benchmark

DATA = Path("src/persd/data")


def passes(program: str, test_code: str) -> bool:
    try:
        done = subprocess.run(
            [sys.executable, "-c", f"{program}\n\n{test_code}"],
            capture_output=True,
            timeout=10,
            cwd="/tmp",
        )
    except subprocess.TimeoutExpired:
        return False
    return done.returncode == 0


def original_tests(benchmark: str) -> dict[str, str]:
    """Each task's own test code, as the benchmark ships it."""
    tests = {}
    if benchmark == "humaneval":
        for line in (DATA / "humaneval.jsonl").read_text().splitlines():
            r = json.loads(line)
            tests[r["task_id"]] = f"{r['test']}\ncheck({r['entry_point']})\n"
    else:
        for line in (DATA / "mbpp.jsonl").read_text().splitlines():
            r = json.loads(line)
            tests[f"MBPP/{r['task_id']}"] = "\n".join([r["test_setup_code"], *r["test_list"]])
    return tests


def evalplus_tests(path: Path) -> dict[str, str]:
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return {r["task_id"].replace("Mbpp/", "MBPP/"): r["assertion"] for r in rows}


def compare(programs: dict[str, str], verdicts: dict[str, bool], tests: dict[str, str]) -> dict:
    shared = [k for k in programs if k in tests]
    theirs = {k: passes(programs[k], tests[k]) for k in shared}
    return {
        "tasks": len(shared),
        "ours": sum(verdicts[k] for k in shared),
        "theirs": sum(theirs.values()),
        "differ": {k: theirs[k] for k in shared if verdicts[k] != theirs[k]},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("eval_dir", type=Path)
    parser.add_argument("--original", action="store_true")
    parser.add_argument("--evalplus", type=Path, help="an MbppPlus-*.jsonl file")
    args = parser.parse_args()
    header, raw = read_journal(args.eval_dir)
    tasks: dict[str, Task] = {t.id: t for t in load_benchmark(header["benchmark"])}
    programs = {
        k: extract_program(raw[k], prompt=t.prompt, entry_point=t.entry_point, chat=header["chat"])
        for k, t in ((k, tasks[k]) for k in raw)
    }
    verdicts = recorded_verdicts(args.eval_dir)
    if not verdicts:  # an evaluation still running: the original tests, run here, stand in
        tests = original_tests(header["benchmark"])
        verdicts = {k: passes(programs[k], tests[k]) for k in programs}
        if args.original:
            print("no samples_base.jsonl: no sandbox verdicts to cross-check")
            args.original = False
    if args.original:
        result = compare(programs, verdicts, original_tests(header["benchmark"]))
        print(f"original tests, plain run: {json.dumps(result)}")
    if args.evalplus:
        result = compare(programs, verdicts, evalplus_tests(args.evalplus))
        print(f"EvalPlus asserts: {json.dumps(result)}")


if __name__ == "__main__":
    main()
