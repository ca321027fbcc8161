"""The persd command: what users read, and what they must not see."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from persd.cli import app

runner = CliRunner()


def _persd(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    code = "from persd.cli import main; main()"
    return subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, cwd=cwd, timeout=300
    )


def test_bad_samples_file_is_one_line_without_traceback(tmp_path: Path) -> None:
    bad = tmp_path / "samples.jsonl"
    bad.write_text('{"task_id": "HumanEval/0"}\n')
    result = _persd("score", str(bad))
    assert result.returncode == 1
    assert f"error: {bad}:1: 'completion' is missing" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


def test_unknown_config_key_suggests_the_right_one(tmp_path: Path) -> None:
    cfg = tmp_path / "persd.yaml"
    cfg.write_text("sandbox:\n  wall_limit: 2\n")
    samples = tmp_path / "s.jsonl"
    samples.write_text(json.dumps({"task_id": "HumanEval/0", "completion": ""}) + "\n")
    result = _persd("score", str(samples), "--config", str(cfg))
    assert result.returncode == 1
    assert "unknown key 'sandbox.wall_limit'; did you mean 'sandbox.wall_limit_s'?" in result.stderr
    assert "Traceback" not in result.stderr


def test_score_prints_pass_at_k_and_writes_results(tmp_path: Path) -> None:
    samples = tmp_path / "s.jsonl"
    rows = [{"task_id": "HumanEval/0", "completion": "    return False\n"}] * 2
    samples.write_text("".join(json.dumps(r) + "\n" for r in rows))
    result = runner.invoke(app, ["score", str(samples), "--k", "1,2", "--workers", "2"])
    assert result.exit_code == 0, result.output
    assert "pass@1" in result.output and "pass@2" in result.output
    assert (tmp_path / "s.jsonl_results.jsonl").exists()


def test_check_references_on_a_task_pool_passes_every_reference(tmp_path: Path) -> None:
    pool = tmp_path / "tasks.jsonl"
    task = {
        "id": "add",
        "instruction": "Add two numbers.",
        "entry_point": "add",
        "reference": "def add(a, b):\n    return a + b\n",
        "tests_hidden": ["assert add(2, 3) == 5", {"call": "add(1, 1)", "expected": "2"}],
    }
    pool.write_text(json.dumps(task) + "\n")
    result = runner.invoke(
        app, ["check-references", str(pool), "--out", str(tmp_path / "out"), "--workers", "1"]
    )
    assert result.exit_code == 0, result.output
    assert "100.00%" in result.output


def test_import_persd_loads_no_heavy_ml_library() -> None:
    code = (
        "import sys, persd, persd.sandbox, persd.tasks, persd.evaluate;"
        "print([m for m in ('torch', 'transformers', 'vllm', 'numpy') if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_an_unreachable_teacher_fails_in_seconds_naming_the_keys(tmp_path: Path) -> None:
    """Before any stage: no student work, no stage file, one line naming what to change."""
    import os
    import subprocess
    import sys
    import time

    cfg = tmp_path / "bad.yaml"
    cfg.write_text(
        "teacher:\n  model: t\n  base_url: http://127.0.0.1:9/v1\n  api_key_env: NOPE_KEY\n"
        "  server: null\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "NOPE_KEY"}

    def run() -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-c", "from persd.cli import main; main()", "run", str(cfg)]
            + ["--run-dir", str(tmp_path / "r")],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
        )

    start = time.monotonic()
    proc = run()
    took = time.monotonic() - start
    assert proc.returncode != 0
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert "teacher.base_url" in lines[0] and "NOPE_KEY" in lines[0]
    # ~2 s here; the bound only catches a return of minutes of student work before failing.
    assert took < 60, took
    assert not list((tmp_path / "r").glob("*.jsonl"))  # no stage ran
    # The user corrects the URL (here: to another address with no server) and runs again: the
    # run directory computed nothing, so it takes the corrected config instead of refusing it.
    cfg.write_text(cfg.read_text().replace("127.0.0.1:9/", "127.0.0.1:10/"))
    again = run()
    assert "different config" not in again.stderr, again.stderr
    assert "127.0.0.1:10" in again.stderr and "teacher.base_url" in again.stderr


def test_eval_refuses_an_unknown_mbpp_shape_in_one_line() -> None:
    result = _persd("eval", "-m", "smollm2-135m-instruct", "-b", "mbpp-test", "--mbpp-shape", "x")
    assert result.returncode == 1
    assert "error: --mbpp-shape x: expected 'docstring' or 'signature'" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


def test_stage_progress_without_a_terminal_is_lines_at_each_tenth() -> None:
    """``persd run | tee run.log`` draws no bar: the log still shows each stage moving."""
    import io

    from rich.console import Console

    from persd.cli.progress import RichProgress, progress_bars

    out = io.StringIO()
    console = Console(file=out, force_terminal=False, width=120)
    with progress_bars(console) as bars:
        shown = RichProgress(bars)
        shown.note("using 40 of the pool's tasks")
        advance = shown.start("solve+refine", 20)
        for _ in range(20):
            advance(1)
    assert "using 40 of the pool's tasks" in out.getvalue()
    lines = [ln for ln in out.getvalue().splitlines() if ln.startswith("solve+refine:")]
    assert lines[0] == "solve+refine: 0/20"
    assert [ln.split()[1] for ln in lines[1:]] == [f"{2 * k}/20" for k in range(1, 11)]
