"""Stage processes: ticks, notes, results and errors cross the process boundary."""

from __future__ import annotations

import os

import pytest

from persd.errors import PersdError
from persd.pipeline.isolate import StageProcessError, run_isolated


def _work(n: int, *, tick, note) -> dict:
    for i in range(n):
        note(f"step {i + 1}")
        tick(1)
    return {"pid": os.getpid(), "n": n}


def _fails(*, tick, note) -> None:
    note("about to fail")
    raise PersdError("data/x.jsonl:3: missing field 'prompt'")


def test_ticks_notes_and_result_come_back_from_another_process():
    ticks: list[int] = []
    notes: list[str] = []
    out = run_isolated("work", _work, 3, on_tick=ticks.append, on_note=notes.append)
    assert out["n"] == 3 and out["pid"] != os.getpid()
    assert ticks == [1, 1, 1]
    assert notes == ["step 1", "step 2", "step 3"]


def test_a_persd_error_is_raised_again_with_its_message_and_notes_before_it_arrive():
    notes: list[str] = []
    with pytest.raises(StageProcessError, match=r"data/x.jsonl:3: missing field 'prompt'"):
        run_isolated("fails", _fails, on_note=notes.append)
    assert notes == ["about to fail"]


def _sleep_forever(pid_file: str, *, tick, note) -> None:
    import time
    from pathlib import Path

    Path(pid_file).write_text(str(os.getpid()))
    time.sleep(600)


def test_the_stage_process_ends_when_persd_is_killed(tmp_path):
    """A SIGKILLed parent runs no cleanup: the stage process must notice and exit by itself
    rather than train on alone."""
    import signal
    import subprocess
    import sys
    import time

    pid_file = tmp_path / "child.pid"
    script = (
        "import sys; sys.path.insert(0, sys.argv[2])\n"
        "from test_isolate import _sleep_forever\n"
        "from persd.pipeline.isolate import run_isolated\n"
        "run_isolated('sleep', _sleep_forever, sys.argv[1])\n"
    )
    here = os.path.dirname(__file__)
    parent = subprocess.Popen([sys.executable, "-c", script, str(pid_file), here])
    deadline = time.monotonic() + 60
    while not pid_file.exists() or not pid_file.read_text():
        assert parent.poll() is None and time.monotonic() < deadline
        time.sleep(0.1)
    child = int(pid_file.read_text())
    os.kill(parent.pid, signal.SIGKILL)
    parent.wait()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    os.kill(child, signal.SIGKILL)
    pytest.fail("the stage process outlived its killed parent")


def _loads_llama_cpp(*, tick, note) -> bool:
    import llama_cpp  # noqa: F401

    return True


def test_a_stage_log_does_not_end_with_llama_cpps_dev_null_warning(tmp_path):
    """llama-cpp-python keeps two /dev/null files open until exit; each stage log that loaded
    it ended with a ResourceWarning about them (issue 34, item 7)."""
    pytest.importorskip("llama_cpp")
    log = tmp_path / "stage.log"
    assert run_isolated("llama", _loads_llama_cpp, log_path=str(log))
    assert "ResourceWarning" not in log.read_text()
