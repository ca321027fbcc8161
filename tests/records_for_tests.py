"""Small hand-made records shared by the pipeline tests."""

from __future__ import annotations

from persd.records import Feedback, Outcome, TestSet


def feedback(passed: bool, test_set: TestSet = "seen") -> Feedback:
    """A one-test verdict: passed, or failed with input / expected / actual."""
    if passed:
        return Feedback(
            status="passed",
            test_set=test_set,
            tests_total=1,
            outcomes=(Outcome(index=0, passed=True),),
        )
    return Feedback(
        status="failed",
        test_set=test_set,
        tests_total=1,
        outcomes=(Outcome(index=0, passed=False, call="f(1)", expected="2", actual="1"),),
    )
