"""Student on vLLM (CUDA machines): continuous batching, LoRA adapters per request.

Optional: ``import persd.llm.student_vllm`` works without vLLM; constructing ``VLLMStudent``
then raises one clear line. The parameter mapping is a pure function, tested without vLLM.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from persd.errors import PersdError
from persd.llm.base import FinishReason, Generation, Prompt, SamplingParams

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


class VLLMStudent:
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
    ) -> None:
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
        self.lora = LoRARequest(Path(adapter).name, 1, str(adapter)) if adapter else None
        base = name or Path(str(model)).name
        self._model_id = f"{base}+{Path(adapter).name}" if adapter else base

    @property
    def model_id(self) -> str:
        return self._model_id

    def generate(self, prompts: Sequence[Prompt], params: SamplingParams) -> list[list[Generation]]:
        """All prompts in one vLLM call per kind (raw text, chat): vLLM schedules the batch."""
        sp = self._sampling_params(**vllm_sampling_kwargs(params))
        raw = [(i, p) for i, p in enumerate(prompts) if isinstance(p, str)]
        chat = [(i, p) for i, p in enumerate(prompts) if not isinstance(p, str)]
        outputs: dict[int, Any] = {}
        if raw:
            texts = [p for _, p in raw]
            done = self.llm.generate(texts, sp, use_tqdm=False, lora_request=self.lora)
            outputs.update(zip((i for i, _ in raw), done, strict=True))
        if chat:
            conversations = [[m.model_dump() for m in p] for _, p in chat]
            done = self.llm.chat(conversations, sp, use_tqdm=False, lora_request=self.lora)
            outputs.update(zip((i for i, _ in chat), done, strict=True))
        return [_generations(outputs[i], params.n) for i in range(len(prompts))]

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
