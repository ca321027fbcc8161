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
