"""Training configuration: defaults < YAML (``--config``) < flags; an unknown key is an error.

Defaults are chosen to run on a small CPU machine (LoRA, short sequences, small micro-batches with
gradient accumulation) and to scale to GPUs by changing numbers, not code.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from persd.configio import describe, load_yaml_mapping, merge
from persd.errors import PersdError

# The attention and MLP projections of Qwen2 / Llama / Mistral / SmolLM2 blocks: "all linear
# layers but the LM head", written out so a model whose layers are named differently fails
# loudly in PEFT instead of training nothing.
LLAMA_LINEAR = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


class TrainError(PersdError):
    """Training cannot start or continue as asked: names the directory or model and the fix."""


class TrainConfigError(PersdError):
    """A training configuration file or flag is invalid: one line per bad key."""


class LoraSettings(BaseModel):
    """LoRA adapter shape (PEFT ``LoraConfig``)."""

    model_config = ConfigDict(extra="forbid")

    r: int = Field(16, ge=1, description="rank of the update matrices")
    alpha: int = Field(32, ge=1, description="scale = alpha / r")
    dropout: float = Field(0.05, ge=0.0, lt=1.0)
    target_modules: tuple[str, ...] | Literal["all-linear"] = Field(
        LLAMA_LINEAR, description="module names to adapt, or 'all-linear' (PEFT picks them)"
    )


class OnPolicySettings(BaseModel):
    """``persd_onpolicy`` rows (``persd.train.onpolicy``): the student learns its own samples
    from a teacher's per-token distribution, the teacher conditioned on privileged context."""

    model_config = ConfigDict(extra="forbid")

    teacher: str | None = Field(
        None,
        description="the scoring teacher: a registry name, .gguf or HF dir sharing the "
        "student's tokenizer (persd run: the managed teacher server's model)",
    )
    top_k: int = Field(
        20,
        ge=1,
        le=256,
        description="teacher log-probs kept per token; the rest of the vocabulary is one tail "
        "bucket (full 151k-entry rows would be ~600 KB per token to cache)",
    )
    divergence: Literal["reverse_kl", "forward_kl", "jsd"] = Field(
        "reverse_kl",
        description="per-token loss over the top-k + tail buckets: reverse KL (student || "
        "teacher; mode-seeking, GKD's on-policy choice), forward KL, or generalised JSD",
    )
    beta: float = Field(0.5, gt=0.0, lt=1.0, description="jsd only: the teacher's weight in M")
    sft_weight: float = Field(
        0.0,
        ge=0.0,
        description="weight of plain SFT on rows without a teacher turn (e.g. verified fixes "
        "given in the same data files); 0 trains on the on-policy rows alone",
    )
    cache: str | None = Field(
        None,
        description="JSONL of cached teacher scores (None: <out>/teacher_scores.jsonl; "
        "persd run: <run dir>/teacher_scores.jsonl)",
    )


class TrainConfig(BaseModel):
    """Everything ``persd train`` can be told."""

    model_config = ConfigDict(extra="forbid")

    method: Literal["lora", "full"] = Field("lora", description="LoRA adapter or all weights")
    format: Literal["chat", "base"] = Field(
        "chat",
        description="chat: prompt is the user turn, completion the assistant turn (the model's "
        "chat template applies); base: prompt + completion is the raw training string",
    )
    lora: LoraSettings = Field(default_factory=LoraSettings)
    epochs: float = Field(3.0, gt=0)
    max_steps: int | None = Field(None, ge=1, description="optimizer steps; overrides epochs")
    learning_rate: float | None = Field(
        None, gt=0, description="None: 2e-5 for LoRA, 1e-5 for full fine-tuning"
    )
    lr_scheduler: Literal["constant", "linear", "cosine", "constant_with_warmup"] = "cosine"
    warmup_ratio: float = Field(
        0.03,
        ge=0.0,
        lt=1.0,
        description="fraction of the optimizer steps, rounded down (none below 1/ratio steps); "
        "every warmup step trains above rate 0 (persd.train.schedule)",
    )
    weight_decay: float = Field(0.0, ge=0.0)
    max_grad_norm: float = Field(1.0, gt=0)
    batch_size: int = Field(2, ge=1, description="sequences per device per micro-batch")
    grad_accum: int = Field(4, ge=1, description="micro-batches per optimizer step")
    max_seq_len: int = Field(1024, ge=16, description="tokens; longer rows are cut at the end")
    packed: bool = Field(
        False,
        description="a micro-batch's rows in one sequence, no padding, attention kept per row "
        "(the same loss as padded batches; faster with batch_size > 1)",
    )
    dtype: Literal["auto", "float32", "bfloat16"] = Field(
        "auto",
        description="auto: bf16 mixed precision where the GPU or CPU computes bf16 natively, "
        "else float32",
    )
    threads: int | None = Field(None, ge=1, description="torch CPU threads (None: torch default)")
    gradient_checkpointing: bool = Field(False, description="less memory, ~30% more compute")
    seed: int = 42
    save_strategy: Literal["steps", "epoch"] = Field(
        "steps", description="checkpoint every save_steps optimizer steps, or at each epoch's end"
    )
    save_steps: int = Field(200, ge=1, description="checkpoint every N optimizer steps")
    save_total_limit: int | None = Field(2, ge=1, description="checkpoints kept (None: all)")
    logging_steps: int = Field(10, ge=1)
    resume: bool = Field(False, description="continue from the newest checkpoint in the out dir")
    init_adapter: str | None = Field(
        None,
        description="LoRA only: start from this trained PEFT adapter directory instead of a "
        "fresh adapter (multi-round training that continues the previous round's student)",
    )
    merge: bool = Field(False, description="also write a merged model (LoRA) under merged/")
    onpolicy: OnPolicySettings = Field(default_factory=OnPolicySettings)

    @model_validator(mode="after")
    def _adapter_needs_lora(self) -> TrainConfig:
        if self.init_adapter is not None and self.method != "lora":
            raise ValueError(
                "init_adapter continues a LoRA adapter; with method 'full' pass the previous "
                "model directory as the base model instead"
            )
        return self

    @property
    def lr(self) -> float:
        """The learning rate in use. LoRA's usual 2e-4 made the default student worse on
        held-out tasks after four steps on twelve rows (−9/+3 of 40 HumanEval tasks); 2e-5
        and 5e-5 did not (docs/TRAINING.md, "What a few steps do")."""
        if self.learning_rate is not None:
            return self.learning_rate
        return 2e-5 if self.method == "lora" else 1e-5


def load_train_config(
    path: Path | None = None, overrides: Mapping[str, Any] | None = None
) -> TrainConfig:
    """Defaults < YAML file < overrides (flags).

    The YAML holds the keys at top level, or is a run config with a ``train:`` section; then
    its ``data.format`` (how the pipeline wrote the rows) is the default ``format``.
    """
    data: Any = {}
    source = str(path) if path else "flags"
    if path is not None:
        data = load_yaml_mapping(path, TrainConfigError, "training settings")
        if isinstance(data.get("train"), dict):
            section = dict(data["train"])
            # Which training sets the pipeline trains, not how: the data files are the CLI's.
            section.pop("variants", None)
            run_data = data.get("data")
            if isinstance(run_data, dict) and "format" in run_data:
                section.setdefault("format", run_data["format"])
            data = section
    overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
    try:
        return TrainConfig.model_validate(merge(data, overrides))
    except ValidationError as e:
        raise TrainConfigError(describe(source, e, TrainConfig)) from None
