"""Feedback as prompt text: the one rendering used for teachers, training data and inference.

Templates live in ``templates/feedback.yaml``; this module only chooses and fills them. How
much of it a prompt shows is ``PromptConfig.feedback_max_chars``, passed by every caller: no
second default here.
"""

from __future__ import annotations

from persd.prompts.files import fill, shipped_yaml
from persd.records import Feedback, Outcome


def _templates() -> dict[str, str]:
    return shipped_yaml("feedback.yaml")


def _outcome_text(o: Outcome, t: dict[str, str]) -> str:
    fields = {k: v if v is not None else "" for k, v in o.model_dump().items()}
    if o.exception:
        key = "raised" if o.call else "raised_no_call"
        text = fill(t[key], fields)
        if o.traceback:
            text += "\n" + fill(t["traceback"], {"traceback": o.traceback.rstrip()})
        return text
    if o.expected is not None:
        return fill(t["failed_call"], fields)
    if o.call and o.actual is not None:
        return fill(t["failed_source_actual"], fields)
    return fill(t["failed_source"], {**fields, "source": o.source or "an assertion"})


def _cut(text: str, max_chars: int) -> str:
    return text if len(text) <= max_chars else text[: max_chars - 15].rstrip() + "\n[...truncated]"


def render_feedback(fb: Feedback, *, max_chars: int, stdout_lines: int = 5) -> str:
    """What a model reads about one run: the status, the first failure, in the program's terms.

    Only the first failing test is spelled out (as in the paper); counts say how many more.
    """
    t = _templates()
    lines: list[str] = []
    status = fb.status
    if status == "passed":
        return fill(t["passed"], {"total": fb.tests_total, "test_set": fb.test_set})
    if status == "syntax_error":
        lines.append(fill(t["syntax_error"], {"message": fb.message or ""}))
    elif status == "error" and fb.exception:
        values = {"exception": fb.exception, "message": fb.message or ""}
        lines.append(fill(t["error_loading"], {**values, "detail": fb.detail or "loading"}))
        if fb.traceback:
            lines.append(fill(t["traceback"], {"traceback": fb.traceback.rstrip()}))
    elif status in ("failed", "error", "memory") and fb.first_failure is not None:
        counts = {"passed": fb.tests_passed, "total": fb.tests_total, "test_set": fb.test_set}
        lines.append(fill(t["header"], counts))
        lines.append(_outcome_text(fb.first_failure, t))
    elif status in t:
        lines.append(fill(t[status], {"detail": fb.detail or "unknown"}))
    if fb.stdout_tail.strip() and status not in ("infra_error",):
        tail = "\n".join(fb.stdout_tail.rstrip().splitlines()[-stdout_lines:])
        lines.append(fill(t["stdout"], {"stdout": tail}))
    return _cut("\n".join(lines), max_chars)
