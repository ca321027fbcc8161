"""Supervised fine-tuning of the student with TRL's ``SFTTrainer``: LoRA (default) or full.

The run directory holds everything a run leaves behind::

    <out>/checkpoint-<step>/   Trainer checkpoints (resume from the newest with ``resume``)
    <out>/runs/<time_host>/    TensorBoard event files (``tensorboard --logdir <out>/runs``)
    <out>/final/               the trained model: a PEFT adapter (LoRA) or full weights, +tokenizer
    <out>/merged/              LoRA merged into the base weights (``merge``), for any sampler
    <out>/train_config.json    the resolved TrainConfig, base model and data files
    <out>/train_summary.json   steps, losses, tokens, throughput, wall time

Runs unchanged under ``accelerate launch`` (DDP, DeepSpeed, FSDP): every rank runs this code;
only rank 0 converts the base model, writes files and merges.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from persd.llm.render import ChatRenderer
from persd.records import Example
from persd.train.config import TrainConfig, TrainError
from persd.train.data import describe, load_examples, to_dataset
from persd.train.loss import LabelOnlyLoss
from persd.train.precision import bf16_pays, precision
from persd.train.progress import Progress, make_meter
from persd.train.schedule import FirstStepLearns
from persd.train.teacher_scores import per_row, scores_for_training


@dataclass(frozen=True)
class TrainSummary:
    """What ``train_summary.json`` holds; throughput counts this session only."""

    steps: int
    epochs: float
    final_loss: float | None  # the last logged training loss
    mean_loss: float | None  # mean training loss of this session
    tokens: int  # non-padding tokens seen by all ranks, all sessions
    session_tokens: int
    processes: int  # data-parallel ranks (accelerate launch --num_processes)
    tokens_per_s: float
    wall_s: float
    examples: int
    dropped_too_long: int  # rows whose prompt filled max_seq_len (TRL leaves them out)
    variants: dict[str, int]
    seed: int
    base_model: str
    base_path: str
    method: str
    format: str
    dtype: str
    resumed_from: str | None
    # persd_onpolicy: tokens the teacher read to score the rows (cached or not), and how many
    # rows it scored in this session (the others came from the score cache).
    teacher_tokens: int | None = None
    teacher_rows_scored: int | None = None


@dataclass(frozen=True)
class TrainResult:
    out_dir: Path
    model_dir: Path  # adapter (LoRA) or full model: <out>/final
    merged_dir: Path | None
    summary: TrainSummary
    main_process: bool = True  # False on the other ranks of a distributed run


def prepare_out_dir(out_dir: Path, *, resume: bool) -> Path | None:
    """The checkpoint to resume from, or None for a fresh run; refuses to stack runs silently.

    The official code resumed whenever ``output_dir`` held a ``config.json``, so a rerun could
    continue an unrelated run. Here a non-empty directory is an error unless ``resume`` is set,
    and ``resume`` needs a checkpoint to continue (an empty or absent directory starts fresh).
    """
    if out_dir.exists() and not out_dir.is_dir():
        raise TrainError(f"{out_dir}: exists and is not a directory; choose another --out")
    if not out_dir.exists() or not any(out_dir.iterdir()):
        return None
    if not resume:
        raise TrainError(
            f"{out_dir}: output directory exists and is not empty; pass --resume to continue "
            "its newest checkpoint, or choose another --out"
        )
    steps = [
        int(p.name.removeprefix("checkpoint-"))
        for p in out_dir.glob("checkpoint-*")
        if p.is_dir()
        and p.name.removeprefix("checkpoint-").isdigit()
        and (p / "trainer_state.json").is_file()  # written last: the checkpoint is complete
    ]
    if not steps:
        raise TrainError(
            f"{out_dir}: --resume given but the directory holds no checkpoint-* to continue; "
            "choose another --out to start fresh"
        )
    return out_dir / f"checkpoint-{max(steps)}"


def _load(model_ref: str, config: TrainConfig, load_dtype: str) -> tuple[Any, Any]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(model_ref)
        model = AutoModelForCausalLM.from_pretrained(model_ref, dtype=getattr(torch, load_dtype))
    except (OSError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise TrainError(f"{model_ref}: cannot load the base model: {first}") from None
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token  # padding positions carry label -100 anyway
    if config.format == "chat" and not tokenizer.chat_template:
        raise TrainError(
            f"{model_ref}: the tokenizer has no chat template; train with --format base"
        )
    return model, tokenizer


def _lora_config(config: TrainConfig) -> Any:
    from peft import LoraConfig

    targets = config.lora.target_modules
    return LoraConfig(
        task_type="CAUSAL_LM",
        r=config.lora.r,
        lora_alpha=config.lora.alpha,
        lora_dropout=config.lora.dropout,
        target_modules=targets if isinstance(targets, str) else list(targets),
    )


def _continue_adapter(model: Any, adapter: str) -> Any:
    """``model`` wrapped in a trained adapter whose weights keep training (rounds that continue
    the previous round's student rather than starting a fresh adapter on the base)."""
    from peft import PeftModel

    if not (Path(adapter) / "adapter_config.json").is_file():
        raise TrainError(f"{adapter}: init_adapter is not a PEFT adapter (no adapter_config.json)")
    # autocast_adapter_dtype (the default) keeps the adapter in float32 over a bf16 base, as a
    # fresh adapter would be.
    return PeftModel.from_pretrained(model, adapter, is_trainable=True)


def sft_config(config: TrainConfig, out_dir: Path, *, bf16: bool) -> Any:
    """The TRL ``SFTConfig`` for ``config``; every default that matters is set explicitly."""
    import torch
    from trl import SFTConfig

    return SFTConfig(
        output_dir=str(out_dir),
        num_train_epochs=config.epochs,
        max_steps=config.max_steps or -1,
        per_device_train_batch_size=config.batch_size,
        gradient_accumulation_steps=config.grad_accum,
        learning_rate=config.lr,
        lr_scheduler_type=config.lr_scheduler,
        # A float < 1 is a fraction of the total steps, rounded down (persd.train.schedule).
        warmup_steps=config.warmup_ratio,
        weight_decay=config.weight_decay,
        max_grad_norm=config.max_grad_norm,
        # Rows are cut to max_seq_len when tokenised (to_dataset); TRL refuses a max_length
        # with padding_free, which it does not enforce there.
        max_length=None if config.packed else config.max_seq_len,
        completion_only_loss=True,  # prompt tokens get label -100; completion and EOS are learnt
        packing=False,
        # One sequence per micro-batch, its rows side by side with positions restarting at each
        # row: transformers then masks attention per row (block-diagonal), and no compute is
        # spent on padding.
        padding_free=config.packed,
        bf16=bf16,  # SFTConfig defaults to True; on CPU that is slower here (see precision())
        activation_checkpointing=config.gradient_checkpointing,  # TRL defaults to True
        seed=config.seed,
        data_seed=config.seed,
        save_strategy=config.save_strategy,
        save_steps=config.save_steps,
        save_total_limit=config.save_total_limit,
        logging_steps=config.logging_steps,
        logging_first_step=True,
        report_to=["tensorboard"],
        include_num_input_tokens_seen="non_padding",
        disable_tqdm=True,
        dataloader_num_workers=0,
        dataloader_pin_memory=torch.cuda.is_available(),
        # Without a GPU: gloo between processes under a launcher (else each runs alone).
        use_cpu=not torch.cuda.is_available(),
    )


def make_trainer(
    config: TrainConfig,
    examples: Sequence[Example],
    model_ref: str,
    out_dir: Path,
    *,
    progress: Progress | None = None,
    renderer: ChatRenderer | None = None,
    scores: Sequence[Any] | None = None,
) -> tuple[Any, Any]:
    """(SFTTrainer with the rows tokenised and labelled, its meter): the model loaded in the
    precision ``config`` asks for on this machine, LoRA-wrapped unless ``method`` is full.
    With ``scores`` (one per row; None for a plain SFT row), the on-policy trainer instead
    (``persd.train.onpolicy``), on the same arguments, precision and LoRA."""
    import torch
    from transformers import PrinterCallback, set_seed
    from trl import SFTTrainer

    cuda = torch.cuda.is_available()
    if not cuda:
        # Adam's second moments of LoRA's fresh weights underflow into subnormal floats, which
        # x86 CPUs compute in microcode: float32 LoRA steps ran 10x slower from step 2 on
        # (SmolLM2-135M: 45 s against 4 s). Flushing them to zero changes nothing measurable.
        torch.set_flush_denormal(True)
    pays = config.dtype == "auto" and bf16_pays(cuda, config.threads)  # measured on a CPU
    load_dtype, bf16 = precision(config, bf16_native=pays)
    # Arguments first: under DeepSpeed ZeRO-3 they must exist before the model is loaded.
    args = sft_config(config, out_dir, bf16=bf16)
    set_seed(config.seed)
    model, tokenizer = _load(model_ref, config, load_dtype)
    if renderer is None:
        from persd.llm.render import from_hf_tokenizer

        renderer = from_hf_tokenizer(tokenizer, model_ref)
    peft_config = _lora_config(config) if config.method == "lora" else None
    if config.init_adapter:
        model = _continue_adapter(model, config.init_adapter)
        peft_config = None  # the adapter brings its own shape
    meter = make_meter(progress)
    meter.dtype = f"{load_dtype}+bf16-autocast" if bf16 else load_dtype
    try:
        if scores is not None:
            from persd.train import onpolicy

            trainer, _ = onpolicy.make_trainer(
                config, examples, scores, model, tokenizer, renderer, args,
                peft_config=peft_config, callbacks=[meter],
            )  # fmt: skip
        else:
            trainer = type("SFTTrainer", (FirstStepLearns, LabelOnlyLoss, SFTTrainer), {})(
                model=model,
                args=args,
                train_dataset=to_dataset(
                    examples, config.format, tokenizer, renderer, config.max_seq_len
                ),
                processing_class=tokenizer,
                peft_config=peft_config,
                callbacks=[meter],
            )
    except ValueError as e:
        if "Target modules" not in str(e):
            raise
        raise TrainError(
            f"{model_ref}: none of lora.target_modules {list(config.lora.target_modules)} is a "
            "layer of this model; set lora.target_modules to its layer names or 'all-linear'"
        ) from None
    # With tqdm off the Trainer prints every log dict to stdout; progress goes through `progress`
    # and the numbers to TensorBoard and train_summary.json instead.
    trainer.remove_callback(PrinterCallback)
    return trainer, meter


def train(
    config: TrainConfig,
    data: Sequence[Path] | Path,
    base_model: str,
    out_dir: Path,
    *,
    progress: Progress | None = None,
) -> TrainResult:
    """Fine-tune ``base_model`` on the Example rows in ``data``; write the run under ``out_dir``."""
    paths = [data] if isinstance(data, Path) else [Path(p) for p in data]
    out_dir = Path(out_dir)
    # Bad input fails here, before torch loads: a typo costs no start-up time. Every rank checks
    # before any rank writes (the barrier below): no rank mistakes another's files for a run.
    checkpoint = prepare_out_dir(out_dir, resume=config.resume)
    examples = load_examples(paths)

    import torch
    from accelerate import PartialState

    from persd.llm.student_hf import resolve_base

    # Under `accelerate launch` or torchrun this joins the process group: NCCL on GPUs, gloo
    # on a machine without one (accelerate would otherwise run each CPU process alone).
    state = PartialState(cpu=not torch.cuda.is_available())
    state.wait_for_everyone()
    if config.threads:
        torch.set_num_threads(config.threads)  # process-wide; torch has no per-model setting
    with state.main_process_first():  # rank 0 converts a GGUF; the others then reuse it
        name, model_ref = resolve_base(base_model)
    from persd.llm.render import renderer_for

    # The tokenizer the student is SERVED with (llama.cpp's for a GGUF base), not the one
    # transformers rebuilt from it: the two disagree on some whitespace runs.
    renderer = renderer_for(base_model)
    scored = None
    if any(ex.teacher_prompt for ex in examples):
        with state.main_process_first():  # rank 0 scores; the others read its cache
            scored = scores_for_training(config, examples, renderer, out_dir, progress)
    trainer, meter = make_trainer(
        config,
        examples,
        model_ref,
        out_dir,
        progress=progress,
        renderer=renderer,
        scores=per_row(examples, scored.scores) if scored else None,
    )
    # Rows whose prompt alone fills max_seq_len have nothing left to learn: say so.
    dropped = len(examples) - len(trainer.train_dataset)
    if dropped and progress and state.is_main_process:
        progress.note(
            f"skipped {dropped} of {len(examples)} rows: the prompt fills max_seq_len "
            f"({config.max_seq_len} tokens); raise max_seq_len to keep them"
        )
    output = trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
    final_dir = out_dir / "final"
    trainer.save_model(str(final_dir))  # adapter only for LoRA; gathers ZeRO-3 shards
    tokens = int(trainer.state.num_input_tokens_seen)
    session_tokens = tokens - int(meter.tokens0)
    wall = meter.t1 - meter.t0  # the training loop only: no loading, preparation or saving
    summary = TrainSummary(
        steps=trainer.state.global_step,
        epochs=round(float(trainer.state.epoch or 0.0), 4),
        final_loss=_last_loss(trainer.state.log_history),
        mean_loss=_finite(output.training_loss),
        tokens=tokens,
        processes=state.num_processes,
        session_tokens=session_tokens,
        tokens_per_s=round(session_tokens / wall, 2) if wall > 0 else 0.0,
        wall_s=round(wall, 2),
        examples=len(examples),
        dropped_too_long=dropped,
        variants=describe(examples),
        seed=config.seed,
        base_model=name,
        base_path=model_ref,
        method=config.method,
        format=config.format,
        dtype=meter.dtype,
        resumed_from=str(checkpoint) if checkpoint else None,
        teacher_tokens=scored.teacher_tokens if scored else None,
        teacher_rows_scored=scored.scored_now if scored else None,
    )
    merged = out_dir / "merged" if config.merge and config.method == "lora" else None
    del trainer
    if state.is_main_process:
        _write_json(out_dir / "train_config.json", _run_record(config, paths, name, model_ref))
        _write_json(out_dir / "train_summary.json", asdict(summary))
        if merged is not None:
            from persd.train.export import merge_adapter

            merge_adapter(model_ref, final_dir, merged, overwrite=True)
    state.wait_for_everyone()
    return TrainResult(
        out_dir=out_dir,
        model_dir=final_dir,
        merged_dir=merged,
        summary=summary,
        main_process=state.is_main_process,
    )


def _finite(x: float) -> float | None:
    return float(x) if x == x and abs(x) != float("inf") else None


def _last_loss(history: list[dict[str, Any]]) -> float | None:
    losses = [row["loss"] for row in history if "loss" in row]
    return float(losses[-1]) if losses else None


def _run_record(config: TrainConfig, paths: list[Path], name: str, ref: str) -> dict[str, Any]:
    return {
        "config": config.model_dump(mode="json"),
        "data": [str(p) for p in paths],
        "base_model": name,
        "base_path": ref,
    }


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
