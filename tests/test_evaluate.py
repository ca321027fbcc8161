"""Scoring: pass@k, the samples format, results next to the input, resuming."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from persd.errors import DataError
from persd.evaluate import mean_pass_at_k, pass_at_k, score, score_samples
from persd.records import ScoredSample, Task, Test
from persd.sandbox import SandboxConfig
from persd.tasks import load_humaneval

FAST = SandboxConfig(workers=2)


def _brute(n: int, c: int, k: int) -> float:
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


@pytest.mark.parametrize("n,c,k", [(10, 0, 1), (10, 3, 1), (10, 3, 5), (20, 19, 10), (5, 5, 5)])
def test_pass_at_k_matches_the_combinatorial_definition(n: int, c: int, k: int) -> None:
    assert pass_at_k(n, c, k) == pytest.approx(_brute(n, c, k))


def test_pass_at_k_rejects_impossible_counts() -> None:
    with pytest.raises(ValueError):
        pass_at_k(3, 4, 1)
    with pytest.raises(ValueError):
        pass_at_k(3, 1, 5)


def test_mean_pass_at_k_skips_k_larger_than_the_smallest_sample_count() -> None:
    result = mean_pass_at_k({"a": (2, 1), "b": (4, 0)}, ks=(1, 2, 3))
    assert set(result) == {1, 2}
    assert result[1] == pytest.approx((0.5 + 0.0) / 2)


def _write(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture(scope="module")
def two_tasks() -> tuple:
    tasks = load_humaneval()
    return tasks[0], tasks[2]


def test_score_writes_one_result_per_sample_in_input_order(tmp_path: Path, two_tasks) -> None:
    t0, t2 = two_tasks
    good0 = t0.reference[len(t0.prompt) :]
    rows = [
        {"task_id": t0.id, "completion": good0},
        {"task_id": t2.id, "completion": "    return 0.0\n"},
        {"task_id": t0.id, "completion": "    return True\n"},
        {"task_id": t2.id, "completion": t2.reference[len(t2.prompt) :]},
    ]
    samples = _write(tmp_path / "samples.jsonl", rows)
    report = score_samples(samples, [t0, t2], config=FAST, ks=(1, 2))
    assert report.results_path == tmp_path / "samples.jsonl_results.jsonl"
    results = [
        ScoredSample.model_validate_json(line)
        for line in report.results_path.read_text().splitlines()
    ]
    assert [r.index for r in results] == [0, 1, 2, 3]
    assert [r.passed for r in results] == [True, False, False, True]
    assert results[1].status == "failed" and results[1].feedback.test_set == "hidden"
    assert report.pass_at_k[1] == pytest.approx(0.5)
    assert report.pass_at_k[2] == pytest.approx(1.0)


def test_rerun_reuses_results_and_runs_nothing(tmp_path: Path, two_tasks) -> None:
    t0, _ = two_tasks
    samples = _write(tmp_path / "s.jsonl", [{"task_id": t0.id, "completion": "    return 1\n"}])
    first = score_samples(samples, [t0], config=FAST, ks=(1,), calibrate_limits=False)
    second = score_samples(samples, [t0], config=FAST, ks=(1,), calibrate_limits=False)
    assert first.reused == 0 and second.reused == 1
    assert first.statuses == second.statuses


def test_interrupted_run_resumes_from_partial_file(tmp_path: Path, two_tasks) -> None:
    t0, t2 = two_tasks
    rows = [{"task_id": t0.id, "completion": "    return 1\n"}] * 2
    samples = _write(tmp_path / "s.jsonl", rows)
    score_samples(samples, [t0, t2], config=FAST, ks=(1,), calibrate_limits=False)
    final = tmp_path / "s.jsonl_results.jsonl"
    partial = final.with_name(final.name + ".partial")
    first_line = final.read_text().splitlines()[0]
    final.unlink()
    partial.write_text(first_line + "\n" + '{"index": 1, "trunc')  # killed mid-write
    report = score_samples(samples, [t0, t2], config=FAST, ks=(1,), calibrate_limits=False)
    assert report.reused == 1 and report.samples == 2
    assert not partial.exists() and len(final.read_text().splitlines()) == 2


@pytest.mark.parametrize(
    "line,expected",
    [
        ("{not json", "s.jsonl:1: not valid JSON"),
        ('{"completion": "x"}', "s.jsonl:1: 'task_id' is missing"),
        ('{"task_id": "HumanEval/0", "completion": 3}', "s.jsonl:1: 'completion' must be a string"),
        ('{"task_id": "Nope/1", "completion": ""}', "s.jsonl:1: 'task_id' 'Nope/1' is not a known"),
    ],
)
def test_bad_sample_lines_name_file_line_and_field(
    tmp_path: Path, two_tasks, line: str, expected: str
) -> None:
    samples = tmp_path / "s.jsonl"
    samples.write_text(line + "\n")
    with pytest.raises(DataError) as e:
        score_samples(samples, list(two_tasks), config=FAST)
    assert expected in str(e.value)


def _task(task_id: str, body: str) -> Task:
    program = f"import time\n\ndef f():\n{body}"
    test = Test(kind="call", source="assert f() == 1", call="f()", expected="1")
    return Task(id=task_id, source="pool", instruction="", prompt="", entry_point="f",
                reference=program, tests_hidden=(test,))  # fmt: skip


SPIN = "    t = time.process_time()\n    while time.process_time() - t < {s}:\n        pass\n"


def test_lazy_calibration_gives_the_verdicts_of_calibrating_every_task(tmp_path, monkeypatch):
    """Only tasks with a sample at the 0.25 s floor are calibrated; the rest run at the floor."""
    slow = _task("slow", SPIN.format(s=0.4) + "    return 1\n")  # needs more than the floor
    quick = _task("quick", "    return 1\n")
    other = _task("other", "    return 1\n")
    rows = [
        {"task_id": "slow", "completion": slow.reference},  # reaches the floor, passes after
        {"task_id": "quick", "completion": quick.reference},
        {"task_id": "quick", "completion": "def f():\n    while True:\n        pass\n"},
        {"task_id": "other", "completion": other.reference},
    ]
    tasks = [slow, quick, other]
    lazy = score_samples(_write(tmp_path / "a.jsonl", rows), tasks, config=FAST, ks=(1,))
    monkeypatch.setattr(score, "lazy_possible", lambda config: False)
    eager = score_samples(_write(tmp_path / "b.jsonl", rows), tasks, config=FAST, ks=(1,))
    statuses = [
        [json.loads(line)["status"] for line in r.results_path.read_text().splitlines()]
        for r in (lazy, eager)
    ]
    assert statuses[0] == statuses[1] == ["passed", "passed", "timeout", "passed"]
    assert set(lazy.limits.per_task_cpu_s) == {"slow", "quick"}
    assert lazy.limits.per_task_cpu_s["slow"] > 0.25 + 1e-9
    assert lazy.limits.cpu_for("other") == 0.25
    assert "2 of 3 tasks calibrated because a sample reached the 0.25s floor" in (
        lazy.limits.describe()
    )
    assert set(eager.limits.per_task_cpu_s) == {"slow", "quick", "other"}
