"""Student on llama.cpp, in process: quantised GGUF weights, one stream at a time.

The fastest way to sample a GGUF model on a small CPU when one sample at a time is enough;
it cannot be trained, so a fine-tuned student reaches it only as a GGUF (LoRA) file.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from persd.errors import PersdError
from persd.llm.base import (
    FinishReason,
    Generation,
    Prompt,
    SamplingParams,
    adapter_label,
)
from persd.llm.extract import answer_complete


@contextlib.contextmanager
def _native_stderr_silenced() -> Iterator[None]:
    """Mute llama.cpp's C-level notices while loading (a LoRA prints one line per tensor even
    with ``verbose=False``); failures still surface as Python exceptions."""
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


class LlamaStudent:
    """A GGUF model in ``llama_cpp.Llama``; ``n`` samples are ``n`` calls with distinct seeds.

    Every sample evaluates its prompt afresh. llama.cpp would reuse the previous prompt's KV
    cache, but then the last prompt token is evaluated alone, in another kernel than the full
    prompt batch: the logits differ in the last bits and a sample at temperature > 0 depends on
    what was sampled before it, so the same seed would not give the same sample.
    """

    # Prompts are decoded one after another (no batching to lose): callers may ask per prompt,
    # with ``stop_when_answered`` set to that task's entry point.
    generates_one_at_a_time = True

    def __init__(
        self,
        path: Path | str,
        *,
        n_ctx: int = 4096,
        threads: int = 1,
        lora_path: Path | str | None = None,
        name: str | None = None,
    ) -> None:
        path = Path(path)
        if not path.is_file():
            raise PersdError(f"{path}: GGUF file not found")
        try:
            from llama_cpp import Llama
        except ImportError:
            raise PersdError(
                "llama-cpp-python is not installed; pip install persd[llama]"
            ) from None
        # One thread by default: on a 2-core machine two threads collapse as soon as anything
        # else wants the CPU (the sandbox, a second model).
        kw: dict[str, Any] = {"lora_path": str(lora_path)} if lora_path else {}
        try:
            with _native_stderr_silenced():
                self.llm = Llama(
                    model_path=str(path),
                    n_ctx=n_ctx,
                    n_threads=threads,
                    n_threads_batch=threads,
                    verbose=False,
                    **kw,
                )
        except ValueError as e:  # llama_cpp raises ValueError for unreadable models/adapters
            raise PersdError(f"{lora_path or path}: llama.cpp cannot load it: {e}") from None
        from persd.llm.render import from_llama

        # THE renderer: the ids this student is sampled from are the ids it is trained on.
        self.renderer = from_llama(self.llm, str(path))
        base = name or path.name.removesuffix(".gguf")
        self._model_id = f"{base}+{adapter_label(lora_path)}" if lora_path else base

    @property
    def model_id(self) -> str:
        return self._model_id

    def _one(self, prompt: Prompt, params: SamplingParams, seed: int) -> Generation:
        kw: dict[str, Any] = {
            "max_tokens": params.max_new_tokens,
            "temperature": params.temperature,  # 0: llama.cpp samples greedily
            "top_p": params.top_p,
            "top_k": 0,  # off (0 means the whole vocabulary), and so is min_p below:
            "min_p": 0.0,  # only temperature and top_p shape sampling, as in every backend
            "repeat_penalty": 1.0,
            "stop": list(params.stop) or None,
            "seed": seed,
        }
        self.llm.reset()  # reproducible samples (see the class docstring)
        ids = self._ids(prompt)
        if params.stop_when_answered and not isinstance(prompt, str):
            return self._until_answered(ids, kw, params.stop_when_answered)
        reply = self.llm.create_completion(ids, **kw)
        reason = reply["choices"][0]["finish_reason"]
        finish: FinishReason = "length" if reason == "length" else "stop"
        return Generation(
            text=reply["choices"][0]["text"],
            tokens_in=len(ids),
            tokens_out=reply["usage"]["completion_tokens"],
            finish_reason=finish,
        )

    def _ids(self, prompt: Prompt) -> list[int]:
        """The prompt's token ids, from the renderer training uses (llama.cpp's chat handler
        rendered the same template; rendering here makes the match hold by construction).
        Generation ends at the vocabulary's end-of-generation tokens (``<|im_end|>``)."""
        return self.renderer.ids(prompt)

    def _until_answered(self, ids: list[int], kw: dict[str, Any], entry_point: str) -> Generation:
        """A reply streamed token by token, stopped once its program is final
        (``extract.answer_complete``): the same tokens up to there as without streaming."""
        stream = self.llm.create_completion(ids, stream=True, **kw)
        text, reason = "", "length"
        try:
            for chunk in stream:
                choice = chunk["choices"][0]
                piece = choice.get("text") or ""
                text += piece
                if choice.get("finish_reason"):
                    reason = choice["finish_reason"]
                if "`" in piece and answer_complete(text, entry_point):
                    reason = "stop"
                    break
        finally:
            stream.close()
        return Generation(
            text=text,
            tokens_in=len(ids),
            # The streamed pieces re-tokenized: the generated count (streaming gives no usage).
            tokens_out=len(self.llm.tokenize(text.encode(), add_bos=False, special=False)),
            finish_reason="length" if reason == "length" else "stop",
        )

    def generate(self, prompts: Sequence[Prompt], params: SamplingParams) -> list[list[Generation]]:
        """``params.n`` samples per prompt; sample ``k`` uses seed ``params.seed + k``."""
        return [[self._one(p, params, params.seed + k) for k in range(params.n)] for p in prompts]

    def close(self) -> None:
        self.llm.close()
