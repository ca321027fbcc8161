"""Prompt-lookup decoding: drafts a sequence's next tokens from its own context."""

from __future__ import annotations

from collections.abc import Sequence


class PromptLookup:
    """Draft tokens for a sequence by finding its last ``ngram`` tokens earlier in its own
    context (the prompt and what it wrote) and proposing what followed them there.

    Models copy: a HumanEval answer restates the prompt's signature and docstring, a
    refinement restates most of the code it fixes. Decoding a copied span one token per step
    wastes steps; feeding the guessed continuation in the same ``llama_decode`` call checks it
    in one pass (prompt-lookup decoding). A guessed token is kept only while it equals the
    token sampled at its place from the model's own logits, so the tokens are the model's,
    sampled in the same order with the same sampler; only the batch shapes differ.
    """

    def __init__(self, ids: Sequence[int], ngram: int) -> None:
        self.ids = list(ids)
        self.ngram = ngram
        self._after: dict[tuple[int, ...], int] = {}  # n-gram -> index after its latest use
        for end in range(ngram, len(self.ids)):
            self._after[tuple(self.ids[end - ngram : end])] = end

    def extend(self, tokens: Sequence[int]) -> None:
        n = self.ngram
        for t in tokens:
            end = len(self.ids)  # the current suffix is about to stop being the suffix
            if end >= n:
                self._after[tuple(self.ids[end - n : end])] = end
            self.ids.append(t)

    def draft(self, most: int) -> list[int]:
        if most <= 0 or len(self.ids) < self.ngram:
            return []
        start = self._after.get(tuple(self.ids[-self.ngram :]))
        return [] if start is None else self.ids[start : start + most]
