"""Student on llama.cpp, in process: quantised GGUF weights, many sequences at a time.

The fastest way to sample a GGUF model on a CPU; it cannot be trained, so a fine-tuned
student reaches it only as a GGUF (LoRA) file.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from persd.errors import PersdError
from persd.llm.base import Generation, Prompt, SamplingParams, Student, adapter_label
from persd.llm.batch import BatchDecoder, Request
from persd.llm.native import native_stderr_silenced


class LlamaStudent(Student):
    """A GGUF model in llama.cpp, sampled ``parallel`` sequences at a time (``batch.py``).

    Sample ``k`` of a prompt uses seed ``params.seed + k`` in its own sampler, so the same
    requests give the same samples on the same machine (where a sample can depend on its batch
    neighbours: ``batch.py``'s module docstring). The opening the prompts of one call share is
    decoded once and copied into each sequence's KV stream (``share_prefix``); the rest of each
    prompt is its own.
    """

    def __init__(
        self,
        path: Path | str,
        *,
        n_ctx: int = 2048,
        parallel: int = 32,
        threads: int | None = None,
        lookup: int = 0,
        q8_serving: bool = True,
        share_prefix: bool = True,
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
        # All cores by default: batched decoding is bound by arithmetic, which a second
        # thread doubles (docs/BENCHMARKS.md), where one stream was bound by memory.
        threads = threads or os.cpu_count() or 1
        kw: dict[str, Any] = {"lora_path": str(lora_path)} if lora_path else {}
        served = path
        if q8_serving:  # the same weights in faster kernels (gguf_q8.py); the file is cached
            from persd.llm.gguf_q8 import q8_copy
            from persd.llm.registry import default_cache_dir

            served = q8_copy(path, default_cache_dir() / "serving")
        try:
            with native_stderr_silenced():
                # This object loads the weights (and adapter) and tokenizes; its own context
                # is a small one nobody decodes in: the batch decoder makes the real one.
                self.llm = Llama(
                    model_path=str(served),
                    n_ctx=256,
                    n_threads=threads,
                    n_threads_batch=threads,
                    verbose=False,
                    **kw,
                )
                self.decoder = BatchDecoder(
                    self.llm,
                    parallel=parallel,
                    ctx_per_seq=n_ctx,
                    threads=threads,
                    lookup=lookup,
                    share_prefix=share_prefix,
                )
        except ValueError as e:  # llama_cpp raises ValueError for unreadable models/adapters
            raise PersdError(f"{lora_path or path}: llama.cpp cannot load it: {e}") from None
        from persd.llm.render import from_llama

        # THE renderer: the ids this student is sampled from are the ids it is trained on.
        self.renderer = from_llama(self.llm, str(path))
        self.parallel = parallel
        self.weights = str(path) + (", Q5_0 served as Q8_0" if served != path else "")
        if lora_path:
            self.weights += f", + GGUF LoRA {lora_path}"
        base = name or path.name.removesuffix(".gguf")
        self._model_id = f"{base}+{adapter_label(lora_path)}" if lora_path else base

    # A reply may end once its program is final (``SamplingParams.stop_when_answered``).
    stops_when_answered = True
    backend = "llama_cpp"  # with ``weights``: what an evaluation report says it scored

    @property
    def model_id(self) -> str:
        return self._model_id

    def generate(self, prompts: Sequence[Prompt], params: SamplingParams) -> list[list[Generation]]:
        """``params.n`` samples per prompt; sample ``k`` uses seed ``params.seed + k``."""
        return self.generate_each(prompts, [params] * len(prompts))

    def generate_each(
        self,
        prompts: Sequence[Prompt],
        params: Sequence[SamplingParams],
        on_done: Callable[[int], None] | None = None,
    ) -> list[list[Generation]]:
        """Every prompt under its own settings, all decoded together (see base.generate_each)."""
        requests, owner = [], []
        for i, (prompt, p) in enumerate(zip(prompts, params, strict=True)):
            ids = tuple(self.renderer.ids(prompt))
            for k in range(p.n):
                requests.append(Request(ids, p, p.seed + k))
                owner.append(i)
        left = [p.n for p in params]

        def finished(j: int, _gen: Generation) -> None:
            i = owner[j]
            left[i] -= 1
            if left[i] == 0 and on_done is not None:
                on_done(i)

        gens = self.decoder.run(requests, finished)
        out: list[list[Generation]] = [[] for _ in prompts]
        for i, gen in zip(owner, gens, strict=True):
            out[i].append(gen)
        return out

    def close(self) -> None:
        self.decoder.close()
        self.llm.close()
