"""Many sequences at once on llama.cpp: continuous batching over the low-level API.

Decoding one sequence on a CPU is bound by reading every weight from memory once per token.
Decoding ``parallel`` sequences in one ``llama_decode`` call reads them once for all of them,
so the aggregate rate grows with the batch until the matrix products, not the memory, are the
limit (docs/BENCHMARKS.md has the numbers). Each sequence has its own KV cells (a context of
``parallel`` streams), its own sampler and seed, and its own stop conditions; a sequence that
finishes frees its stream for the next waiting prompt, whose prompt is decoded in the same call
as the others' next tokens.

Reproducible: requests are admitted in order and every step is a deterministic function of
the requests, so the same requests, settings and seeds give the same samples on the same
machine. Where every matrix product computes each row of the batch on its own (the tests'
SmolLM2), a sample's tokens do not depend on the other prompts in its batch. The default
student's repacked Q4_K matrices multiply rows in groups of four, so there the last bits of a
row's logits, and now and then a greedy token at a near tie, depend on where the row sits in
the batch (measured in docs/BENCHMARKS.md), as they differ from a single-stream run.
"""

from __future__ import annotations

import ctypes
import heapq
import queue
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

from persd.errors import PersdError
from persd.llm.base import Generation
from persd.llm.batch_seq import InFlight, Request, SequenceText, Ticket, common_prefix, make_sampler
from persd.llm.lookup import PromptLookup
from persd.llm.threads import ThreadChooser

# Imported from here by callers and tests: the decoder's vocabulary.
__all__ = ["BatchDecoder", "PromptLookup", "Request", "ThreadChooser", "Ticket", "common_prefix"]


class BatchDecoder:
    """A llama.cpp context of ``parallel`` streams over an already loaded model (and LoRA).

    ``model`` is a ``llama_cpp.Llama``: it loaded the weights and the adapter and tokenizes;
    this class only decodes. ``ctx_per_seq`` bounds one sequence: prompt plus new tokens.

    ``share_prefix``: the prompts of one ``run`` usually open alike (the chat template's system
    turn and the task instruction: 44 to 48 tokens, a quarter of a HumanEval prompt and half
    of an MBPP one). Those tokens are decoded once into one more KV stream, kept there for the
    next ``run`` with the same opening, and copied into each sequence's stream (a copy of its
    cells, bit for bit) instead of being decoded again per sequence. Where the kernels compute
    each row on its own, the copied cells equal the ones a sequence would have decoded itself
    and the samples do not change (tested); on the default student the batches' shapes change,
    with the effect any change of batch shape has (module docstring).
    """

    def __init__(
        self,
        model: Any,
        *,
        parallel: int,
        ctx_per_seq: int,
        threads: int,
        batch_tokens: int = 512,
        lookup: int = 0,
        lookup_ngram: int = 3,
        share_prefix: bool = True,
        min_prefix: int = 8,
    ) -> None:
        import llama_cpp

        self._lib = llama_cpp
        self.parallel, self.ctx_per_seq = parallel, ctx_per_seq
        self.share_prefix, self.min_prefix = share_prefix, min_prefix
        # The stream after the sequences' own holds the shared prefix (``share_prefix``).
        self._pstream = parallel if share_prefix else -1  # -1: the context has no such stream
        self._prefix: tuple[int, ...] = ()  # the tokens whose cells that stream holds
        streams = parallel + 1 if share_prefix else parallel
        self.lookup, self.lookup_ngram = lookup, lookup_ngram
        # Every in-flight sequence's rows (its last token and its draft) go in the first call.
        batch_tokens = max(batch_tokens, parallel * (1 + lookup))
        params = llama_cpp.llama_context_default_params()
        params.n_ctx = streams * ctx_per_seq
        params.n_seq_max = streams
        params.kv_unified = False  # one KV stream per sequence: attention reads only its own
        params.n_batch = batch_tokens
        params.n_ubatch = batch_tokens
        params.n_threads = threads
        params.n_threads_batch = threads
        params.no_perf = True
        # As llama-cpp-python's own context: the same attention kernels as its single-stream
        # path (flash attention made no difference to speed here: docs/BENCHMARKS.md).
        params.flash_attn_type = 0
        self._model = model
        self.ctx = llama_cpp.llama_init_from_model(model._model.model, params)
        if not self.ctx:
            raise PersdError(
                f"llama.cpp could not make a context of {parallel} x {ctx_per_seq} tokens "
                "(student.parallel, student.n_ctx)"
            )
        adapter = getattr(model, "_lora_adapter", None)
        if adapter is not None:  # the adapter belongs to the model; each context applies it
            adapters = (llama_cpp.llama_adapter_lora_p_ctypes * 1)(adapter)
            scales = (ctypes.c_float * 1)(getattr(model, "lora_scale", 1.0))
            if llama_cpp.llama_set_adapters_lora(self.ctx, adapters, 1, scales):
                raise PersdError("llama.cpp could not apply the LoRA adapter to the batch context")
        self.n_batch = int(params.n_batch)
        self._batch = llama_cpp.llama_batch_init(self.n_batch, 0, 1)
        self._vocab = llama_cpp.llama_model_get_vocab(model._model.model)
        self._mem = llama_cpp.llama_get_memory(self.ctx)
        self._text = SequenceText(llama_cpp, self._vocab)
        self.threads = ThreadChooser(llama_cpp, self.ctx, threads)
        self.drafted = self.accepted = 0  # draft tokens fed, and kept (``lookup`` > 0)
        # Prompt tokens decoded (the shared prefix once) and copied from the prefix stream.
        self.prompt_decoded = self.prompt_copied = 0

    # -- the loop --------------------------------------------------------------------------

    def run(
        self,
        requests: Sequence[Request],
        on_done: Callable[[int, Generation], None] | None = None,
    ) -> list[Generation]:
        """Every request's generation, in request order; ``on_done(i, gen)`` as each ends."""
        for r in requests:
            self.check(r)
        start = self._prepare_prefix(requests)
        results: list[Generation | None] = [None] * len(requests)
        batch: list[tuple[int, Request]] | None = list(enumerate(requests))

        def pull(_block: bool) -> list[tuple[int, Request]] | None:
            nonlocal batch
            out, batch = batch, None  # everything at once, then the source is closed
            return out

        def done(i: int, gen: Generation) -> None:
            results[i] = gen
            if on_done is not None:
                on_done(i, gen)

        self._loop(pull, done, start)
        assert all(g is not None for g in results)  # the loop ends only when all are done
        return results  # type: ignore[return-value]

    def serve(self, inbox: queue.Queue[Ticket | None]) -> None:
        """Decode tickets as they arrive until a ``None`` is read (a server's loop).

        A ticket that arrives while others are decoding joins them at the next step, so a
        server with many clients keeps all ``parallel`` streams busy. If decoding fails, every
        ticket in flight or waiting is answered with the error, and the error is raised."""
        tickets: dict[int, Ticket] = {}
        closed = False

        def pull(block: bool) -> list[tuple[int, Request]] | None:
            nonlocal closed
            got: list[Ticket | None] = []
            if not closed:
                try:
                    got.append(inbox.get(block=block))
                    while True:
                        got.append(inbox.get_nowait())
                except queue.Empty:
                    pass
            out = []
            for t in got:
                if t is None:
                    closed = True
                else:
                    tickets[id(t)] = t
                    out.append((id(t), t.request))
            return None if closed and not out else out

        def done(key: int, gen: Generation) -> None:
            tickets.pop(key).reply(gen)

        try:
            self._loop(pull, done)
        except BaseException as e:
            for t in tickets.values():
                t.reply(e)
            raise

    def check(self, r: Request) -> None:
        """Raise unless the request's prompt fits one sequence's context."""
        if len(r.ids) >= self.ctx_per_seq:
            raise PersdError(
                f"a prompt of {len(r.ids)} tokens does not fit the context of "
                f"{self.ctx_per_seq} per sequence (student.n_ctx)"
            )

    def _prepare_prefix(self, requests: Sequence[Request]) -> int:
        """Make the prefix stream hold the opening all ``requests`` share; how many tokens of
        it each sequence copies (0: none, each decodes its whole prompt).

        A second ``run`` with exactly the same opening (the next chunk of an evaluation, as a
        rule) decodes nothing. Any other opening is decoded afresh, whole, in one batch, never
        by trimming or extending what the stream holds: a cell's values depend on the shape
        of the batch that computed it, so an extended prefix would carry the history of the
        process into every sample, and an evaluation resumed from its journal would not give
        the texts of an uninterrupted one (measured: 38 of 128 MBPP texts, docs/RESULTS.md)."""
        usable = self.share_prefix and self._pstream >= 0 and len(requests) > 1
        n = common_prefix(requests) if usable else 0
        if n < self.min_prefix:
            return 0
        want = requests[0].ids[:n]
        if tuple(want) == self._prefix:
            return n
        self.drop_prefix()
        for at in range(0, n, self.n_batch):
            chunk = want[at : at + self.n_batch]
            for j, tok in enumerate(chunk):
                self._put(j, tok, at + j, self._pstream, False)
            self._batch.n_tokens = len(chunk)
            rc = self._lib.llama_decode(self.ctx, self._batch)
            if rc != 0:
                self.drop_prefix()
                raise PersdError(f"llama.cpp decode failed (code {rc}) on the shared prefix")
            self.prompt_decoded += len(chunk)
        self._prefix = want
        return n

    def drop_prefix(self) -> None:
        """Empty the prefix stream: the next ``run`` decodes its shared opening afresh."""
        if self._pstream >= 0:
            self._lib.llama_memory_seq_rm(self._mem, self._pstream, -1, -1)
        self._prefix = ()

    def _loop(
        self,
        pull: Callable[[bool], list[tuple[int, Request]] | None],
        done: Callable[[int, Generation], None],
        start: int = 0,
    ) -> None:
        """Continuous batching: ``pull(block)`` gives new ``(key, request)`` pairs (blocking
        only when nothing is in flight), or None once no more will come; ``done(key, gen)``
        as each sequence ends. Returns when the source is closed and every sequence is done.
        Each sequence takes its first ``start`` prompt tokens from the prefix stream."""
        lib = self._lib
        waiting: deque[tuple[int, Request]] = deque()
        free = list(range(self.parallel))  # a heap: the lowest free stream is taken first
        active: list[InFlight] = []
        open_ = True
        try:
            while True:
                if open_:
                    got = pull(not (waiting or active))
                    if got is None:
                        open_ = False
                    else:
                        waiting.extend(got)
                if not (waiting or active):
                    if open_:
                        continue
                    return
                new: list[InFlight] = []
                budget = self.n_batch - len(active)  # prompt tokens this step, roughly
                while waiting and free and budget > 0:
                    key, r = waiting.popleft()
                    new.append(
                        InFlight(
                            index=key,
                            request=r,
                            stream=heapq.heappop(free),
                            sampler=make_sampler(lib, r.params, r.seed),
                            max_new=min(r.params.max_new_tokens, self.ctx_per_seq - len(r.ids)),
                            lookup=PromptLookup(r.ids, self.lookup_ngram) if self.lookup else None,
                            start=start,
                        )
                    )
                    budget -= len(r.ids) - start
                self._compact(active, new, free)
                self._step(active, new)
                still = []
                for seq in active + new:
                    gen = self._advance(seq)
                    if gen is None:
                        still.append(seq)
                        continue
                    self._release(seq)
                    heapq.heappush(free, seq.stream)
                    done(seq.index, gen)
                active = still
        finally:
            for seq in active:
                self._release(seq)

    def _compact(self, active: list[InFlight], new: list[InFlight], free: list[int]) -> None:
        """Keep the sequences in flight on streams ``0..k-1``: move the highest to the lowest
        free stream while there is a hole below it.

        With one KV stream per sequence, llama.cpp splits a batch into one pass over the
        weights per run of consecutive stream ids (its equal split is ``sequential``), so
        eight sequences on scattered streams cost up to eight single-sequence steps: measured
        on HumanEval prompts, 8 rows took as long as 16 once the batch had drained. A move
        copies the stream's KV cells (``llama_memory_seq_cp`` across streams copies the
        buffer, bit for bit, at the next decode), so the sequence's tokens do not change."""
        while free and (active or new):
            seq = max(active + new, key=lambda q: q.stream)
            if free[0] > seq.stream:
                return
            dst = heapq.heappop(free)
            if seq.pos:  # its cells exist: copy them over, then free the old stream
                self._lib.llama_memory_seq_cp(self._mem, seq.stream, dst, -1, -1)
                self._lib.llama_memory_seq_rm(self._mem, seq.stream, -1, -1)
            heapq.heappush(free, seq.stream)
            seq.stream = dst

    def _release(self, seq: InFlight) -> None:
        self._lib.llama_sampler_free(seq.sampler)
        self._lib.llama_memory_seq_rm(self._mem, seq.stream, -1, -1)

    def _step(self, active: list[InFlight], new: list[InFlight]) -> None:
        """Feed each active sequence's last token and its draft, then every new prompt, in as
        many ``llama_decode`` calls as the batch size needs; sample each sequence's next
        tokens into ``fresh``: one from a prompt's final row, and from an active sequence's
        rows in order while each sampled token equals the draft token fed after it."""
        b = self._batch
        # In stream order: llama.cpp's split of a batch over KV streams cuts it wherever the
        # next row's stream is not the next stream (measured: 16 rows in arrival order
        # cost 1.6 x the same rows in stream order once prompts had been re-admitted).
        rows: list[tuple[InFlight, int, int, bool]] = []
        for seq in sorted(active, key=lambda q: q.stream):
            rows.append((seq, seq.last, seq.pos, True))
            rows += [(seq, t, seq.pos + 1 + i, True) for i, t in enumerate(seq.draft)]
        for seq in new:
            if seq.start:  # the whole stream's cells, copied at the next decode
                self._lib.llama_memory_seq_cp(self._mem, self._pstream, seq.stream, -1, -1)
                self.prompt_copied += seq.start
            ids = seq.request.ids
            last = len(ids) - 1
            rows += [(seq, ids[p], p, p == last) for p in range(seq.start, len(ids))]
            self.prompt_decoded += len(ids) - seq.start
        for start in range(0, len(rows), self.n_batch):
            chunk = rows[start : start + self.n_batch]
            sample: dict[int, tuple[InFlight, list[int]]] = {}  # id(seq) -> its logit rows
            for j, (seq, tok, pos, want) in enumerate(chunk):
                self._put(j, tok, pos, seq.stream, want)
                if want:
                    sample.setdefault(id(seq), (seq, []))[1].append(j)
            b.n_tokens = len(chunk)
            threads = self.threads.pick()
            started = time.perf_counter()
            rc = self._lib.llama_decode(self.ctx, b)
            self.threads.record(threads, time.perf_counter() - started, len(chunk))
            if rc != 0:
                raise PersdError(f"llama.cpp decode failed (code {rc}) with {len(chunk)} tokens")
            for seq, js in sample.values():  # before the next call overwrites the logits
                seq.fresh = self._verify(seq, js)
        for seq in active:
            kept = len(seq.fresh)  # ``last`` and the kept draft tokens are in the cache now
            self.drafted += len(seq.draft)
            self.accepted += kept - 1
            if kept <= len(seq.draft):  # a draft token was refused: drop its cells and after
                self._lib.llama_memory_seq_rm(self._mem, seq.stream, seq.pos + kept, -1)
            seq.pos += kept
        for seq in new:
            seq.pos = len(seq.request.ids)

    def _put(self, j: int, token: int, pos: int, stream: int, logits: bool) -> None:
        """Row ``j`` of the batch: ``token`` at ``pos`` of ``stream``, with its logits or not."""
        b = self._batch
        b.token[j] = token
        b.pos[j] = pos
        b.n_seq_id[j] = 1
        b.seq_id[j][0] = stream
        b.logits[j] = logits

    def _verify(self, seq: InFlight, rows: list[int]) -> list[int]:
        """Sample at each row in turn; stop after the first token that differs from the draft
        token fed at the next row (or after the last row)."""
        out: list[int] = []
        for i, j in enumerate(rows):
            tok = int(self._lib.llama_sampler_sample(seq.sampler, self.ctx, j))
            out.append(tok)
            if i >= len(seq.draft) or tok != seq.draft[i]:
                break
        return out

    def _advance(self, seq: InFlight) -> Generation | None:
        """Take the tokens just sampled, in order; the sequence's generation if one ended it,
        else the next draft is guessed and ``seq.last`` is fed at the next step."""
        for tok in seq.fresh:
            gen = self._text.take(seq, tok)
            if gen is not None:
                return gen
        seq.last = seq.fresh[-1]
        seq.draft = []
        if seq.lookup is not None:
            seq.lookup.extend(seq.fresh)
            room = min(seq.max_new - seq.n_out, self.ctx_per_seq - seq.pos) - 1
            seq.draft = seq.lookup.draft(min(self.lookup, room))
        return None

    def close(self) -> None:
        if self.ctx:
            self._lib.llama_batch_free(self._batch)
            self._lib.llama_free(self.ctx)
            self.ctx = None
