"""Run configuration: defaults < YAML file < command-line flags; unknown keys are errors."""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from persd.errors import PersdError
from persd.llm.student import StudentConfig
from persd.llm.teacher_config import ServerConfig, TeacherConfig
from persd.pipeline.config import (
    AttemptConfig,
    DataConfig,
    EvalStageConfig,
    PoolConfig,
    TeachConfig,
    TrainStageConfig,
)
from persd.sandbox.config import SandboxConfig


def _offline_teacher() -> TeacherConfig:
    # The default teacher needs no key and no network: a llama.cpp server persd manages.
    return TeacherConfig(
        model="qwen2.5-coder-1.5b-instruct",
        api_key_env=None,
        # Two single-thread slots: 2x one slot here, while one slot with 2 threads collapses
        # ~10x whenever anything else runs (benchmarks/bench_teacher.py, docs/BENCHMARKS.md).
        server=ServerConfig(model="qwen2.5-coder-1.5b-instruct", slots=2),
    )


class RunConfig(BaseModel):
    """Everything a run can be told: one section per stage. Defaults run offline."""

    model_config = ConfigDict(extra="forbid")

    pool: PoolConfig = Field(default_factory=PoolConfig)
    student: StudentConfig = Field(
        default_factory=lambda: StudentConfig(model="qwen2.5-coder-0.5b-instruct")
    )
    attempt: AttemptConfig = Field(default_factory=AttemptConfig)
    teacher: TeacherConfig = Field(default_factory=_offline_teacher)
    teach: TeachConfig = Field(default_factory=TeachConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    train: TrainStageConfig = Field(default_factory=TrainStageConfig)
    evaluate: EvalStageConfig = Field(default_factory=EvalStageConfig)
    sandbox: SandboxConfig = Field(default_factory=SandboxConfig)


class ConfigError(PersdError):
    pass


def _known_keys(model: type[BaseModel], prefix: str = "") -> list[str]:
    keys = []
    for name, f in model.model_fields.items():
        keys.append(prefix + name)
        if isinstance(f.annotation, type) and issubclass(f.annotation, BaseModel):
            keys += _known_keys(f.annotation, prefix + name + ".")
    return keys


def _merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def _describe(source: str, e: ValidationError) -> str:
    known = _known_keys(RunConfig)
    lines = []
    for err in e.errors():
        key = ".".join(str(p) for p in err["loc"])
        if err["type"] == "extra_forbidden":
            close = difflib.get_close_matches(key, known, n=1)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            lines.append(f"{source}: unknown key '{key}'{hint}")
        else:
            lines.append(f"{source}: '{key}' {err['msg'].lower()}")
    return "\n".join(lines)


def load_config(path: Path | None, overrides: Mapping[str, Any] | None = None) -> RunConfig:
    """The run config from ``path`` (YAML, may be None) with ``overrides`` applied on top."""
    data: Any = {}
    if path is not None:
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except OSError as e:
            raise ConfigError(f"{path}: cannot read ({e.strerror})") from None
        except yaml.YAMLError as e:
            raise ConfigError(f"{path}: not valid YAML ({e})".replace("\n", " ")) from None
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: must be a mapping of keys to values")
    try:
        return RunConfig.model_validate(_merge(data, overrides or {}))
    except ValidationError as e:
        raise ConfigError(_describe(str(path or "flags"), e)) from None
