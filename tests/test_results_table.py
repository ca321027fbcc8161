"""experiments/results_table.py: tables from report files, and the paired test behind them."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

_spec = importlib.util.spec_from_file_location(
    "results_table", Path(__file__).parents[1] / "experiments" / "results_table.py"
)
rt = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(rt)


def test_mcnemar_matches_the_binomial_test_by_hand():
    # 10 discordant pairs split 8:2 -> P(X<=2 | n=10, 1/2) = 56/1024, two-sided 0.109375
    assert rt.mcnemar_p(8, 2) == pytest.approx(112 / 1024)
    assert rt.mcnemar_p(2, 8) == rt.mcnemar_p(8, 2)
    assert rt.mcnemar_p(5, 5) == 1.0
    assert rt.mcnemar_p(0, 0) == 1.0
    assert rt.mcnemar_p(0, 6) == pytest.approx(2 / 64)


def test_holm_adjusts_by_rank_and_keeps_the_order():
    # sorted 0.01, 0.02, 0.04, 0.30 -> x4, x3, x2, x1 = 0.04, 0.06, 0.08, 0.30
    assert rt.holm([0.04, 0.30, 0.01, 0.02]) == pytest.approx([0.08, 0.30, 0.04, 0.06])
    # monotone: a larger raw p never gets a smaller adjusted one; capped at 1
    # 0.01 x 2 = 0.02, then 0.012 x 1 = 0.012 is raised to 0.02
    assert rt.holm([0.012, 0.01]) == pytest.approx([0.02, 0.02])
    assert rt.holm([0.02, 0.011, 0.9]) == pytest.approx([0.04, 0.033, 0.9])
    assert rt.holm([0.6, 0.7]) == [1.0, 1.0]
    assert rt.holm([]) == []


def _eval(run: Path, row: str, bench: str, verdicts: list[bool], refine: float | None = None):
    out = run / "eval" / row / bench
    out.mkdir(parents=True)
    steps = [{"step": 0, "arm": "base", "pass_at": {"1": sum(verdicts) / len(verdicts)}}]
    if refine is not None:
        steps += [
            {"step": 2, "arm": "refine", "pass_at": {"1": refine}},
            {"step": 2, "arm": "resample", "pass_at": {"1": refine / 2}},
        ]
    report = {"refine_steps": 2 if refine is not None else 0, "steps": steps}
    (out / "report.json").write_text(json.dumps(report))
    rows = [{"task_id": f"T/{i}", "index": 0, "passed": v} for i, v in enumerate(verdicts)]
    (out / "samples_base.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_tables_read_reports_rows_and_paired_verdicts(tmp_path: Path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "persd.jsonl").write_text("{}\n{}\n{}\n")
    _eval(tmp_path, "base", "mbpp-test", [True, False, False, False])
    _eval(tmp_path, "persd", "mbpp-test", [True, True, True, False])
    _eval(tmp_path, "persd-s43", "humaneval", [False, True], refine=0.5)
    table = rt.results_table(tmp_path, ["base", "persd", "persd-s43"])
    assert "| base | 0 | 25.0% | pending | pending | pending |" in table
    assert "| persd | 3 | 75.0% | pending |" in table
    assert "| persd-s43 | 3 | pending | 50.0% | 50.0% | 25.0% |" in table
    pairs = rt.pair_table(tmp_path, [("persd", "base")])
    assert "| persd | base | mbpp-test (4) | 75.0% | 25.0% | 2 | 0 | 0.50 | 0.50 |" in pairs
    assert "| persd | base | humaneval | | | | | pending | |" in pairs
    only_mbpp = rt.pair_table(tmp_path, [("persd", "base")], ("mbpp-test",))
    assert "humaneval" not in only_mbpp and "| 0.50 | 0.50 |" in only_mbpp


def test_pair_table_adjusts_over_the_whole_table(tmp_path: Path):
    _eval(tmp_path, "a", "mbpp-test", [True] * 6 + [False] * 4)
    _eval(tmp_path, "b", "mbpp-test", [False] * 10)
    _eval(tmp_path, "c", "mbpp-test", [True] * 3 + [False] * 7)
    table = rt.pair_table(tmp_path, [("a", "b"), ("c", "b")])
    # a vs b: 6 vs 0 -> p = 2/64 = 0.03125; c vs b: 3 vs 0 -> 0.25; Holm: 0.0625 and 0.25
    assert "| 6 | 0 | 0.03 | 0.06 |" in table
    assert "| 3 | 0 | 0.25 | 0.25 |" in table


def test_pair_table_pairs_a_row_of_another_run(tmp_path: Path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _eval(tmp_path / "one", "a", "mbpp-test", [True] * 6 + [False] * 4)
    _eval(tmp_path / "two", "b", "mbpp-test", [True] + [False] * 9)
    table = rt.pair_table(tmp_path / "one", [("a", "two:b")], ("mbpp-test",))
    assert "| a | two:b | mbpp-test (10) | 60.0% | 10.0% | 5 | 0 | 0.06 |" in table
    assert "pending" in rt.pair_table(tmp_path / "one", [("a", "one:b")], ("mbpp-test",))


def test_outcome_table_counts_how_programs_ended(tmp_path: Path):
    out = tmp_path / "eval" / "persd" / "humaneval"
    statuses = ["passed", "failed", "failed", "error", "syntax_error", "timeout", None]
    completions = [
        "def f(x):\n    return x\n",
        "class A:\n    def f(self):\n        pass\n",
        "async def g():\n    pass\n",
        '"""\nWrite a function to add.\n"""\n',  # the prompt echoed, no function
        "def f(:\n",
        "def f():\n    while True: pass\n",
        "",
    ]
    _jsonl(
        out / "samples_base.jsonl",
        [
            {"task_id": f"T/{i}", "index": 0, "status": s, "completion": code}
            for i, (s, code) in enumerate(zip(statuses, completions, strict=True))
        ],
    )
    table = rt.outcome_table(tmp_path, ["persd", "stand"], "humaneval")
    # no `def`: the docstring-only reply and the empty one; an indented method counts as a def
    assert "| persd | 1 | 2 | 1 | 1 | 1 | 1 | 2 |" in table
    assert "| stand |" not in table  # not evaluated: no row


def _jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_teacher_tokens_follow_what_each_variant_needed(tmp_path: Path):
    _jsonl(
        tmp_path / "solutions.jsonl",
        [
            {"task_id": "T/0", "tokens_in": 10, "tokens_out": 5},  # the student passed T/0
            {"task_id": "T/1", "tokens_in": 20, "tokens_out": 7},
        ],
    )
    _jsonl(tmp_path / "refinements.jsonl", [{"task_id": "T/1", "tokens_in": 40, "tokens_out": 3}])
    tokens = rt.teacher_tokens(tmp_path)
    assert tokens["stand"] == tokens["stand_matched"] == 42
    assert tokens["inpd"] == 27
    assert tokens["persd"] == tokens["persd_combined"] == 27 + 43
    summary = {"examples": 3, "steps": 1, "final_loss": 0.5, "wall_s": 1234.4}
    _jsonl(tmp_path / "models" / "persd" / "train_summary.json", [summary])
    _jsonl(tmp_path / "models-seed43" / "stand" / "train_summary.json", [summary])
    _jsonl(tmp_path / "models-released" / "released_inpd" / "train_summary.json", [summary])
    # evaluation wall: generation + scoring where recorded; an old report without it says so
    _jsonl(
        tmp_path / "eval" / "persd" / "humaneval" / "report.json",
        [{"steps": [], "generate_s": 100.4, "score_s": 20.2}],
    )
    _jsonl(
        tmp_path / "eval" / "persd" / "mbpp-test" / "report.json",
        [{"steps": [], "generate_s": None, "score_s": 3.0}],
    )
    table = rt.training_table(tmp_path, ["persd", "stand-s43", "released_inpd", "inpd"])
    assert "| persd | 3 | 1 | 0.500 | 1,234 s | 70 | 121 s | not recorded |" in table
    assert "| stand-s43 | 3 | 1 | 0.500 | 1,234 s | 42 | pending | pending |" in table
    assert "| released_inpd | 3 | 1 | 0.500 | 1,234 s | released (not ours) |" in table
    assert "| inpd |" not in table  # not trained: no row rather than a made-up one
    only_he = rt.training_table(tmp_path, ["persd"], ("humaneval",))
    assert "MBPP" not in only_he and only_he.endswith("| 70 | 121 s |")


def test_seed_table_pools_discordant_pairs_over_seeds(tmp_path: Path):
    _eval(tmp_path, "persd", "humaneval", [True, True, False, False])
    _eval(tmp_path, "stand", "humaneval", [False, False, True, False])
    _eval(tmp_path, "persd-s43", "humaneval", [True, False, False, False])
    _eval(tmp_path, "stand-s43", "humaneval", [True, False, True, True])
    _eval(tmp_path, "persd-s44", "humaneval", [True, True, True, True])  # no stand-s44: left out
    table = rt.seed_table(tmp_path, "persd", "stand")
    # seed 42: 2 vs 1 discordant; seed 43: 0 vs 2 -> pooled 2 vs 3
    assert (
        "| humaneval | 42, 43 | 50.0%, 25.0% | 25.0%, 75.0% | 37.5% | 50.0% | 25.0 / 50.0 pts "
        "| 2 | 3 | 1.00 |" in table
    )
    assert "| mbpp-test | none yet |" in table
    assert "mbpp-test" not in rt.seed_table(tmp_path, "persd", "stand", ("humaneval",))
    _eval(tmp_path, "persd", "mbpp-test", [True])
    _eval(tmp_path, "stand", "mbpp-test", [False])
    assert "| 100.0% | 0.0% | one seed | 1 | 0 | 1.00 |" in rt.seed_table(
        tmp_path, "persd", "stand"
    )


def test_update_rewrites_only_the_marked_blocks(tmp_path: Path):
    run = tmp_path / "run"
    _eval(run, "base", "mbpp-test", [True, False])
    md = tmp_path / "RESULTS.md"
    md.write_text(
        "intro\n"
        f"<!-- results_table {run} --rows base -->\nstale table\n<!-- /results_table -->\n"
        "middle\n"
        f"<!-- results_table {run} --rows base --no-results --pair base base -->\n"
        "<!-- /results_table -->\nend\n"
    )
    assert rt.update(md) == 2
    text = md.read_text()
    assert "stale" not in text and text.startswith("intro\n") and text.endswith("end\n")
    assert "| base | 0 | 50.0% | pending |" in text
    assert "| base | base | mbpp-test (2) | 50.0% | 50.0% | 0 | 0 | 1.00 | 1.00 |" in text
    assert text.count("| row |") == 1  # --no-results left the second block's pass@1 table out
    assert rt.update(md) == 2 and md.read_text() == text  # idempotent


def test_refine_effect_counts_only_the_programs_that_were_refined(tmp_path: Path):
    out = tmp_path / "eval" / "persd" / "humaneval"

    def rec(i: int, code: str, seen: str, passed: bool) -> dict:
        return {
            "task_id": f"T/{i}",
            "index": 0,
            "completion": code,
            "seen_status": seen,
            "passed": passed,
        }

    _jsonl(
        out / "samples_base.jsonl",
        [
            rec(0, "a", "passed", True),  # passed its seen tests: never refined
            rec(1, "b", "failed", False),  # rewritten, now passes seen and hidden
            rec(2, "c", "failed", False),  # rewritten, passes seen only
            rec(3, "d", "error", False),  # left as it was
        ],
    )
    _jsonl(
        out / "samples_refine.jsonl",
        [
            rec(0, "a2", "passed", True),
            rec(1, "b2", "passed", True),
            rec(2, "c2", "passed", False),
            rec(3, "d", "error", False),
        ],
    )
    table = rt.refine_effect_table(tmp_path, ["persd", "stand"])
    assert "| persd | 3 | 2 | 2 | 1 |" in table
    assert "| stand |" not in table  # no refinement run: no row


def test_wilson_interval_matches_the_formula_and_stays_in_range():
    lo, hi = rt.wilson(39, 375)  # pair 1's refinements: 10.4%, about 7.7-13.9%
    assert lo == pytest.approx(0.0770, abs=5e-4) and hi == pytest.approx(0.1389, abs=5e-4)
    assert rt.wilson(0, 10)[0] == 0.0 and rt.wilson(10, 10)[1] == 1.0
    assert rt.wilson(0, 0) == (0.0, 1.0)


def _stage_run(run: Path, student: str, passed: dict[str, bool], fixed: dict[str, bool]):
    """A run's stage files: one attempt per task; a solution per task (verified when the task
    id ends in 0 or 2); a refinement for each failed attempt, verified as ``fixed`` says."""
    tasks = sorted(passed)
    _jsonl(run / "attempts.jsonl", [{"task_id": t, "model_id": student} for t in tasks])
    status = {True: "passed", False: "failed"}
    _jsonl(
        run / "executions.jsonl",
        [{"task_id": t, "feedback": {"status": status[passed[t]]}} for t in tasks],
    )
    _jsonl(
        run / "solutions.jsonl",
        [
            {"id": f"{t}#s0", "task_id": t, "model_id": "teach", "tokens_in": 10, "tokens_out": 1}
            for t in tasks
        ],
    )
    failed = [t for t in tasks if not passed[t]]
    _jsonl(
        run / "refinements.jsonl",
        [{"id": f"{t}#f0", "task_id": t, "tokens_in": 100, "tokens_out": 2} for t in failed],
    )
    verified = [f"{t}#s0" for t in tasks if t[-1] in "02"] + [
        f"{t}#f0" for t in failed if fixed.get(t)
    ]
    others = [f"{t}#s0" for t in tasks if t[-1] not in "02"]
    _jsonl(
        run / "verifications.jsonl",
        [{"id": i, "feedback": {"status": "passed"}} for i in verified]
        + [{"id": i, "feedback": {"status": "failed"}} for i in others],
    )
    _jsonl(run / "data" / "stand.jsonl", [{"task_id": i[:-3]} for i in verified if "#s0" in i])
    _jsonl(
        run / "data" / "persd_combined.jsonl",
        [{"task_id": t} for t in failed if fixed.get(t) for _ in range(2)],
    )


def test_data_table_counts_stage_records_and_compares_on_shared_tasks(tmp_path: Path):
    a, b = tmp_path / "a", tmp_path / "b"
    _stage_run(a, "small", {"T/0": False, "T/1": False, "T/2": True, "T/3": False}, {"T/1": True})
    _stage_run(b, "big", {"T/0": True, "T/1": False, "T/9": False}, {"T/1": True, "T/9": True})
    table = rt.data_table([a, b])
    # a: 1 of 4 attempts pass; solutions T/0 and T/2 verified; 1 of 3 refinements verified;
    # StanD tokens 4 x 11, PERsD tokens the 3 failed tasks' solutions + 3 refinements
    assert (
        "| small ← teach | 4 | 1 / 4 (25.0%, 5–70%) | 2 / 4 (50.0%, 15–85%) "
        "| 1 / 3 (33.3%, 6–79%) | 44 | 339 | 2 | 2 |" in table
    )
    assert "| big ← teach | 3 | 1 / 3 " in table
    shared = rt.data_table([a, b], same_tasks=True)  # T/0 and T/1 only
    assert "| small ← teach | 2 | 0 / 2 (0.0%, 0–66%) | 1 / 2 (50.0%, 9–91%) | 1 / 2 " in shared
    assert "| big ← teach | 2 | 1 / 2 (50.0%, 9–91%) | 1 / 2 (50.0%, 9–91%) | 1 / 1 " in shared
