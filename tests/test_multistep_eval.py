"""Multi-step evaluation with the real SmolLM2 student (llama.cpp): seen tests drive refinement,
hidden tests score, and both arms spend the same calls."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from persd.evaluate.multistep import evaluate_student
from persd.llm.student import StudentConfig, load_student
from persd.sandbox import Sandbox, SandboxConfig
from persd.tasks import load_humaneval

pytest.importorskip("llama_cpp")


@pytest.mark.slow  # ~20 s quiet, ~60 s on a busy machine
def test_refine_and_resample_spend_equal_calls(smollm2_gguf: Path, tmp_path: Path) -> None:
    tasks = load_humaneval()[:3]
    student = load_student(StudentConfig(model=str(smollm2_gguf), backend="llama_cpp"))
    try:
        with Sandbox(SandboxConfig(workers=4)) as sandbox:
            report = evaluate_student(
                student,
                tasks,
                sandbox,
                benchmark="humaneval",
                n=2,
                temperature=0.2,
                refine_steps=1,
                max_new_tokens=64,
                out_dir=tmp_path,
            )
    finally:
        student.close()
    base = report.steps[0]
    assert (base.arm, base.calls) == ("base", 6)
    failing_seen = round(6 * (1 - base.seen_pass_rate))
    refine = next(s for s in report.steps if s.arm == "refine")
    resample = next(s for s in report.steps if s.arm == "resample")
    # One call per sample that failed its seen tests, in each arm: an equal budget.
    assert refine.calls == resample.calls == failing_seen
    assert refine.calls_total == resample.calls_total == 6 + failing_seen
    assert (report.feedback_tests, report.score_tests) == ("seen", "hidden")
    rows = [
        json.loads(line) for line in (tmp_path / "samples_refine.jsonl").read_text().splitlines()
    ]
    assert len(rows) == 6
    histories = [[h["step"] for h in row["history"]] for row in rows]
    assert histories.count([0, 1]) == failing_seen  # refined samples keep both programs' raw
    assert histories.count([0]) == 6 - failing_seen
    assert json.loads((tmp_path / "report.json").read_text())["refine_steps"] == 1
    # Step 0's verdicts are kept beside the arms' final ones, one row per sample.
    base_rows = [
        json.loads(line) for line in (tmp_path / "samples_base.jsonl").read_text().splitlines()
    ]
    assert [h["step"] for r in base_rows for h in r["history"]] == [0] * 6
    assert sum(r["passed"] for r in base_rows) == round(6 * base.pass_at[1])
