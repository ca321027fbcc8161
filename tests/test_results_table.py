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
    assert "| persd | base | mbpp-test (4) | 75.0% | 25.0% | 2 | 0 | 0.50 |" in pairs
    assert "| persd | base | humaneval | | | | | pending |" in pairs
