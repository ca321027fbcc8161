"""``persd eval`` checks the paths it is given before it loads anything (issue 34, item 7)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

# Runs persd eval, then says which heavy libraries the failed command had imported.
_CODE = """
import sys
from persd.cli import main
try:
    main()
finally:
    heavy = ("torch", "transformers", "llama_cpp", "vllm")
    print("loaded:", [m for m in heavy if m in sys.modules], file=sys.stderr)
"""


def _eval(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", _CODE, "eval", *args], capture_output=True, text=True, timeout=300
    )


@pytest.mark.parametrize("kind", ["missing", "not an adapter"])
def test_a_wrong_adapter_path_is_one_line_before_any_model_loads(tmp_path: Path, kind: str):
    adapter = tmp_path / "models" / "final"
    if kind == "not an adapter":
        adapter.mkdir(parents=True)
    result = _eval("-m", "smollm2-135m-instruct", "--adapter", str(adapter), "--limit", "1")
    assert result.returncode == 1, result.stderr
    assert "loaded: []" in result.stderr  # nothing was loaded to find out
    errors = [ln for ln in result.stderr.splitlines() if ln.startswith("error:")]
    expected = "no such file or directory" if kind == "missing" else "not a LoRA adapter"
    assert errors == [errors[0]] and f"error: --adapter {adapter}: {expected}" in errors[0]
    assert "Traceback" not in result.stderr + result.stdout


def test_a_missing_model_file_is_one_line_before_anything_loads(tmp_path: Path):
    result = _eval("-m", str(tmp_path / "student.gguf"), "--limit", "1")
    assert result.returncode == 1, result.stderr
    assert f"error: --model {tmp_path / 'student.gguf'}: no such file or directory" in result.stderr
    assert "loaded: []" in result.stderr


def _finished_eval(root: Path, benchmark: str, verdicts: dict[str, bool]) -> Path:
    """An evaluation directory as ``persd eval --out`` leaves it: report and step-0 samples."""
    import json

    root.mkdir(parents=True)
    (root / "report.json").write_text(json.dumps({"benchmark": benchmark, "backend": "llama_cpp"}))
    rows = [{"task_id": t, "index": 0, "passed": ok} for t, ok in verdicts.items()]
    (root / "samples_base.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


def test_versus_is_checked_before_anything_loads(tmp_path: Path):
    base = _finished_eval(tmp_path / "base", "mbpp-test", {"MBPP/11": True})
    for args, expected in (
        (["--versus", str(base)], "--versus needs --out"),
        (["--versus", str(tmp_path), "--out", str(tmp_path / "o")], "no report.json"),
        (
            ["--versus", str(base), "--out", str(tmp_path / "o")],
            "an evaluation of mbpp-test, not of humaneval",
        ),
    ):
        result = _eval("-m", "smollm2-135m-instruct", *args)
        assert result.returncode == 1 and expected in result.stderr, result.stderr
        assert "loaded: []" in result.stderr


def test_versus_prints_the_paired_verdicts_and_the_floor(tmp_path: Path, capsys):
    """Tasks gained and lost against the other evaluation, McNemar's p, the floor scaled."""
    from persd.cli.eval import _print_versus
    from persd.evaluate.multistep import EvalReport

    ids = [f"MBPP/{i}" for i in range(10, 20)]
    base = _finished_eval(tmp_path / "base", "mbpp-test", {t: i < 4 for i, t in enumerate(ids)})
    model = _finished_eval(tmp_path / "m", "mbpp-test", {t: 2 <= i < 9 for i, t in enumerate(ids)})
    report = EvalReport.model_construct(backend="llama_cpp", benchmark="mbpp-test")
    _print_versus(report, model, base)
    printed = " ".join(capsys.readouterr().out.split())
    assert "7/10 vs 4/10, gained +5, lost −2" in printed and "p=0.45" in printed
    assert "noise floor:" in printed and "of 10 tasks" in printed
