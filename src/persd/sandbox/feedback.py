"""Feedback as prompt text: the one rendering used for teachers, training data and inference.

Templates live in ``feedback.yaml``; this module only chooses and fills them.
"""

from __future__ import annotations

from functools import cache
from importlib import resources

import yaml

from persd.records import Feedback, Outcome


@cache
def _templates() -> dict[str, str]:
    text = resources.files("persd.sandbox").joinpath("feedback.yaml").read_text()
    return yaml.safe_load(text)


def _outcome_text(o: Outcome, t: dict[str, str]) -> str:
    fields = {k: v if v is not None else "" for k, v in o.model_dump().items()}
    if o.exception:
        key = "raised" if o.call else "raised_no_call"
        text = t[key].format(**fields)
        if o.traceback:
            text += "\n" + t["traceback"].format(traceback=o.traceback.rstrip())
        return text
    if o.expected is not None:
        return t["failed_call"].format(**fields)
    if o.call and o.actual is not None:
        return t["failed_source_actual"].format(**fields)
    return t["failed_source"].format(**{**fields, "source": o.source or "an assertion"})


def _cut(text: str, max_chars: int) -> str:
    return text if len(text) <= max_chars else text[: max_chars - 15].rstrip() + "\n[...truncated]"


def render_feedback(fb: Feedback, *, max_chars: int = 2000, stdout_lines: int = 5) -> str:
    """What a model reads about one run: the status, the first failure, in the program's terms.

    Only the first failing test is spelled out (as in the paper); counts say how many more.
    """
    t = _templates()
    lines: list[str] = []
    status = fb.status
    if status == "passed":
        return t["passed"].format(total=fb.tests_total, test_set=fb.test_set)
    if status == "syntax_error":
        lines.append(t["syntax_error"].format(message=fb.message or ""))
    elif status == "error" and fb.exception:
        lines.append(t["error_loading"].format(
            exception=fb.exception, message=fb.message or "", detail=fb.detail or "loading"
        ))  # fmt: skip
        if fb.traceback:
            lines.append(t["traceback"].format(traceback=fb.traceback.rstrip()))
    elif status in ("failed", "error", "memory") and fb.first_failure is not None:
        lines.append(
            t["header"].format(passed=fb.tests_passed, total=fb.tests_total, test_set=fb.test_set)
        )
        lines.append(_outcome_text(fb.first_failure, t))
    elif status in t:
        lines.append(t[status].format(detail=fb.detail or "unknown"))
    if fb.stdout_tail.strip() and status not in ("infra_error",):
        tail = "\n".join(fb.stdout_tail.rstrip().splitlines()[-stdout_lines:])
        lines.append(t["stdout"].format(stdout=tail))
    return _cut("\n".join(lines), max_chars)
