"""Batched decoding on llama.cpp (llm/batch.py) with the real SmolLM2-135M GGUF: samples per
prompt, seeds, stop conditions, streams freed and reused, and agreement with one stream."""

from __future__ import annotations

from pathlib import Path

import pytest

from persd.errors import PersdError
from persd.llm.base import Message, SamplingParams
from persd.prompts import student_prompt
from persd.tasks import load_humaneval

pytest.importorskip("llama_cpp")

from persd.llm.batch import ThreadChooser  # noqa: E402
from persd.llm.student_llama import LlamaStudent  # noqa: E402

TASKS = load_humaneval()[:4]
PROMPTS = [student_prompt(t, chat=True) for t in TASKS]


@pytest.fixture(scope="module")
def batched(smollm2_gguf: Path):
    student = LlamaStudent(smollm2_gguf, parallel=4, n_ctx=1024, threads=2)
    yield student
    student.close()


@pytest.fixture(scope="module")
def single(smollm2_gguf: Path):
    student = LlamaStudent(smollm2_gguf, parallel=1, n_ctx=1024, threads=2)
    yield student
    student.close()


def test_every_prompt_gets_n_samples_and_seeds_reproduce(batched, single) -> None:
    params = SamplingParams(n=2, temperature=0.8, top_p=0.95, max_new_tokens=12, seed=7)
    a = batched.generate(PROMPTS, params)
    b = batched.generate(PROMPTS, params)
    one = single.generate(PROMPTS, params)
    assert [len(g) for g in a] == [2] * len(PROMPTS) == [len(g) for g in one]
    assert [[g.text for g in gens] for gens in a] == [[g.text for g in gens] for gens in b]
    # Different seeds within a prompt: the two samples are not one sample twice.
    assert any(len({g.text for g in gens}) > 1 for gens in a)
    other = batched.generate(PROMPTS, params.model_copy(update={"seed": 8}))
    assert [[g.text for g in gens] for gens in other] != [[g.text for g in gens] for gens in a]


def test_a_sample_does_not_depend_on_its_batch_neighbours(batched) -> None:
    params = SamplingParams(n=2, temperature=0.8, max_new_tokens=12, seed=3)
    together = batched.generate(PROMPTS, params)
    alone = batched.generate(PROMPTS[2:3], params)
    backwards = batched.generate(PROMPTS[::-1], params)
    assert [g.text for g in alone[0]] == [g.text for g in together[2]]
    assert [[g.text for g in gens] for gens in backwards[::-1]] == [
        [g.text for g in gens] for gens in together
    ]


def test_greedy_batched_equals_one_stream_on_these_prompts(batched, single) -> None:
    params = SamplingParams(max_new_tokens=32)
    assert [g[0].text for g in batched.generate(PROMPTS, params)] == [
        g[0].text for g in single.generate(PROMPTS, params)
    ]


def test_stop_conditions_end_each_sequence(batched) -> None:
    long = SamplingParams(max_new_tokens=160)
    full = batched.generate(PROMPTS, long)
    # max_new_tokens: exactly that many tokens, finish "length"
    capped = batched.generate(PROMPTS, SamplingParams(max_new_tokens=5))
    for gens, ref in zip(capped, full, strict=True):
        g = gens[0]
        assert g.tokens_out == min(5, ref[0].tokens_out)
        assert ref[0].text.startswith(g.text)
        assert g.finish_reason == ("length" if ref[0].tokens_out > 5 else "stop")
    # a stop string: the text up to it, the string removed; other sequences unaffected
    stops = [t for t in ("def ", "return", "\n\n") if all(t in g[0].text for g in full)]
    assert stops, "the model's replies share no stop string to test with"
    cut = batched.generate(PROMPTS, long.model_copy(update={"stop": (stops[0],)}))
    for gens, ref in zip(cut, full, strict=True):
        assert gens[0].text == ref[0].text[: ref[0].text.index(stops[0])]
        assert gens[0].finish_reason == "stop"


def test_stop_when_answered_ends_at_the_closed_program(batched) -> None:
    from persd.llm.extract import answer_complete

    each = [SamplingParams(max_new_tokens=160, stop_when_answered=t.entry_point) for t in TASKS]
    early = batched.generate_each(PROMPTS, each)
    full = batched.generate(PROMPTS, SamplingParams(max_new_tokens=160))
    for gens, ref, task in zip(early, full, TASKS, strict=True):
        g = gens[0]
        assert ref[0].text.startswith(g.text)  # the same tokens up to the stop
        if answer_complete(g.text, task.entry_point):
            assert g.tokens_out <= ref[0].tokens_out
            # and it stopped at the first token where the program was final
            assert not answer_complete(g.text[:-1].rsplit("`", 1)[0], task.entry_point)


def test_more_prompts_than_streams_all_finish_and_report(batched) -> None:
    seen: list[int] = []
    out = batched.generate_each(
        PROMPTS * 3, [SamplingParams(max_new_tokens=8)] * (3 * len(PROMPTS)), seen.append
    )
    assert len(out) == 3 * len(PROMPTS) and all(len(g) == 1 for g in out)
    assert sorted(seen) == list(range(3 * len(PROMPTS)))
    texts = [g[0].text for g in out]
    assert texts[: len(PROMPTS)] == texts[len(PROMPTS) : 2 * len(PROMPTS)]


def test_a_prompt_longer_than_a_sequence_names_the_setting(smollm2_gguf: Path) -> None:
    student = LlamaStudent(smollm2_gguf, parallel=2, n_ctx=256, threads=1)
    try:
        huge = (Message(role="user", content="word " * 400),)
        with pytest.raises(PersdError, match="student.n_ctx"):
            student.generate([huge], SamplingParams(max_new_tokens=4))
    finally:
        student.close()


def test_the_thread_count_does_not_change_the_tokens(smollm2_gguf: Path) -> None:
    """The decoder picks its thread count by measuring (ThreadChooser); the samples must not
    depend on the pick. Both students here are pinned, one to 1 thread, one to 2."""
    params = SamplingParams(max_new_tokens=32)
    texts = []
    for threads in (1, 2):
        student = LlamaStudent(smollm2_gguf, parallel=4, n_ctx=1024, threads=threads)
        student.decoder.threads.options = [threads]  # no other choice to try
        texts.append([g[0].text for g in student.generate(PROMPTS, params)])
        used = student.decoder.threads.used
        assert {n for n, steps in used.items() if steps} == {threads}
        student.close()
    assert texts[0] == texts[1]


class _Lib:
    def __init__(self) -> None:
        self.calls: list[int] = []

    def llama_set_n_threads(self, ctx, n, n_batch) -> None:  # noqa: ANN001
        self.calls.append(n)


def test_the_thread_chooser_moves_to_the_faster_choice_and_backs_off_the_slower() -> None:
    lib = _Lib()
    chooser = ThreadChooser(lib, None, 4, explore=8)
    assert chooser.options == [4, 2, 1]
    seconds = {4: 1.0, 2: 0.1, 1: 0.5}  # per row: 2 threads is fastest (a busy machine)
    for _ in range(200):
        n = chooser.pick()
        chooser.record(n, seconds[n] * 16, 16)
    assert chooser.current == 2
    assert chooser.used[2] > 150  # most steps ran on the best choice
    assert chooser._wait[4] > 8 and chooser._wait[1] > 8  # the losers are tried less often
    assert lib.calls and set(lib.calls) <= {4, 2, 1}


def test_a_probe_on_a_step_size_the_current_choice_never_ran_does_not_take_over() -> None:
    """Costs are compared on steps of one size; a probe that is alone in its size has nothing
    to beat, so it must not become the choice (it did: a cheap prompt step at 1 thread set 1
    thread for the decoding that followed)."""
    chooser = ThreadChooser(_Lib(), None, 2, explore=8)
    n = chooser.pick()
    chooser.record(n, 0.5 * 16, 16)  # 2 threads on a 16-row step
    n = chooser.pick()
    assert n == 1  # the second step probes
    chooser.record(n, 0.01 * 300, 300)  # a prompt step: no 2-thread cost of that size
    assert chooser.current == 2


def test_sequences_in_flight_stay_on_the_lowest_streams(smollm2_gguf: Path, monkeypatch) -> None:
    """llama.cpp cuts a batch into one pass over the weights per run of consecutive KV streams,
    so the decoder moves sequences down into freed streams (a KV copy). The streams in flight
    must be 0..k-1 at every step, and the moved sequences' tokens must not change."""
    student = LlamaStudent(smollm2_gguf, parallel=4, n_ctx=1024, threads=2)
    try:
        decoder = student.decoder
        seen: list[list[int]] = []
        step = decoder._step

        def spy(active, new) -> None:  # noqa: ANN001
            seen.append(sorted(q.stream for q in active + new))
            step(active, new)

        monkeypatch.setattr(decoder, "_step", spy)
        copies = []
        lib_cp = decoder._lib.llama_memory_seq_cp

        class _Lib:
            def __getattr__(self, name):  # noqa: ANN001
                return getattr(decoder.__dict__["_real"], name)

            def llama_memory_seq_cp(self, *a):  # noqa: ANN002
                copies.append(a[1:3])
                return lib_cp(*a)

        decoder.__dict__["_real"] = decoder._lib
        monkeypatch.setattr(decoder, "_lib", _Lib())
        lengths = [4, 40, 8, 40]  # streams 0 and 2 free up while 1 and 3 go on
        params = [SamplingParams(max_new_tokens=n) for n in lengths]
        together = [g[0].text for g in student.generate_each(PROMPTS, params)]
        alone = [
            student.generate_each([p], [q])[0][0].text for p, q in zip(PROMPTS, params, strict=True)
        ]
    finally:
        student.close()
    assert copies, "no sequence was moved"
    assert all(streams == list(range(len(streams))) for streams in seen)
    assert together == alone


# -- the shared prefix (``share_prefix``) ---------------------------------------------------


def test_common_prefix_leaves_every_prompt_a_token_of_its_own() -> None:
    from persd.llm.batch import Request, common_prefix

    p = SamplingParams()
    assert common_prefix([Request((1, 2, 3, 4), p, 0), Request((1, 2, 3, 9, 9), p, 0)]) == 3
    assert common_prefix([Request((1, 2, 3), p, 0), Request((1, 2, 3, 4), p, 0)]) == 2
    assert common_prefix([Request((5, 2), p, 0), Request((1, 2), p, 0)]) == 0
    assert common_prefix([]) == 0


def _texts(student: LlamaStudent, prompts, params) -> list[list[str]]:  # noqa: ANN001
    return [[g.text for g in gens] for gens in student.generate(prompts, params)]


@pytest.mark.parametrize("temperature", [0.0, 0.8])
def test_a_shared_prefix_is_decoded_once_and_changes_no_sample(batched, temperature) -> None:
    """The chat prompts open with the same system turn and instruction: decoded once into the
    prefix stream, copied into each sequence's stream, and every sample is the one each
    sequence gets by decoding its whole prompt itself."""
    decoder = batched.decoder
    params = SamplingParams(n=2, temperature=temperature, max_new_tokens=24, seed=5)
    decoder.share_prefix = False
    try:
        before = decoder.prompt_decoded
        own = _texts(batched, PROMPTS, params)
        whole = decoder.prompt_decoded - before
    finally:
        decoder.share_prefix = True
    decoder.drop_prefix()  # nothing held: this run decodes the prefix once
    decoded, copied = decoder.prompt_decoded, decoder.prompt_copied
    shared = _texts(batched, PROMPTS, params)
    decoded, copied = decoder.prompt_decoded - decoded, decoder.prompt_copied - copied
    ids = [batched.renderer.ids(p) for p in PROMPTS]
    n = len(decoder._prefix)
    assert n >= 20 and all(i[:n] == ids[0][:n] for i in ids)
    assert shared == own
    assert copied == n * 2 * len(PROMPTS)  # every sample's stream got the prefix
    assert decoded == whole - copied + n  # ... which was decoded once
    # A second run with the same opening decodes no token of it again.
    decoded = decoder.prompt_decoded
    assert _texts(batched, PROMPTS, params) == own
    assert decoder.prompt_decoded - decoded == sum(len(i) - n for i in ids) * 2
    # One with a longer opening (HumanEval/0 and /1 both open with the typing import) decodes
    # its whole prefix afresh, in one batch: never the held cells extended by the difference,
    # whose values would then depend on what this process decoded before.
    decoded = decoder.prompt_decoded
    assert _texts(batched, PROMPTS[:2], params) == own[:2]
    longer = len(decoder._prefix)
    assert longer > n
    assert decoder.prompt_decoded - decoded == longer + sum(len(i) - longer for i in ids[:2]) * 2


def test_a_runs_samples_do_not_depend_on_the_runs_before_it(batched, smollm2_gguf) -> None:
    """What one call of an evaluation (a journal chunk) samples is a function of its own
    requests: after a run with a longer shared opening, and in a fresh decoder, the same
    requests give the same samples and leave the same prefix cells to copy."""
    params = SamplingParams(n=2, temperature=0.8, max_new_tokens=24, seed=3)
    decoder = batched.decoder
    _texts(batched, PROMPTS[:2], params)  # holds the longer opening of HumanEval/0 and /1
    before = decoder.prompt_decoded
    after = _texts(batched, PROMPTS, params)
    decoded = decoder.prompt_decoded - before
    fresh = LlamaStudent(smollm2_gguf, parallel=4, n_ctx=1024, threads=2)
    try:
        assert _texts(fresh, PROMPTS, params) == after
        assert fresh.decoder.prompt_decoded == decoded  # the prefix too, decoded whole
    finally:
        fresh.close()


def test_prompts_that_open_differently_share_nothing_and_keep_their_samples(batched) -> None:
    """Raw text prompts with no common opening copy nothing; the prefix stream is trimmed to
    what a later run shares with it."""
    decoder = batched.decoder
    params = SamplingParams(max_new_tokens=16)
    raw = [t.prompt for t in TASKS]
    copied = decoder.prompt_copied
    got = _texts(batched, raw, params)
    assert decoder.prompt_copied == copied
    alone = [_texts(batched, [p], params)[0] for p in raw]
    assert got == alone
    chat = _texts(batched, PROMPTS[1:3], params)  # the chat opening again, from a held one
    decoder.share_prefix = False
    try:
        assert chat == _texts(batched, PROMPTS[1:3], params)
    finally:
        decoder.share_prefix = True


# -- prompt-lookup decoding (``lookup`` > 0) -------------------------------------------------


def test_prompt_lookup_proposes_what_followed_the_latest_earlier_match() -> None:
    from persd.llm.batch import PromptLookup

    look = PromptLookup([1, 2, 3, 4, 5, 1, 2], ngram=2)
    assert look.draft(3) == [3, 4, 5]  # "1 2" was followed by 3 4 5; the suffix is not a match
    look.extend([9])
    assert look.draft(3) == []  # "2 9" never occurred before
    look.extend([1, 2])
    assert look.draft(2) == [9, 1]  # the latest earlier "1 2" is the one before 9
    assert look.draft(0) == []


@pytest.fixture(scope="module")
def looking(smollm2_gguf: Path):
    student = LlamaStudent(smollm2_gguf, parallel=4, n_ctx=1024, threads=2, lookup=8)
    yield student
    student.close()


def test_lookup_keeps_only_tokens_the_model_itself_would_choose(looking, monkeypatch) -> None:
    """Greedy with drafts: every kept token is the argmax of a plain forward pass over the
    prompt and the tokens before it, up to the last bits of the logits (batch shapes differ:
    without drafts the largest gap measured here was 0.33). A draft kept unchecked, or a refused
    draft's KV cells left in place, puts tokens far from the argmax."""
    import numpy as np
    from llama_cpp import Llama

    decoder = looking.decoder
    taken: dict[int, list[int]] = {}
    take = decoder._text.take

    def spy(seq, tok):  # noqa: ANN001
        taken.setdefault(seq.index, []).append(tok)
        return take(seq, tok)

    monkeypatch.setattr(decoder._text, "take", spy)
    before = decoder.accepted
    looking.generate(PROMPTS, SamplingParams(max_new_tokens=80))
    assert decoder.accepted > before, "no draft token was ever kept"
    ref = Llama(
        model_path=str(decoder._model.model_path),
        n_ctx=1024,
        logits_all=True,
        n_threads=2,
        verbose=False,
    )
    try:
        for i, prompt in enumerate(PROMPTS):
            ids, out = list(looking.renderer.ids(prompt)), taken[i]
            ref.reset()
            ref.eval(ids + out)
            scores = np.array(ref.scores[len(ids) - 1 : len(ids) - 1 + len(out)])
            gaps = scores.max(axis=1) - scores[np.arange(len(out)), out]
            assert gaps.max() < 1.0, (i, int(gaps.argmax()), float(gaps.max()))
    finally:
        ref.close()


def test_lookup_seeds_reproduce_and_stop_conditions_hold(looking) -> None:
    params = SamplingParams(n=2, temperature=0.8, top_p=0.95, max_new_tokens=40, seed=5)
    a = looking.generate(PROMPTS, params)
    assert [[g.text for g in s] for s in a] == [
        [g.text for g in s] for s in looking.generate(PROMPTS, params)
    ]
    full = looking.generate(PROMPTS, SamplingParams(max_new_tokens=120))
    capped = looking.generate(PROMPTS, SamplingParams(max_new_tokens=7))
    for gens, ref in zip(capped, full, strict=True):
        # A step may keep several drafted tokens at once: the cap still ends at exactly 7.
        assert gens[0].tokens_out == min(7, ref[0].tokens_out)
        assert ref[0].text.startswith(gens[0].text)
