"""Which student backend to build for a model: ``StudentConfig`` in, a ``Student`` out.

``backend="auto"`` picks what a run evaluates with (docs/STUDENT.md): vLLM on a CUDA machine
that has it; otherwise llama.cpp for a GGUF model when llama-cpp-python is installed (the
default run's student, batched, with a trained PEFT LoRA converted for it), so ``persd eval``
and a run score the same model on the same kernels; transformers for anything else.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from persd.errors import PersdError
from persd.llm.base import Student

Backend = Literal["auto", "transformers", "llama_cpp", "vllm"]


class StudentConfig(BaseModel):
    """How to load the student. Fields a backend does not use are ignored by it."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(
        "smollm2-135m-instruct",
        description="registry name, .gguf file, Hugging Face model directory or hub id",
    )
    backend: Backend = "auto"
    adapter: Path | None = Field(
        None,
        description="LoRA adapter: a PEFT directory (transformers, vllm) or a GGUF LoRA file "
        "(llama_cpp)",
    )
    chat: bool = Field(True, description="prompt with the chat template (instruct models)")
    dtype: Literal["float32", "bfloat16", "float16", "auto"] = Field(
        "bfloat16", description="transformers/vllm weights; 'auto' lets vLLM choose"
    )
    batch_size: int = Field(16, ge=1, description="transformers: rows per generate call")
    threads: int | None = Field(
        None,
        ge=1,
        description="CPU threads (torch: process-wide); llama_cpp: at most this many, "
        "chosen per step by measuring (None: all cores)",
    )
    n_ctx: int = Field(
        2048, ge=256, description="llama_cpp: tokens per sequence, prompt and reply together"
    )
    parallel: int = Field(
        32,
        ge=1,
        description="llama_cpp: sequences decoded together; with q8_serving, 32 decode 2.7x "
        "the tokens/s of one stream on 2 cores and 16 2.5x (docs/BENCHMARKS.md); each costs "
        "n_ctx tokens of KV cache",
    )
    lookup: int = Field(
        0,
        ge=0,
        le=32,
        description="llama_cpp: draft tokens guessed per step from the sequence's own context "
        "(prompt-lookup decoding; 0: off); every kept token is the one the model samples",
    )
    q8_serving: bool = Field(
        True,
        description="llama_cpp: serve Q5_0 matrices as Q8_0, the same values re-encoded "
        "(faster kernels on x86; the copy is written once to the cache, 12 more bytes per 32 "
        "weights)",
    )
    share_prefix: bool = Field(
        True,
        description="llama_cpp: decode the opening that a batch's prompts share (chat template "
        "and instruction) once and copy its KV cells into each sequence; the batches' shapes "
        "change, and with them greedy text at near ties on repacked kernels",
    )
    tensor_parallel_size: int = Field(1, ge=1, description="vllm: GPUs per model")
    gpu_memory_utilization: float = Field(0.9, gt=0.0, le=1.0, description="vllm")
    max_lora_rank: int = Field(64, ge=1, description="vllm: largest adapter rank it accepts")


def _vllm_usable() -> bool:
    if importlib.util.find_spec("vllm") is None:
        return False
    import torch

    return torch.cuda.is_available()


def _llama_cpp_usable() -> bool:
    return importlib.util.find_spec("llama_cpp") is not None


def choose_backend(config: StudentConfig, *, kind: str) -> Backend:
    """The backend ``auto`` means for this model ``kind`` ("gguf", "hf_dir", "hub")."""
    if config.backend != "auto":
        return config.backend
    if _vllm_usable():
        return "vllm"
    if kind == "gguf" and config.adapter is not None and config.adapter.suffix == ".gguf":
        return "llama_cpp"
    # What a run evaluates with (pipeline/default.yaml): the quantised GGUF served by llama.cpp,
    # a PEFT adapter converted for it. transformers would score dequantised bf16 weights, and
    # the same model would get another number from `persd eval` than from its run.
    if kind == "gguf" and _llama_cpp_usable():
        return "llama_cpp"
    return "transformers"


def load_student(config: StudentConfig) -> Student:
    """Resolve ``config.model`` (pulling a registry model if needed) and load its backend."""
    from persd.llm.registry import resolve_model

    resolved = resolve_model(config.model)
    backend = choose_backend(config, kind=resolved.kind)
    where = resolved.path if resolved.path is not None else resolved.hub_id
    if where is None:  # pragma: no cover - resolve_model always sets one
        raise PersdError(f"{config.model}: resolved to nothing loadable")
    if backend == "llama_cpp":
        from persd.llm.student_llama import LlamaStudent

        if resolved.kind != "gguf":
            raise PersdError(
                f"{config.model}: llama_cpp needs a .gguf model; use backend 'transformers'"
            )
        lora = config.adapter
        if lora is not None and lora.is_dir():
            from persd.llm.lora_gguf import convert_peft_lora

            # A PEFT adapter trained on this GGUF's dequantised weights: convert it once.
            lora = convert_peft_lora(lora, Path(where))
        elif lora is not None and lora.suffix != ".gguf":
            raise PersdError(
                f"{config.adapter}: llama_cpp takes a PEFT adapter directory or a GGUF LoRA file"
            )
        return LlamaStudent(
            Path(where),
            n_ctx=config.n_ctx,
            parallel=config.parallel,
            threads=config.threads,
            lookup=config.lookup,
            q8_serving=config.q8_serving,
            share_prefix=config.share_prefix,
            lora_path=lora,
            name=resolved.name,
        )
    if backend == "vllm":
        from persd.llm.student_hf import convert_gguf_to_hf
        from persd.llm.student_vllm import VLLMStudent

        # vLLM reads GGUF poorly (one file, no LoRA): give it the dequantised HF copy.
        model = convert_gguf_to_hf(Path(where)) if resolved.kind == "gguf" else where
        return VLLMStudent(
            model,
            adapter=config.adapter,
            tensor_parallel_size=config.tensor_parallel_size,
            dtype=config.dtype,
            max_lora_rank=config.max_lora_rank,
            gpu_memory_utilization=config.gpu_memory_utilization,
            name=resolved.name,
            gguf_source=Path(where) if resolved.kind == "gguf" else None,
        )
    from persd.llm.student_hf import HFStudent

    return HFStudent(
        where,
        adapter=config.adapter,
        dtype="bfloat16" if config.dtype == "auto" else config.dtype,
        batch_size=config.batch_size,
        threads=config.threads,
        name=resolved.name,
    )


def weights_fingerprint(cfg: StudentConfig) -> str:
    """Which files the student's weights come from, as they are now: path, size and mtime of
    the model file (when the name is a path) and of every file of the adapter. An evaluation's
    saved generations are reused only under the same fingerprint, so retraining an adapter in
    place never passes its old samples off as the new model's."""
    import hashlib

    parts: list[str] = [cfg.model]
    llama = cfg.backend in ("llama_cpp", "auto")
    if cfg.q8_serving and llama:
        parts.append("q8_serving")  # other kernels: other last bits, so other greedy samples
    if not cfg.share_prefix and llama:
        # Other batch shapes, so other last bits on repacked kernels. Marked when off, so the
        # default's fingerprint stays that of the runs recorded before the setting existed.
        parts.append("whole_prompts")
    paths = [Path(cfg.model)]
    if cfg.adapter is not None:
        adapter = Path(cfg.adapter)
        # A PEFT directory's own files only: llama.cpp's converted copy is written beside them.
        paths += sorted(adapter.glob("adapter_*")) if adapter.is_dir() else [adapter]
    for path in paths:
        if path.is_file():
            st = path.stat()
            parts.append(f"{path.resolve()}:{st.st_size}:{st.st_mtime_ns}")
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


def trained_student(base: StudentConfig, model: Path) -> StudentConfig:
    """The student config that samples a trained model: the base weights plus the adapter
    (LoRA; llama.cpp applies it to the same GGUF) or the trained weights themselves (full
    fine-tuning, an HF directory llama.cpp cannot read, so transformers samples it)."""
    if (model / "adapter_config.json").is_file():
        return base.model_copy(update={"adapter": model})
    backend = "transformers" if base.backend == "llama_cpp" else base.backend
    return base.model_copy(update={"model": str(model), "adapter": None, "backend": backend})
