"""THE chat renderer: the text and token ids a conversation becomes, for training and serving.

The student must be trained on the token ids it is served. Before this module the trainer
tokenised rows with the transformers tokenizer rebuilt from the GGUF, while llama.cpp served
prompts tokenised by its own tokenizer; the two disagree on whitespace runs for some
vocabularies (SmolLM2: "\\n    0" is ``["\\n   ", " ", "0"]`` to one and ``["\\n    ", "0"]`` to
the other, in 66 of 352 training and HumanEval texts), so the model learnt on token sequences it
never met when sampled. Now every path asks one ``ChatRenderer`` for one model:

- the template is the model's own (the GGUF's ``tokenizer.chat_template``, or the HF
  tokenizer's), rendered here by one Jinja function;
- the tokenizer is the one the serving backend uses: llama.cpp's vocabulary for a GGUF model
  (training on its dequantised weights included), the HF tokenizer for a transformers model.

Training rows are prompt ids + completion ids, each tokenised alone: the prompt is exactly what
generation starts from, so no BPE merge across the boundary can hide in the training string.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import cache
from pathlib import Path
from typing import Any

from persd.errors import PersdError
from persd.llm.base import Message, Prompt

Encode = Callable[[str, bool], list[int]]  # (text, at the start of a sequence) -> ids


class RenderError(PersdError):
    pass


@cache
def _environment() -> Any:
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message: str) -> None:
        raise RenderError(f"chat template: {message}")

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.globals["raise_exception"] = raise_exception
    return env


class ChatRenderer:
    """One model's chat template and tokenizer. ``encode(text, first)`` must add what the
    model puts at the start of a sequence (a BOS, where its vocabulary asks for one) only when
    ``first`` is true."""

    def __init__(
        self, template: str | None, *, bos_token: str, eos_token: str, encode: Encode, source: str
    ) -> None:
        self._template = _environment().from_string(template) if template else None
        self.bos_token, self.eos_token, self.source = bos_token, eos_token, source
        self._encode = encode

    def encode(self, text: str, *, first: bool) -> list[int]:
        """Plain text (a base model's prompt or completion) in the serving tokenizer's ids."""
        return self._encode(text, first)

    def text(self, messages: Sequence[Message], *, generation_prompt: bool) -> str:
        if self._template is None:
            raise RenderError(f"{self.source}: the model has no chat template; use chat: false")
        return self._template.render(
            messages=[m.model_dump() for m in messages],
            add_generation_prompt=generation_prompt,
            bos_token=self.bos_token,
            eos_token=self.eos_token,
        )

    def prompt_ids(self, messages: Sequence[Message]) -> list[int]:
        """What generation starts from: the conversation and the assistant turn's opening."""
        return self._encode(self.text(messages, generation_prompt=True), True)

    def ids(self, prompt: Prompt) -> list[int]:
        """What a backend feeds the model for a student prompt: a chat conversation rendered
        with the generation prompt, or a base model's raw text."""
        if isinstance(prompt, str):
            return self.encode(prompt, first=True)
        return self.prompt_ids(prompt)

    def completion_text(self, messages: Sequence[Message], completion: str) -> str:
        """What the template writes after the prompt for an assistant reply ``completion``:
        the reply and its end-of-turn (which the model must learn, to stop)."""
        prompt = self.text(messages, generation_prompt=True)
        reply = Message(role="assistant", content=completion)
        full = self.text([*messages, reply], generation_prompt=False)
        if not full.startswith(prompt):
            raise RenderError(
                f"{self.source}: the chat template renders a conversation with a reply that does "
                "not start with the same conversation's prompt; rows cannot be split there"
            )
        return full[len(prompt) :]

    def row_ids(self, messages: Sequence[Message], completion: str) -> tuple[list[int], int]:
        """(ids, prompt length): a training row, prompt and completion tokenised apart."""
        prompt = self.prompt_ids(messages)
        return prompt + self._encode(self.completion_text(messages, completion), False), len(prompt)


def from_llama(llm: Any, source: str) -> ChatRenderer:
    """For a loaded ``llama_cpp.Llama`` (a full model or ``vocab_only``): the GGUF's template
    and llama.cpp's own tokenizer, the ones ``create_chat_completion`` would use."""
    template = llm.metadata.get("tokenizer.chat_template")  # None: base prompts only

    def token_text(token: int) -> str:
        return llm._model.token_get_text(token) if token >= 0 else ""

    def encode(text: str, first: bool) -> list[int]:
        # add_bos: llama.cpp adds one only where the vocabulary asks for it.
        return llm.tokenize(text.encode("utf-8"), add_bos=first, special=True)

    return ChatRenderer(
        template,
        bos_token=token_text(llm.token_bos()),
        eos_token=token_text(llm.token_eos()),
        encode=encode,
        source=source,
    )


def from_gguf(path: Path | str) -> ChatRenderer:
    """The renderer of a GGUF model, from its vocabulary alone (no weights are loaded)."""
    try:
        from llama_cpp import Llama
    except ImportError:
        raise RenderError(
            f"{path}: llama-cpp-python is needed to tokenise for this GGUF model exactly as "
            "llama.cpp serves it; pip install persd[llama]"
        ) from None
    from persd.llm.native import native_stderr_silenced

    with native_stderr_silenced():
        llm = Llama(model_path=str(path), vocab_only=True, verbose=False)
    return from_llama(llm, str(path))


def from_hf_tokenizer(tokenizer: Any, source: str) -> ChatRenderer:
    """For a transformers model: its tokenizer's template and the tokenizer itself."""

    def encode(text: str, first: bool) -> list[int]:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        bos = tokenizer.bos_token_id
        wants_bos = first and getattr(tokenizer, "add_bos_token", False) and bos is not None
        return [bos, *ids] if wants_bos and ids[:1] != [bos] else ids

    return ChatRenderer(
        tokenizer.chat_template or None,
        bos_token=tokenizer.bos_token or "",
        eos_token=tokenizer.eos_token or "",
        encode=encode,
        source=source,
    )


def renderer_for(model: str) -> ChatRenderer:
    """The renderer for a student named as ``persd train`` / ``student.model`` name it: a
    registry name or .gguf path (llama.cpp's tokenizer), else an HF directory or hub id."""
    from persd.llm.registry import resolve_model

    resolved = resolve_model(model)
    if resolved.kind == "gguf":
        assert resolved.path is not None
        return from_gguf(resolved.path)
    from transformers import AutoTokenizer

    ref = str(resolved.path) if resolved.path is not None else str(resolved.hub_id)
    return from_hf_tokenizer(AutoTokenizer.from_pretrained(ref), ref)
