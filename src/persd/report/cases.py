"""Cases shown side by side: a failed attempt, its feedback and the teacher's refinement."""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence
from itertools import zip_longest

from persd.pipeline.stages.summary import failure_kind
from persd.prompts import render_feedback
from persd.records import Attempt, Execution, TeacherCall
from persd.report.data import Case, DiffRow


def side_by_side(old: str, new: str) -> list[DiffRow]:
    """Line-aligned rows of two programs: changed lines paired, the rest padded."""
    a, b = old.splitlines(), new.splitlines()
    rows: list[DiffRow] = []
    matcher = difflib.SequenceMatcher(None, a, b, autojunk=False)
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        left = list(range(i1, i2))
        right = list(range(j1, j2))
        for i, j in zip_longest(left, right):
            kind = tag if tag != "replace" else _replace_kind(i, j)
            rows.append(
                DiffRow(
                    kind=kind,  # type: ignore[arg-type]
                    old_no=None if i is None else i + 1,
                    old="" if i is None else a[i],
                    new_no=None if j is None else j + 1,
                    new="" if j is None else b[j],
                )
            )
    return rows


def _replace_kind(i: int | None, j: int | None) -> str:
    # A replaced block longer on one side reads as deletions or insertions past the pairs.
    if i is None:
        return "insert"
    if j is None:
        return "delete"
    return "replace"


def pick_cases(
    refinements: Sequence[TeacherCall],
    attempts: Mapping[str, Attempt],
    executions: Mapping[str, Execution],
    verifications: Mapping[str, Execution],
    *,
    n: int,
    feedback_chars: int,
) -> list[Case]:
    """Up to ``n`` cases in task order: accepted refinements, and one the verifier rejected
    (what a filter-free dataset would have trained on)."""
    cases = [
        _case(r, attempts[r.attempt_id], executions, verifications, feedback_chars)
        for r in sorted(refinements, key=lambda r: r.id)
        if r.attempt_id in attempts
    ]
    accepted = [c for c in cases if c.accepted]
    rejected = [c for c in cases if not c.accepted]
    room_for_rejected = min(len(rejected), 1 if n >= 2 else 0)
    chosen = accepted[: max(0, n - room_for_rejected)]
    chosen += rejected[: max(0, n - len(chosen))]
    return sorted(chosen, key=lambda c: (not c.accepted, c.refinement_id))


def _case(
    refinement: TeacherCall,
    attempt: Attempt,
    executions: Mapping[str, Execution],
    verifications: Mapping[str, Execution],
    feedback_chars: int,
) -> Case:
    execution, verification = executions.get(attempt.id), verifications.get(refinement.id)
    if execution is None:
        feedback = "(no execution of this attempt is recorded)"
    else:  # the same rendering, at the same length, as the teacher's prompt got
        feedback = render_feedback(execution.feedback, max_chars=feedback_chars)
    if verification is None:
        verdict = "not verified"
    else:
        verdict = "passed" if verification.feedback.passed else failure_kind(verification)
    return Case(
        task_id=refinement.task_id,
        attempt_id=attempt.id,
        refinement_id=refinement.id,
        prompt=attempt.prompt,
        feedback=feedback,
        verdict=verdict,
        diff=side_by_side(attempt.code, refinement.code),
    )
