"""Student on vLLM (CUDA machines): continuous batching, LoRA adapters per request.

Optional: ``import persd.llm.student_vllm`` works without vLLM; constructing ``VLLMStudent``
then raises one clear line. The parameter mapping is a pure function, tested without vLLM.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from persd.errors import PersdError
from persd.llm.base import FinishReason, Generation, Prompt, SamplingParams, Student

VLLM_MISSING = "vLLM is not installed; pip install persd[vllm] on a CUDA machine"


def _import_vllm() -> Any:
    try:
        import vllm
    except ImportError:
        raise PersdError(VLLM_MISSING) from None
    return vllm


def vllm_sampling_kwargs(params: SamplingParams) -> dict[str, Any]:
    """``vllm.SamplingParams`` keyword arguments meaning what ``params`` means elsewhere.

    Greedy asks for one sequence (vLLM rejects ``n > 1`` without sampling, and the ``n`` would
    be identical anyway); ``VLLMStudent`` repeats it ``params.n`` times.
    """
    greedy = params.temperature == 0.0
    return {
        "n": 1 if greedy else params.n,
        "temperature": params.temperature,
        "top_p": 1.0 if greedy else params.top_p,
        "top_k": -1,  # off, as in every backend: only temperature and top_p shape sampling
        "max_tokens": params.max_new_tokens,
        "stop": list(params.stop),
        "seed": params.seed,
        "include_stop_str_in_output": False,
    }


class VLLMStudent(Student):
    """A model in ``vllm.LLM``; an adapter is applied per request, the base stays loaded."""

    def __init__(
        self,
        model: str | Path,
        *,
        adapter: Path | str | None = None,
        tensor_parallel_size: int = 1,
        dtype: str = "auto",
        max_lora_rank: int = 64,
        gpu_memory_utilization: float = 0.9,
        max_model_len: int | None = None,
        name: str | None = None,
        gguf_source: Path | str | None = None,
    ) -> None:
        """``gguf_source``: the GGUF ``model`` was converted from, whose tokenizer rules the
        student is trained and served with (``persd.llm.render``)."""
        vllm = _import_vllm()
        from vllm.lora.request import LoRARequest

        self.llm = vllm.LLM(
            model=str(model),
            tensor_parallel_size=tensor_parallel_size,
            dtype=dtype,
            enable_lora=adapter is not None,
            max_lora_rank=max_lora_rank,
            gpu_memory_utilization=gpu_memory_utilization,
            max_model_len=max_model_len,
        )
        self._sampling_params = vllm.SamplingParams
        from persd.llm.render import from_gguf, from_hf_tokenizer

        if gguf_source is not None:
            self.renderer = from_gguf(gguf_source)
        else:
            from transformers import AutoTokenizer

            self.renderer = from_hf_tokenizer(AutoTokenizer.from_pretrained(str(model)), str(model))
        self.lora = LoRARequest(Path(adapter).name, 1, str(adapter)) if adapter else None
        base = name or Path(str(model)).name
        self._model_id = f"{base}+{Path(adapter).name}" if adapter else base
        # What an evaluation report says it scored (with ``backend``).
        self.weights = f"{model}, {dtype}" + (f", + PEFT adapter {adapter}" if adapter else "")

    backend = "vllm"

    @property
    def model_id(self) -> str:
        return self._model_id

    def generate(self, prompts: Sequence[Prompt], params: SamplingParams) -> list[list[Generation]]:
        """All prompts in one vLLM call, as token ids from THE renderer (the trainer's ids:
        vLLM's own chat rendering and tokenizer are never used); vLLM schedules the batch."""
        sp = self._sampling_params(**vllm_sampling_kwargs(params))
        ids = [
            self.renderer.encode(p, first=True)
            if isinstance(p, str)
            else self.renderer.prompt_ids(p)
            for p in prompts
        ]
        done = self.llm.generate(
            [{"prompt_token_ids": i} for i in ids], sp, use_tqdm=False, lora_request=self.lora
        )
        return [_generations(out, params.n) for out in done]

    def close(self) -> None:
        self.__dict__.pop("llm", None)
        import gc

        gc.collect()


def _generations(request_output: Any, n: int) -> list[Generation]:
    tokens_in = len(request_output.prompt_token_ids or ())
    gens = []
    for out in request_output.outputs:
        finish: FinishReason = "length" if out.finish_reason == "length" else "stop"
        gens.append(
            Generation(
                text=out.text,
                tokens_in=tokens_in,
                tokens_out=len(out.token_ids),
                finish_reason=finish,
            )
        )
    return (gens * n)[:n] if len(gens) == 1 else gens
