"""The results tables of docs/RESULTS.md, read from a run directory's evaluation reports.

Numbers in the write-up come from here, never typed by hand. For every evaluated row it reads
``eval/<row>/<benchmark>/report.json`` (pass@1 at step 0, and on HumanEval after the refinement
steps and the equal-budget resampling arm) and the training-set size from the model's
``train_summary.json`` (else from ``data/<variant>.jsonl``).

Paired comparisons (``--pair A B``) use the per-task verdicts of step 0
(``samples_base.jsonl``): both rows answered the same tasks with greedy decoding, so the exact
McNemar test on the tasks where exactly one of them passed says whether a difference is more
than noise. With a 500-task benchmark and pass rates near 5%, differences of one or two points
are usually within it; the script prints the p-value instead of leaving that to the reader.
A row of another run directory is written ``RUN_DIR:row`` (e.g. ``--pair stand
results/gain-persd:persd_combined@epoch1``): two runs' models on the same evaluation.

Rows named ``<variant>-s<seed>`` are the same variant trained with another seed (their models
live outside the run dir; only their evaluations are kept).

``--training`` adds the cost table: per trained model, its rows, optimizer steps, final loss and
training wall time (``train_summary.json`` under ``models/<variant>``, ``models-seed<seed>/`` or
``models-released/``), each evaluation's wall time (``generate_s`` + ``score_s`` of its
report), and the teacher tokens (in + out) of the calls its data needed, summed from the run's
solution and refinement records:

- StanD and StanD-matched: the direct solution of every pool task (a matched subset still needed
  every task solved and verified to choose from);
- InpD: the direct solutions of the tasks the student failed;
- PERsD, PERsD-refine, PERsD-combined: those same solutions (the paper's refinement template
  gives the teacher its own answer as the reference) plus every refinement call;
- persd_onpolicy: every solution and refinement call (its rows' verified programs come from
  both) plus the tokens the teacher read to score the student's samples (``teacher_tokens``
  of its ``train_summary.json``; a forward pass, no generation).

``--seeds A B`` compares two variants over all their seeds (per-seed pass@1, mean, spread and
one McNemar test over the pooled (task, seed) pairs).

``--pair`` tables also give each p Holm-adjusted over every test in the table: a table of
thirty tests shows a p near 0.05 by chance alone. ``--outcomes BENCH`` counts how each row's
step-0 programs ended (passed, wrong answer, exception, syntax error, timeout);
``--refine-effect`` what the refinement steps did to the programs they refined.

``--data RUN...`` prints each run's data stage from its stage records (seen-test pass rate of
the attempts, verified teacher solutions and refinements with 95% Wilson intervals, teacher
tokens, training rows); ``--same-tasks`` restricts them to the tasks all of them attempted.

``--update docs/RESULTS.md`` regenerates every table block of the write-up marked
``<!-- results_table ARGS -->`` ... ``<!-- /results_table -->`` from the ARGS in its marker.

Usage: python experiments/results_table.py RUN_DIR [--rows ROW...] [--pair A B]... [--training]
       [--seeds A B] [--outcomes BENCH] [--refine-effect] [--no-results]
       python experiments/results_table.py --data RUN [RUN...] [--same-tasks]
       python experiments/results_table.py --update MARKDOWN
"""

from __future__ import annotations

import argparse
import json
import math
import re
import shlex
from pathlib import Path

from persd.evaluate.paired import mcnemar_exact

BENCHES = ("mbpp-test", "humaneval")
_SEED = re.compile(r"^(?P<variant>.+)-s(?P<seed>\d+)$")


def _locate(run: Path, row: str) -> tuple[Path, str]:
    """A row of another run directory is named ``RUN_DIR:row`` (relative to the working
    directory): pairing models that two runs trained on the same evaluation."""
    other, sep, name = row.rpartition(":")
    return (Path(other), name) if sep else (run, row)


def _report(run: Path, row: str, bench: str) -> dict | None:
    run, row = _locate(run, row)
    path = run / "eval" / row / bench / "report.json"
    return json.loads(path.read_text()) if path.exists() else None


def _pass1(report: dict | None, arm: str = "base", step: int | None = None) -> float | None:
    if report is None:
        return None
    steps = [s for s in report["steps"] if s["arm"] == arm]
    if step is not None:
        steps = [s for s in steps if s["step"] == step]
    return steps[-1]["pass_at"]["1"] if steps else None


def _records(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _verdicts(run: Path, row: str, bench: str) -> dict[str, bool] | None:
    run, row = _locate(run, row)
    path = run / "eval" / row / bench / "samples_base.jsonl"
    if not path.exists():
        return None
    return {r["task_id"]: bool(r["passed"]) for r in _records(path) if r["index"] == 0}


def _paired(va: dict[str, bool], vb: dict[str, bool]) -> tuple[int, float, float, int, int]:
    """On the tasks both answered: (how many, A's pass rate, B's, only A passed, only B)."""
    common = set(va) & set(vb)
    n = len(common)
    return (
        n,
        sum(va[t] for t in common) / n,
        sum(vb[t] for t in common) / n,
        sum(va[t] and not vb[t] for t in common),
        sum(vb[t] and not va[t] for t in common),
    )


def _variant(row: str) -> str:
    """The training set behind a row name (``<variant>-s<seed>`` is another seed of it,
    ``<variant>@epoch1`` a checkpoint of it)."""
    row = row.split("@", 1)[0]
    m = _SEED.match(row)
    return m["variant"] if m else row


mcnemar_p = mcnemar_exact  # one implementation, the library's (persd.evaluate.paired)


def holm(ps: list[float]) -> list[float]:
    """Holm's step-down adjustment of a family of p-values, in their input order.

    A table of many paired tests will show a p near 0.05 by chance alone; the adjusted value
    is what that p means once the whole table is counted (family-wise error, no independence
    assumed). Sorted ascending, the i-th smallest (0-based) of m is multiplied by m - i, and
    each adjusted value is kept at least as large as the one before it.
    """
    m = len(ps)
    out = [0.0] * m
    running = 0.0
    for i, k in enumerate(sorted(range(m), key=ps.__getitem__)):
        running = max(running, min(1.0, (m - i) * ps[k]))
        out[k] = running
    return out


def _rows(run: Path, variant: str) -> int | None:
    path = run / "data" / f"{variant}.jsonl"
    if not path.exists():
        return None
    return sum(1 for line in path.read_text().splitlines() if line.strip())


def _fmt(x: float | None) -> str:
    return "pending" if x is None else f"{100 * x:.1f}%"


def results_table(run: Path, rows: list[str]) -> str:
    head = (
        "| row | training rows | MBPP test pass@1 (500, greedy) | HumanEval pass@1 "
        "(164, greedy) | + 2 refinement steps | equal-budget resampling (T=0.2) |\n"
        "|---|---:|---:|---:|---:|---:|"
    )
    lines = [head]
    for row in rows:
        summary = None if row == "base" else _summary(run, row)
        n = 0 if row == "base" else summary["examples"] if summary else _rows(run, _variant(row))
        mbpp = _report(run, row, "mbpp-test")
        he = _report(run, row, "humaneval")
        refine_steps = he["refine_steps"] if he else 0
        lines.append(
            f"| {row} | {n if n is not None else '?'} | {_fmt(_pass1(mbpp, step=0))} "
            f"| {_fmt(_pass1(he, step=0))} "
            f"| {_fmt(_pass1(he, 'refine', refine_steps) if refine_steps else None)} "
            f"| {_fmt(_pass1(he, 'resample', refine_steps) if refine_steps else None)} |"
        )
    return "\n".join(lines)


def teacher_tokens(run: Path, tasks: set[str] | None = None) -> dict[str, int]:
    """Teacher tokens (in + out) behind each variant's data; see the module docstring.

    ``tasks`` counts only the calls for those tasks (to compare runs on the tasks they share).
    """
    solutions = _records(run / "solutions.jsonl")
    refinements = _records(run / "refinements.jsonl")
    if tasks is not None:
        solutions = [r for r in solutions if r["task_id"] in tasks]
        refinements = [r for r in refinements if r["task_id"] in tasks]
    failed = {r["task_id"] for r in refinements}
    solve_all = sum(r["tokens_in"] + r["tokens_out"] for r in solutions)
    solve_failed = sum(
        r["tokens_in"] + r["tokens_out"] for r in solutions if r["task_id"] in failed
    )
    refine = sum(r["tokens_in"] + r["tokens_out"] for r in refinements)
    return {
        "stand": solve_all,
        "stand_matched": solve_all,
        "inpd": solve_failed,
        "persd": solve_failed + refine,
        "persd_refine": solve_failed + refine,
        "persd_combined": solve_failed + refine,
        # The verified programs its rows show the teacher come from solutions and refinements;
        # the teacher's scoring pass (forward only) is added per model from its summary.
        "persd_onpolicy": solve_all + refine,
        # The control without privileged context: the same rows (chosen by the same verified
        # programs), its teacher reading only the student's prompt.
        "persd_onpolicy_open": solve_all + refine,
    }


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval of a proportion k/n: honest near 0 and for small n, where
    the normal interval runs below zero."""
    if n == 0:
        return 0.0, 1.0
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def _rate(k: int, n: int) -> str:
    if n == 0:
        return "0 / 0"
    lo, hi = wilson(k, n)
    return f"{k} / {n} ({100 * k / n:.1f}%, {100 * lo:.0f}–{100 * hi:.0f}%)"


def data_table(runs: list[Path], same_tasks: bool = False) -> str:
    """The data stage of each run, from its stage records: how often the student passed its
    seen tests, the teacher's direct solutions and its refinements of the student's failures
    were verified, what that cost in teacher tokens, and the training rows it gave.

    ``same_tasks`` restricts every run to the tasks all of them attempted, so two pairs run on
    different samples of one pool compare on the same tasks. Rates carry a 95% Wilson
    interval.
    """
    attempts_of = [_records(run / "attempts.jsonl") for run in runs]
    attempted = [{r["task_id"] for r in rows} for rows in attempts_of]
    common = set.intersection(*attempted) if same_tasks and attempted else None
    lines = [
        "| run (student ← teacher) | tasks | student passes its seen tests | teacher solution "
        "verified | refinement of a failure verified | teacher tokens, StanD data | teacher "
        "tokens, PERsD data | StanD rows | PERsD-combined rows |",
        "|---|---:|---|---|---|---:|---:|---:|---:|",
    ]
    for run, all_attempts, tasks in zip(runs, attempts_of, attempted, strict=True):
        keep = common if common is not None else tasks
        attempts = [r for r in all_attempts if r["task_id"] in keep]
        executions = [r for r in _records(run / "executions.jsonl") if r["task_id"] in keep]
        solutions = [r for r in _records(run / "solutions.jsonl") if r["task_id"] in keep]
        refinements = [r for r in _records(run / "refinements.jsonl") if r["task_id"] in keep]
        verified = {
            r["id"]
            for r in _records(run / "verifications.jsonl")
            if r["feedback"]["status"] == "passed"
        }
        tokens = teacher_tokens(run, keep)
        rows = {
            v: sum(r["task_id"] in keep for r in _records(run / "data" / f"{v}.jsonl"))
            for v in ("stand", "persd_combined")
        }
        student = attempts[0]["model_id"] if attempts else "?"
        teacher = solutions[0]["model_id"] if solutions else "?"
        passed = sum(r["feedback"]["status"] == "passed" for r in executions)
        lines.append(
            f"| {student} ← {teacher} | {len(keep)} "
            f"| {_rate(passed, len(executions))} "
            f"| {_rate(sum(r['id'] in verified for r in solutions), len(solutions))} "
            f"| {_rate(sum(r['id'] in verified for r in refinements), len(refinements))} "
            f"| {tokens['stand']:,} | {tokens['persd']:,} "
            f"| {rows['stand']} | {rows['persd_combined']} |"
        )
    return "\n".join(lines)


def _summary(run: Path, row: str) -> dict | None:
    m = _SEED.match(row)
    if m:
        path = run / f"models-seed{m['seed']}" / m["variant"] / "train_summary.json"
    elif row.startswith("released_"):
        path = run / "models-released" / row / "train_summary.json"
    else:
        path = run / "models" / row / "train_summary.json"
    return json.loads(path.read_text()) if path.exists() else None


def _eval_wall(run: Path, row: str, bench: str) -> str:
    """One evaluation's wall time (generation + scoring) from its report.

    Reports written before ``generate_s`` existed, or resumed from journal batches that carry
    no seconds, have none: the cell says so rather than showing a partial sum.
    """
    report = _report(run, row, bench)
    if report is None:
        return "pending"
    if report.get("generate_s") is None:
        return "not recorded"
    return f"{report['generate_s'] + (report.get('score_s') or 0.0):,.0f} s"


_BENCH_NAME = {"humaneval": "HumanEval", "mbpp-test": "MBPP test"}


def training_table(run: Path, rows: list[str], benches: tuple[str, ...] = BENCHES) -> str:
    tokens = teacher_tokens(run)
    order = [b for b in _BENCH_NAME if b in benches]  # HumanEval first, as in the write-up
    lines = [
        "| model | rows | optimizer steps | final loss | training wall "
        "| teacher tokens (in + out) |"
        + "".join(f" {_BENCH_NAME[b]} evaluation wall |" for b in order),
        "|---|---:|---:|---:|---:|---:|" + "---:|" * len(order),
    ]
    for row in rows:
        s = _summary(run, row)
        if s is None:
            continue
        spent = tokens.get(_variant(row))
        if spent is not None and s.get("teacher_tokens"):
            spent += s["teacher_tokens"]  # persd_onpolicy: tokens the teacher read to score
        lines.append(
            f"| {row} | {s['examples']} | {s['steps']} | {s['final_loss']:.3f} "
            f"| {s['wall_s']:,.0f} s | {'released (not ours)' if spent is None else f'{spent:,}'} |"
            + "".join(f" {_eval_wall(run, row, b)} |" for b in order)
        )
    return "\n".join(lines)


def pair_table(run: Path, pairs: list[tuple[str, str]], benches: tuple[str, ...] = BENCHES) -> str:
    """One exact McNemar test per pair and benchmark, and the same p Holm-adjusted over every
    test in this table (the tests the table reports are one family)."""
    lines = [
        "| A | B | benchmark | A pass@1 | B pass@1 | only A passed | only B passed "
        "| exact McNemar p | Holm-adjusted p |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    cells: list[tuple[str, float | None]] = []
    for a, b in pairs:
        for bench in benches:
            va, vb = _verdicts(run, a, bench), _verdicts(run, b, bench)
            if va is None or vb is None:
                cells.append((f"| {a} | {b} | {bench} | | | | | pending", None))
                continue
            n, pa, pb, only_a, only_b = _paired(va, vb)
            p = mcnemar_p(only_a, only_b)
            cells.append(
                (
                    f"| {a} | {b} | {bench} ({n}) | {100 * pa:.1f}% | {100 * pb:.1f}% "
                    f"| {only_a} | {only_b} | {p:.2f}",
                    p,
                )
            )
    adjusted = iter(holm([p for _, p in cells if p is not None]))
    for text, p in cells:
        lines.append(f"{text} | |" if p is None else f"{text} | {next(adjusted):.2f} |")
    return "\n".join(lines)


OUTCOMES = ("passed", "failed", "error", "syntax_error", "timeout")
_DEF = re.compile(r"^\s*(async\s+)?def\s+\w", re.MULTILINE)


def outcome_table(run: Path, rows: list[str], bench: str) -> str:
    """How each row's step-0 programs ended on one benchmark (hidden tests): passed, a wrong
    answer (``failed``), an exception (``error``), unparsable code, a timeout. Training can
    change the kind of failure long before it changes the pass rate.

    The last column counts programs with no ``def`` line at all: a student that learned a
    prompt format the benchmark does not use (e.g. always being given the signature) replies
    with no function, which ``error`` alone would hide among ordinary exceptions."""
    lines = [
        f"| row ({bench}) | " + " | ".join(OUTCOMES) + " | other | no `def` |",
        "|---|" + "---:|" * (len(OUTCOMES) + 2),
    ]
    for row in rows:
        path = run / "eval" / row / bench / "samples_base.jsonl"
        if not path.exists():
            continue
        counts: dict[str, int] = {}
        no_def = 0
        for r in _records(path):
            counts[r["status"]] = counts.get(r["status"], 0) + 1
            no_def += _DEF.search(r.get("completion") or "") is None
        other = sum(v for k, v in counts.items() if k not in OUTCOMES)
        lines.append(
            f"| {row} | "
            + " | ".join(str(counts.get(k, 0)) for k in OUTCOMES)
            + f" | {other} | {no_def} |"
        )
    return "\n".join(lines)


def refine_effect_table(run: Path, rows: list[str], bench: str = "humaneval") -> str:
    """What the refinement steps did to the programs they were given: the step-0 programs that
    failed their SEEN tests (the only ones refined), how many the steps rewrote, and how many
    then pass the seen and the hidden tests. A flat refinement column can mean the student
    repeats itself or rewrites without fixing; this table tells the two apart."""
    lines = [
        f"| row ({bench}) | refined (failed seen tests at step 0) | rewritten | "
        "now pass seen tests | now pass hidden tests |",
        "|---|---:|---:|---:|---:|",
    ]
    for row in rows:
        out = run / "eval" / row / bench
        final = _records(out / "samples_refine.jsonl")
        if not final:
            continue
        step0 = {(r["task_id"], r["index"]): r for r in _records(out / "samples_base.jsonl")}
        # (step-0 record, final record) for every program the steps were given
        refined = [
            (first, r)
            for r in final
            if (first := step0[(r["task_id"], r["index"])])["seen_status"] != "passed"
        ]
        rewritten = sum(first["completion"] != r["completion"] for first, r in refined)
        seen = sum(r["seen_status"] == "passed" for _, r in refined)
        hidden = sum(bool(r["passed"]) for _, r in refined)
        lines.append(f"| {row} | {len(refined)} | {rewritten} | {seen} | {hidden} |")
    return "\n".join(lines)


def seed_table(run: Path, a: str, b: str, benches: tuple[str, ...] = BENCHES) -> str:
    """Two variants over every seed evaluated for both: pass@1 per seed, the mean and the
    spread (max - min), and one exact McNemar test over all (task, seed) pairs.

    Seed 42 is the plain name, another seed ``<variant>-s<seed>``. Pooling the seeds treats
    each retraining as a replicate of the same comparison on the same tasks, so the pooled
    test sees twice the discordant pairs; it is still a test of the methods at this scale,
    not of any one trained model. ``B = base`` pairs each seed's trained row with the one
    untrained row (the same greedy verdicts each time): a test of training against no training.
    """
    seeds = sorted(
        {42}
        | {
            int(m["seed"])
            for p in (run / "eval").iterdir()
            if (m := _SEED.match(p.name)) and m["variant"] in (a, b)
        }
    )

    def name(variant: str, seed: int) -> str:
        # The untrained student has no seed: every seed of the other variant meets the same row.
        return variant if seed == 42 or variant == "base" else f"{variant}-s{seed}"

    lines = [
        f"| benchmark | seeds | {a} per seed | {b} per seed | {a} mean | {b} mean "
        f"| spread {a} / {b} | only {a} passed | only {b} passed | exact McNemar p (pooled) |",
        "|---|---|---|---|---:|---:|---|---:|---:|---:|",
    ]
    for bench in benches:
        used, rates_a, rates_b, only_a, only_b = [], [], [], 0, 0
        for seed in seeds:
            va, vb = _verdicts(run, name(a, seed), bench), _verdicts(run, name(b, seed), bench)
            if va is None or vb is None:
                continue
            _, pa, pb, more_a, more_b = _paired(va, vb)
            used.append(seed)
            rates_a.append(pa)
            rates_b.append(pb)
            only_a += more_a
            only_b += more_b
        if not used:
            lines.append(f"| {bench} | none yet | | | | | | | | pending |")
            continue

        def pct(xs: list[float]) -> str:
            return ", ".join(f"{100 * x:.1f}%" for x in xs)

        spread = (
            f"{100 * (max(rates_a) - min(rates_a)):.1f} / "
            f"{100 * (max(rates_b) - min(rates_b)):.1f} pts"
            if len(used) > 1
            else "one seed"
        )
        lines.append(
            f"| {bench} | {', '.join(map(str, used))} | {pct(rates_a)} | {pct(rates_b)} "
            f"| {100 * sum(rates_a) / len(used):.1f}% | {100 * sum(rates_b) / len(used):.1f}% "
            f"| {spread} "
            f"| {only_a} | {only_b} | {mcnemar_p(only_a, only_b):.2f} |"
        )
    return "\n".join(lines)


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run", type=Path, nargs="?", help="run directory")
    ap.add_argument(
        "--rows",
        nargs="+",
        default=None,
        help="evaluation names in table order (default: every directory under eval/)",
    )
    ap.add_argument("--pair", nargs=2, action="append", default=[], metavar=("A", "B"))
    ap.add_argument("--training", action="store_true", help="also print the cost table")
    ap.add_argument(
        "--seeds", nargs=2, metavar=("A", "B"), help="A vs B over every seed evaluated for both"
    )
    ap.add_argument("--no-results", action="store_true", help="leave out the pass@1 table")
    ap.add_argument(
        "--benches",
        nargs="+",
        choices=BENCHES,
        default=list(BENCHES),
        help="benchmarks of the --pair, --seeds and --training tables (default: both)",
    )
    ap.add_argument(
        "--outcomes",
        choices=BENCHES,
        help="also print how each row's step-0 programs ended on this benchmark",
    )
    ap.add_argument(
        "--refine-effect",
        action="store_true",
        help="also print what the HumanEval refinement steps did to the programs they refined",
    )
    ap.add_argument(
        "--data",
        nargs="+",
        type=Path,
        metavar="RUN",
        help="also print the data stage of these run directories (attempts, verified teacher "
        "solutions and refinements, teacher tokens, training rows)",
    )
    ap.add_argument(
        "--same-tasks",
        action="store_true",
        help="with --data: count only the tasks every one of those runs attempted",
    )
    ap.add_argument(
        "--update",
        type=Path,
        metavar="MARKDOWN",
        help="rewrite every '<!-- results_table ARGS -->' ... '<!-- /results_table -->' block "
        "of this file with the tables those ARGS print",
    )
    return ap


def render(args: argparse.Namespace) -> str:
    if args.run is None:
        if args.data:
            return data_table(args.data, args.same_tasks)
        raise SystemExit("results_table: give a run directory")
    rows = args.rows or sorted(p.name for p in (args.run / "eval").iterdir() if p.is_dir())
    parts = [] if args.no_results else [results_table(args.run, rows)]
    if args.pair:
        parts.append(pair_table(args.run, [tuple(p) for p in args.pair], tuple(args.benches)))
    if args.seeds:
        parts.append(seed_table(args.run, *args.seeds, tuple(args.benches)))
    if args.outcomes:
        parts.append(outcome_table(args.run, rows, args.outcomes))
    if args.refine_effect:
        parts.append(refine_effect_table(args.run, rows))
    if args.training:
        rows_trained = [r for r in rows if r != "base"]
        parts.append(training_table(args.run, rows_trained, tuple(args.benches)))
    if args.data:
        parts.append(data_table(args.data, args.same_tasks))
    return "\n\n".join(parts)


_BLOCK = re.compile(
    r"(<!-- results_table (?P<args>[^\n]*?) -->\n)(?P<body>.*?)(<!-- /results_table -->)", re.S
)


def update(markdown: Path) -> int:
    """Regenerate the marked blocks in place; returns how many there were."""
    text = markdown.read_text(encoding="utf-8")

    def fill(m: re.Match) -> str:
        args = _parser().parse_args(shlex.split(m["args"]))
        return f"{m[1]}{render(args)}\n{m[4]}"

    new, count = _BLOCK.subn(fill, text)
    markdown.write_text(new, encoding="utf-8")
    return count


def main() -> None:
    args = _parser().parse_args()
    if args.update:
        print(f"{args.update}: {update(args.update)} table block(s) regenerated")
        return
    print(render(args))


if __name__ == "__main__":
    main()
