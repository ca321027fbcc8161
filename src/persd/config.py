"""Run configuration: defaults < YAML file < command-line flags; unknown keys are errors."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from persd.configio import describe, load_yaml_mapping, merge
from persd.errors import PersdError
from persd.llm.registry import default_model
from persd.llm.student import StudentConfig
from persd.llm.teacher_config import ServerConfig, TeacherConfig
from persd.pipeline.config import (
    AttemptConfig,
    DataConfig,
    EvalStageConfig,
    GateConfig,
    PoolConfig,
    RoundsConfig,
    SynthConfig,
    TeachConfig,
    TrainStageConfig,
)
from persd.prompts import PromptConfig
from persd.records import TEACHER_FREE
from persd.sandbox.config import SandboxConfig


def _offline_teacher() -> TeacherConfig:
    # The default teacher needs no key and no network: a llama.cpp server persd manages.
    teacher = default_model("teacher")
    return TeacherConfig(
        model=teacher,
        api_key_env=None,
        # Two single-thread slots: 2x one slot here, while one slot with 2 threads collapses
        # ~10x whenever anything else runs (benchmarks/bench_teacher.py, docs/BENCHMARKS.md).
        server=ServerConfig(model=teacher, slots=2),
    )


class RunConfig(BaseModel):
    """Everything a run can be told: one section per stage. Defaults run offline."""

    model_config = ConfigDict(extra="forbid")

    pool: PoolConfig = Field(default_factory=PoolConfig)
    synth: SynthConfig = Field(default_factory=SynthConfig)
    student: StudentConfig = Field(
        default_factory=lambda: StudentConfig(model=default_model("student"))
    )
    attempt: AttemptConfig = Field(default_factory=AttemptConfig)
    teacher: TeacherConfig = Field(default_factory=_offline_teacher)
    teach: TeachConfig = Field(default_factory=TeachConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    prompt: PromptConfig = Field(default_factory=PromptConfig)
    train: TrainStageConfig = Field(default_factory=TrainStageConfig)
    gate: GateConfig = Field(default_factory=GateConfig)
    evaluate: EvalStageConfig = Field(default_factory=EvalStageConfig)
    rounds: RoundsConfig = Field(default_factory=RoundsConfig)
    sandbox: SandboxConfig = Field(default_factory=SandboxConfig)

    @model_validator(mode="before")
    @classmethod
    def _moved_prompt_keys(cls, data: Any) -> Any:
        """Configs written before the ``prompt:`` section kept its two keys elsewhere
        (``data.refine_template``, ``teach.feedback_max_chars``): read them there too, so
        recorded runs load and resume unchanged."""
        if not isinstance(data, dict):
            return data
        moved = {("data", "refine_template"): "refine_template"}
        moved[("teach", "feedback_max_chars")] = "feedback_max_chars"
        for (section, key), new in moved.items():
            old = data.get(section)
            if isinstance(old, dict) and key in old:
                data = {**data, section: {k: v for k, v in old.items() if k != key}}
                prompt = dict(data.get("prompt") or {})
                prompt.setdefault(new, old[key])
                data["prompt"] = prompt
        return data

    @model_validator(mode="after")
    def _rounds_train_a_variant(self) -> RunConfig:
        if self.rounds.count > 1:
            if not self.train.variants:
                raise ValueError("rounds.count > 1 needs a train.variants entry to carry over")
            if self.rounds.variant is not None and self.rounds.variant not in self.train.variants:
                raise ValueError(
                    f"rounds.variant {self.rounds.variant!r} is not in train.variants "
                    f"{list(self.train.variants)}"
                )
        return self

    @model_validator(mode="after")
    def _onpolicy_has_a_scorer(self) -> RunConfig:
        wants = "persd_onpolicy" in self.train.variants or self.rounds.variant == "persd_onpolicy"
        if wants and self.train.onpolicy.teacher is None and self.teacher.server is None:
            raise ValueError(
                f"train.variants has persd_onpolicy, whose teacher scores the student's own "
                f"tokens, and the teacher ({self.teacher.model}) is an API without local "
                "weights: set train.onpolicy.teacher to a local model that shares the student's "
                "tokenizer"
            )
        return self

    @property
    def variants(self) -> tuple[str, ...]:
        """Every variant round 0 builds: ``data.variants``, then the trained ones."""
        return tuple(dict.fromkeys(self.data.variants + self.train.variants))

    @property
    def teacher_needed(self) -> bool:
        """Whether any variant asks the teacher (``self`` rows need only the student)."""
        return any(v not in TEACHER_FREE for v in self.variants)

    @property
    def wants_self(self) -> bool:
        """Whether the student's own passing samples are checked on all tests (``self``)."""
        return any(v in ("self", "persd_combined_self") for v in self.variants)

    @property
    def round_variant(self) -> str:
        """The variant whose round-r model makes round r+1's attempts."""
        return self.rounds.variant or self.train.variants[0]


class ConfigError(PersdError):
    pass


def load_config(path: Path | None, overrides: Mapping[str, Any] | None = None) -> RunConfig:
    """The run config from ``path`` (YAML, may be None) with ``overrides`` applied on top."""
    data = load_yaml_mapping(path, ConfigError, "keys to values") if path is not None else {}
    try:
        return RunConfig.model_validate(merge(data, overrides or {}))
    except ValidationError as e:
        raise ConfigError(describe(str(path or "flags"), e, RunConfig)) from None
