"""``prompt:``, the one config section every prompt of a run is rendered from."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class PromptConfig(BaseModel):
    """``prompt:`` — the student's refinement prompt and how much execution feedback any prompt
    shows. The ONE section that PERsD-refine training rows, evaluation's self-refinement steps
    and the teacher's refinement requests all read: a student is asked at inference exactly
    what it was trained on (it was not: evaluation used another template setting and cut the
    feedback at 2000 characters where training rows cut it at 1200)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    refine_template: str = Field(
        "student_refine", description="the student's refinement template: a shipped name or a file"
    )
    onpolicy_template: str = Field(
        "teacher_onpolicy",
        description="persd_onpolicy: the teacher's privileged user turn (prompt, feedback, "
        "solution)",
    )
    feedback_max_chars: int = Field(
        1200, ge=100, description="rendered execution feedback is cut to this many characters"
    )
    mbpp_shape: Literal["docstring", "signature"] = Field(
        "docstring",
        description="MBPP task prompts (pool, validation, mbpp-test): 'docstring' = the "
        "instruction and example alone; 'signature' = HumanEval's shape, the gold def line "
        "with them as its docstring (docs/RESULTS.md: training on 'docstring' prompts makes "
        "the student leave some HumanEval bodies empty)",
    )
