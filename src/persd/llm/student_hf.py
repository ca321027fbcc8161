"""Student on transformers: batched sampling from an HF directory or a GGUF file, with LoRA.

The backend to fine-tune and to sample a freshly trained adapter without any conversion. A GGUF
file is dequantised on load (transformers cannot train or save a quantised GGUF model);
``convert_gguf_to_hf`` writes it once as safetensors next to the file, and loading prefers that
copy (seconds instead of tens of seconds).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from persd.errors import PersdError
from persd.llm.base import Generation, Prompt, SamplingParams, Student, adapter_label

if TYPE_CHECKING:
    import torch

DType = Literal["float32", "bfloat16", "float16"]


class StudentLoadError(PersdError):
    """Weights, tokenizer or adapter could not be loaded: names the path and what to do."""


def _torch_dtype(name: DType) -> torch.dtype:
    import torch

    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[name]


def converted_dir(gguf_path: Path) -> Path:
    """Where ``convert_gguf_to_hf`` puts the safetensors copy of ``gguf_path`` by default."""
    return gguf_path.with_name(gguf_path.name.removesuffix(".gguf") + ".hf")


def _is_converted(out_dir: Path) -> bool:
    return (out_dir / "config.json").is_file() and any(out_dir.glob("*.safetensors"))


def resolve_base(base_model: str) -> tuple[str, str]:
    """(name, what ``from_pretrained`` loads) for a model to train or score with transformers:
    a GGUF is converted once to safetensors."""
    from persd.llm.registry import resolve_model

    resolved = resolve_model(base_model)
    if resolved.kind == "hub":
        return resolved.name, str(resolved.hub_id)
    assert resolved.path is not None
    if resolved.kind == "gguf":
        # transformers dequantises a GGUF on load but will not train or save it quantised.
        return resolved.name, str(convert_gguf_to_hf(resolved.path))
    return resolved.name, str(resolved.path)


def convert_gguf_to_hf(
    gguf_path: Path | str, out_dir: Path | str | None = None, *, dtype: DType = "float32"
) -> Path:
    """Dequantise a GGUF model once into an HF directory (safetensors + tokenizer) and return it.

    Reused when already there. Written to a temporary sibling and renamed into place, so an
    interrupted conversion never leaves a half directory that later loads would trust.
    """
    gguf_path = Path(gguf_path)
    out = Path(out_dir) if out_dir is not None else converted_dir(gguf_path)
    if _is_converted(out):
        return out
    if not gguf_path.is_file():
        raise StudentLoadError(f"{gguf_path}: GGUF file not found")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    except OSError as e:
        raise StudentLoadError(
            f"{out}: cannot write the converted model ({e.strerror}); pass another out_dir"
        ) from None
    try:
        kw = {"gguf_file": gguf_path.name}
        tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, **kw)
        model = AutoModelForCausalLM.from_pretrained(
            gguf_path.parent, dtype=_torch_dtype(dtype), **kw
        )
        # The GGUF quantizer marks the model unsaveable; the weights are plain dequantised
        # tensors by now, so drop it and save an ordinary checkpoint.
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        umask = os.umask(0)
        os.umask(umask)
        tmp.chmod(0o777 & ~umask)  # mkdtemp's 0700 would hide the copy from other users
        try:
            os.rename(tmp, out)
        except OSError:
            if not _is_converted(out):  # not a concurrent conversion that won the race
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


class HFStudent(Student):
    """A causal LM on transformers, sampled in left-padded batches."""

    def __init__(
        self,
        path: Path | str,
        *,
        adapter: Path | str | None = None,
        merge_adapter: bool = True,
        dtype: DType = "bfloat16",
        batch_size: int = 16,
        threads: int | None = None,
        name: str | None = None,
        device: str | None = None,
        gguf_source: Path | str | None = None,
    ) -> None:
        """``gguf_source``: the GGUF an HF directory was converted from (its tokenizer rules)."""
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        local = Path(path)
        base = name or local.name.removesuffix(".gguf")
        if threads:
            torch.set_num_threads(threads)  # process-wide: torch has no per-model setting
        kw: dict[str, Any] = {}
        source: Path | str = local if local.exists() else str(path)  # else a hub id
        if local.suffix == ".gguf":
            if _is_converted(converted_dir(local)):
                source = converted_dir(local)
            else:
                kw["gguf_file"] = local.name
                source = local.parent
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(source, **kw)
            model = AutoModelForCausalLM.from_pretrained(source, dtype=_torch_dtype(dtype), **kw)
        except (OSError, ValueError) as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise StudentLoadError(f"{path}: cannot load the model: {first}") from None
        if adapter is not None:
            model = _with_adapter(model, Path(adapter), merge=merge_adapter)
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.model = model.to(self.device).eval()
        self.tokenizer.padding_side = "left"  # generation appends on the right
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.batch_size = batch_size
        self._model_id = f"{base}+{adapter_label(adapter)}" if adapter else base
        # What an evaluation report says it scored (with ``backend``).
        self.weights = f"{path}" + (", dequantised" if local.suffix == ".gguf" else "")
        self.weights += f", {dtype}" + (f", + PEFT adapter {adapter}" if adapter else "")
        if adapter and merge_adapter:
            self.weights += " (merged)"
        from persd.llm.render import from_gguf, from_hf_tokenizer

        # A GGUF model is tokenised as llama.cpp tokenises it, in training and in every
        # backend; the tokenizer transformers rebuilds from it differs on some whitespace.
        gguf = gguf_source or (local if local.suffix == ".gguf" else None)
        self.renderer = from_gguf(gguf) if gguf else from_hf_tokenizer(self.tokenizer, str(path))

    backend = "transformers"

    @property
    def model_id(self) -> str:
        return self._model_id

    def _encode(self, prompt: Prompt) -> list[int]:
        """The prompt's ids from THE renderer (``persd.llm.render``): the trainer's ids."""
        return self.renderer.ids(prompt)

    def generate(self, prompts: Sequence[Prompt], params: SamplingParams) -> list[list[Generation]]:
        """``params.n`` samples per prompt; reproducible for the same prompts and params."""
        import torch

        torch.manual_seed(params.seed)
        encoded = [self._encode(p) for p in prompts]
        # Rows sorted by length so a batch holds similar lengths: less padding to compute.
        rows = sorted(
            ((i, k) for i in range(len(prompts)) for k in range(params.n)),
            key=lambda r: len(encoded[r[0]]),
        )
        out: list[list[Generation | None]] = [[None] * params.n for _ in prompts]
        for start in range(0, len(rows), self.batch_size):
            batch = rows[start : start + self.batch_size]
            gens = self._generate_batch([encoded[i] for i, _ in batch], params)
            for (i, k), gen in zip(batch, gens, strict=True):
                out[i][k] = gen
        return [[g for g in row if g is not None] for row in out]

    def _generate_batch(self, ids: list[list[int]], params: SamplingParams) -> list[Generation]:
        import torch
        from transformers import GenerationConfig

        tok = self.tokenizer
        enc = tok.pad({"input_ids": ids}, return_tensors="pt").to(self.device)
        greedy = params.temperature == 0.0
        config = GenerationConfig(
            max_new_tokens=params.max_new_tokens,
            do_sample=not greedy,
            temperature=None if greedy else params.temperature,
            top_p=None if greedy else params.top_p,
            # Off, as in the other backends: only temperature and top_p shape sampling.
            top_k=None if greedy else 0,
            pad_token_id=tok.pad_token_id,
            eos_token_id=self.model.generation_config.eos_token_id or tok.eos_token_id,
            stop_strings=list(params.stop) or None,
        )
        with torch.inference_mode():
            seqs = self.model.generate(**enc, generation_config=config, tokenizer=tok)
        new = seqs[:, enc["input_ids"].shape[1] :].tolist()
        eos = config.eos_token_id
        ends = {*(eos if isinstance(eos, list) else [eos]), tok.pad_token_id}
        return [
            self._to_generation(row, len(prompt_ids), ends, params)
            for row, prompt_ids in zip(new, ids, strict=True)
        ]

    def _to_generation(
        self, row: list[int], tokens_in: int, ends: set[int], params: SamplingParams
    ) -> Generation:
        # A row that finished early is padded: its own tokens end at the first end-of-sequence
        # or pad token (often the same id). tokens_out does not count that end token.
        end = next((j for j, t in enumerate(row) if t in ends), None)
        tokens = row if end is None else row[:end]
        text = self.tokenizer.decode(tokens, skip_special_tokens=True)
        cut = min((i for i in (text.find(s) for s in params.stop) if i >= 0), default=-1)
        return Generation(
            text=text[:cut] if cut >= 0 else text,
            tokens_in=tokens_in,
            tokens_out=len(tokens),
            finish_reason="stop" if end is not None or cut >= 0 else "length",
        )

    def close(self) -> None:
        """Drop the weights; the student cannot generate afterwards. Safe to call twice."""
        self.__dict__.pop("model", None)
        import gc

        gc.collect()


def _with_adapter(model: Any, adapter: Path, *, merge: bool) -> Any:
    """The model with a PEFT LoRA adapter; merged into the weights unless asked not to."""
    if not (adapter / "adapter_config.json").is_file():
        raise StudentLoadError(f"{adapter}: not a PEFT adapter directory (no adapter_config.json)")
    from peft import PeftModel

    peft_model = PeftModel.from_pretrained(model, adapter)
    # Merged, a LoRA model samples as fast as the base model: no extra matmuls per layer.
    return peft_model.merge_and_unload() if merge else peft_model
