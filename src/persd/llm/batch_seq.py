"""One sequence of a batch (``persd.llm.batch``): what is asked, its state while it decodes,
its sampler, and how its tokens become text and end."""

from __future__ import annotations

import ctypes
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from persd.llm.base import FinishReason, Generation, SamplingParams
from persd.llm.extract import answer_complete
from persd.llm.lookup import PromptLookup


@dataclass(frozen=True)
class Request:
    """One sample to draw: prompt ids, how to sample, and the seed of its sampler."""

    ids: tuple[int, ...]
    params: SamplingParams
    seed: int


@dataclass(eq=False)
class Ticket:
    """A request handed to ``BatchDecoder.serve`` from another thread: ``reply`` is called
    once, on the decoding thread, with the generation or the exception that ended decoding."""

    request: Request
    reply: Callable[[Generation | BaseException], None]


@dataclass
class InFlight:
    """A request in flight on one stream of the context."""

    index: int  # the caller's key: position in its list, or a ticket's id
    request: Request
    stream: int
    sampler: Any
    max_new: int
    pos: int = 0
    out: bytearray = field(default_factory=bytearray)
    n_out: int = 0
    last: int = -1  # the token sampled last: fed at the next step
    fresh: list[int] = field(default_factory=list)  # tokens sampled this step, in order
    draft: list[int] = field(default_factory=list)  # guessed tokens fed after ``last``
    lookup: PromptLookup | None = None
    start: int = 0  # prompt tokens copied from the shared-prefix stream, not decoded


def shared_length(a: Sequence[int], b: Sequence[int]) -> int:
    """The length of the longest common prefix of ``a`` and ``b``."""
    n = 0
    for x, y in zip(a, b, strict=False):  # the shorter one ends the prefix
        if x != y:
            break
        n += 1
    return n


def common_prefix(requests: Sequence[Request]) -> int:
    """How many leading tokens every request's prompt shares, leaving each at least its last
    token of its own (the row whose logits give its first sample)."""
    if not requests:
        return 0
    first = requests[0].ids
    n = min(len(r.ids) for r in requests) - 1
    for r in requests[1:]:
        n = shared_length(first[:n], r.ids)
    return max(n, 0)


def make_sampler(llama_cpp: Any, params: SamplingParams, seed: int) -> Any:
    """Greedy at temperature 0; else temperature, then nucleus, then a seeded draw (the order
    transformers and vLLM apply them in)."""
    chain = llama_cpp.llama_sampler_chain_init(llama_cpp.llama_sampler_chain_default_params())
    if params.temperature == 0:
        llama_cpp.llama_sampler_chain_add(chain, llama_cpp.llama_sampler_init_greedy())
        return chain
    llama_cpp.llama_sampler_chain_add(chain, llama_cpp.llama_sampler_init_temp(params.temperature))
    if params.top_p < 1.0:
        llama_cpp.llama_sampler_chain_add(
            chain, llama_cpp.llama_sampler_init_top_p(params.top_p, 1)
        )
    llama_cpp.llama_sampler_chain_add(chain, llama_cpp.llama_sampler_init_dist(seed & 0xFFFFFFFF))
    return chain


class SequenceText:
    """A sequence's output as text: the bytes of each sampled token, and the stop conditions
    (end of generation, a stop string, a finished answer, the token budget)."""

    def __init__(self, lib: Any, vocab: Any) -> None:
        self._lib, self._vocab = lib, vocab
        self._pieces: dict[int, bytes] = {}

    def piece(self, token: int) -> bytes:
        piece = self._pieces.get(token)
        if piece is None:
            buf = ctypes.create_string_buffer(64)
            n = self._lib.llama_token_to_piece(self._vocab, token, buf, len(buf), 0, False)
            if n < 0:  # a longer piece: -n is its length
                buf = ctypes.create_string_buffer(-n)
                n = self._lib.llama_token_to_piece(self._vocab, token, buf, len(buf), 0, False)
            piece = self._pieces[token] = buf.raw[:n]
        return piece

    def take(self, seq: InFlight, tok: int) -> Generation | None:
        """Append one sampled token; the generation if it ends the sequence."""
        if self._lib.llama_vocab_is_eog(self._vocab, tok):
            return _done(seq, seq.out.decode("utf-8", errors="replace"), "stop")
        p = seq.request.params
        piece = self.piece(tok)
        seq.out += piece
        seq.n_out += 1
        text = None
        if p.stop:
            text = seq.out.decode("utf-8", errors="replace")
            cut = min((i for i in (text.find(s) for s in p.stop) if i >= 0), default=-1)
            if cut >= 0:
                return _done(seq, text[:cut], "stop")
        if p.stop_when_answered and (b"`" in piece or b"\n" in piece):
            text = text or seq.out.decode("utf-8", errors="replace")
            if answer_complete(text, p.stop_when_answered):
                return _done(seq, text, "stop")
        if seq.n_out >= seq.max_new:
            return _done(seq, text or seq.out.decode("utf-8", errors="replace"), "length")
        return None


def _done(seq: InFlight, text: str, reason: FinishReason) -> Generation:
    return Generation(
        text=text,
        tokens_in=len(seq.request.ids),
        tokens_out=seq.n_out,
        finish_reason=reason,
    )
