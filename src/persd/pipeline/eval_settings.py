"""What a model is evaluated with: one function for ``persd run`` and ``persd eval`` alike.

A trained model must be asked what it was trained on. The run renders its training rows from
its config's ``prompt:`` section and scores its models with its ``student:`` and
``evaluate:`` sections; ``persd eval --run DIR`` reads the same sections from the snapshot the
run left in ``DIR/config.yaml`` and resolves them through ``eval_settings`` below, the function
the run's own evaluation calls, so the two cannot drift apart.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict

from persd.config import RunConfig
from persd.errors import PersdError
from persd.llm.base import adapter_label
from persd.llm.student import StudentConfig, trained_student
from persd.pipeline.config import EvalStageConfig
from persd.pipeline.rundir import RunPaths, finished, read_gate
from persd.prompts import PromptConfig
from persd.sandbox.config import SandboxConfig


class EvalSettings(BaseModel):
    """Everything that decides what a model is asked and how its answers are scored."""

    model_config = ConfigDict(frozen=True)

    student: StudentConfig
    evaluate: EvalStageConfig
    prompt: PromptConfig
    sandbox: SandboxConfig


def eval_settings(config: RunConfig, model: Path | None, *, gate: bool = False) -> EvalSettings:
    """The settings a run scores ``model`` with (None: the base student). The gate compares
    step 0 only, so it never refines. One backend scores base and trained models alike."""
    cfg = config.evaluate
    if gate:
        cfg = cfg.model_copy(update={"refine_steps": 0})
    student = trained_student(config.student, model) if model else config.student
    student = student.model_copy(update={"backend": cfg.backend or student.backend})
    return EvalSettings(student=student, evaluate=cfg, prompt=config.prompt, sandbox=config.sandbox)


class RunError(PersdError):
    pass


def run_model(run_dir: Path, variant: str | None) -> Path | None:
    """The model of a run that ``persd eval --run`` scores: ``variant`` by its evaluation name
    (``self``, ``self@epoch1`` from the gate's rows, ``base``), else the gate's kept model."""
    gate = read_gate(run_dir)
    if variant is None:
        if gate is None:
            raise RunError(f"--run {run_dir}: no gate.json; name the model with --variant")
        return _here(run_dir, Path(gate.kept_path)) if gate.kept_path else None
    if variant == "base":
        return None
    for row in gate.rows if gate else []:
        if row.candidate.label == variant:
            return _here(run_dir, Path(row.candidate.path))
    out = RunPaths(run_dir).model(variant)
    if finished(out):
        return out / "final"
    raise RunError(
        f"--variant {variant}: {run_dir} has no finished model of that name (the gate's "
        "candidates, models/<variant>/final, or base)"
    )


def _here(run_dir: Path, model: Path) -> Path:
    """A model path the run recorded (relative to where it ran), found from here: as written,
    or the same place under ``run_dir`` (the run was started from another directory)."""
    if model.exists():
        return model
    if "models" in model.parts:  # the path below the run's models/, as records name it
        moved = RunPaths(run_dir).models / adapter_label(model)
        if moved.exists():
            return moved
    raise RunError(
        f"--run {run_dir}: the model {model} is not on this machine (weights are never "
        f"committed); `persd run <its config> --run-dir {run_dir}` trains it again"
    )
