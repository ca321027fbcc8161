"""Config sections of the distillation loop (mounted into ``persd.config.RunConfig``)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from persd.records import Variant
from persd.train.config import TrainConfig


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PoolConfig(_Section):
    """Which tasks the student trains on."""

    source: str = Field(
        "mbpp-validation+mbpp-train",
        description="'+'-joined benchmark names (never an evaluation split) or a JSONL path",
    )
    limit: int | None = Field(None, ge=1, description="use the first N tasks after shuffling")
    shuffle_seed: int = 0
    validation: int = Field(
        40,
        ge=0,
        description="tasks held out of the pool (seeded) to judge every trained model against "
        "the base: never attempted, never in a training set. 0 turns the gate off",
    )
    validation_seed: int = Field(1, description="which tasks are held out for validation")
    decontaminate: bool = True
    decontaminate_against: tuple[str, ...] = ("humaneval", "mbpp-test")
    ngram: int = Field(13, ge=4, description="word n-gram length for the overlap check")


class SynthConfig(_Section):
    """``synth:`` — tests for pool tasks that have a reference solution but no tests.

    The teacher proposes inputs; the REFERENCE computes each expected output in the sandbox.
    An input is kept only when the reference returns plain data for it, the same value on two
    separate runs, within ``max_cpu_s``. The first ``seen`` kept tests are the seen tests; all
    kept tests are hidden tests (as with MBPP, whose seen test is also hidden).
    """

    enabled: bool = Field(True, description="synthesise tests for reference-only pool tasks")
    inputs: int = Field(10, ge=1, le=50, description="inputs asked of the teacher per task")
    keep_max: int = Field(10, ge=1, description="kept tests per task, at most")
    min_tests: int = Field(3, ge=1, description="fewer surviving tests: the task is dropped")
    seen: int = Field(2, ge=1, description="kept tests the student's feedback may show")
    max_cpu_s: float = Field(0.5, gt=0, description="CPU seconds the reference may spend")
    template: str = "teacher_tests"
    temperature: float = Field(0.3, ge=0.0)
    max_new_tokens: int = Field(384, ge=16)
    seed: int = 0


class AttemptConfig(_Section):
    """The student's attempts (the paper: one attempt at temperature 0.3)."""

    n: int = Field(1, ge=1, description="attempts per task")
    temperature: float = Field(0.3, ge=0.0)
    top_p: float = Field(0.95, gt=0.0, le=1.0)
    max_new_tokens: int = Field(384, ge=16)
    seed: int = 0
    judge: Literal["seen", "all"] = Field(
        "seen",
        description="the tests that decide an attempt failed (and give the teacher its "
        "feedback): seen (what feedback may show at inference) or all (the paper: every "
        "unit test of the pool task; training tasks are never evaluation tasks)",
    )


class TeachConfig(_Section):
    """Teacher calls: direct solutions (StanD/InpD, and the paper template's reference) and
    refinements of failed attempts."""

    refine_template: str = Field(
        "teacher_refine_paper",
        description="teacher_refine_paper (two turns, reference as the teacher's own answer), "
        "teacher_refine_chat (one turn), or a template file",
    )
    solve_template: str = "teacher_solve"
    refinements_per_failure: int = Field(1, ge=1)
    temperature: float = Field(0.3, ge=0.0, description="the paper used 1.0 unseeded; we seed")
    top_p: float = Field(0.95, gt=0.0, le=1.0)
    max_new_tokens: int = Field(512, ge=16)
    seed: int = 0
    solve: bool = Field(True, description="ask for direct solutions (needed by stand/inpd)")


class DataConfig(_Section):
    """Which training sets to build, and how."""

    variants: tuple[Variant, ...] = (
        "stand",
        "inpd",
        "persd",
        "persd_refine",
        "persd_combined",
        "persd_combined_inpd",
    )
    unfiltered: bool = Field(True, description="also write *_nofilter sets (ablation)")
    self_per_task: int = Field(
        4, ge=1, description="self: at most this many distinct verified samples per task"
    )
    self_max_pass_rate: float = Field(
        1.0,
        gt=0.0,
        le=1.0,
        description="self: only tasks whose samples passed at most this fraction of the time "
        "(1: every task; below 1 leaves out the tasks the student always solves, whose rows "
        "are answers it already gives: docs/RESULTS.md, lever 1)",
    )
    seed: int = Field(0, description="which tasks stand_matched keeps")


class RoundsConfig(_Section):
    """``rounds:`` — multi-round personalisation: the student trained in round r makes round
    r+1's attempts, so each round's data is about the mistakes the student still makes.

    Rounds count from 0 (the base student's round). Later rounds train only ``variant``: the
    other variants in ``train.variants`` are round-0 baselines.
    """

    count: int = Field(1, ge=1, le=20, description="rounds in all; 1 = the paper's single round")
    tasks: Literal["failed", "fresh"] = Field(
        "failed",
        description="failed: round r+1 re-attempts the tasks round r's attempts failed; "
        "fresh: the pool is cut into `count` disjoint shards and round r attempts shard r",
    )
    training: Literal["continue", "retrain"] = Field(
        "continue",
        description="continue: round r+1 trains round r's adapter further on round r+1's data; "
        "retrain: round r+1 trains the base model afresh on the data of rounds 0..r+1",
    )
    variant: Variant | None = Field(
        None,
        description="the trained variant that becomes the next round's student "
        "(default: the first of train.variants)",
    )


class TrainStageConfig(TrainConfig):
    """``train:`` — which training sets to fine-tune the student on, and how (TrainConfig).

    ``format`` follows ``student.chat``: the data was written for the way the student is
    prompted, so training must render it the same way.
    """

    variants: tuple[Variant, ...] = ("persd_combined",)
    epochs: float = Field(2.0, gt=0)


class GateConfig(_Section):
    """``gate:`` — which trained model a run keeps. Every trained variant, at each epoch's
    checkpoint, is scored on the pool's validation tasks with the evaluation's decoding and
    paired per task against the base; a variant's best checkpoint is kept only when it gains
    at least ``min_net_gain`` more tasks than it loses, else the base stays the result."""

    min_net_gain: int = Field(
        1, ge=1, description="kept when (tasks gained - tasks lost) on validation reaches this"
    )
    max_p: float | None = Field(
        None, gt=0.0, le=1.0, description="also require the exact McNemar p to be at most this"
    )
    epochs: bool = Field(True, description="also score each epoch's checkpoint, not only the end")


class EvalStageConfig(_Section):
    """``evaluate:`` — how the base student and every trained variant are scored (same
    settings for all, so rows are comparable)."""

    benchmarks: tuple[str, ...] = ("humaneval",)
    limit: int | None = Field(
        None,
        ge=1,
        description="a seeded sample of N tasks of each benchmark (None: all of them); never "
        "the first N, which are easier than the rest",
    )
    sample_seed: int = Field(0, description="which tasks a limited evaluation samples")
    n: int = Field(1, ge=1)
    temperature: float = Field(0.0, ge=0.0, description="0 = greedy")
    refine_steps: int = Field(0, ge=0, description="self-refinement steps on seen tests")
    max_new_tokens: int = Field(384, ge=16)
    backend: Literal["auto", "transformers", "llama_cpp", "vllm"] | None = Field(
        None,
        description="None: the student's backend. One backend for base and trained students "
        "alike (llama.cpp applies a trained LoRA to the same Q4 file), so rows differ by "
        "training, not by kernels",
    )
    seed: int = 0
