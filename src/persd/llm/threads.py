"""How many threads each batched ``llama_decode`` step uses, chosen by measuring."""

from __future__ import annotations

from typing import Any


class ThreadChooser:
    """How many threads each ``llama_decode`` uses, chosen by measuring, because the best
    number depends on what else the machine is doing.

    llama.cpp's worker threads meet at a barrier after every operation of the graph, spinning
    while they wait. On an idle machine every core helps; when other processes hold a core,
    a descheduled thread stalls the others at each of hundreds of barriers per step. Measured
    here (SmolLM2-135M, 8 prompts x 48 tokens, 2 cores, a C++ build running beside it):
    2 threads took 78 s with 4 sequences and over 300 s with one, 1 thread 8 s with either.

    Each choice (``most``, halved down to 1) keeps a moving average of seconds per row fed.
    The current best runs; the second step, then every ``explore`` steps, one step tries the
    next other choice, compared on steps of the same size (a prompt step costs less per row
    than a one-token-per-sequence step); a choice that lost waits twice as long before its next
    try (up to 64 x ``explore`` steps), so a slow choice costs little. Thread counts split
    each matrix product by rows, not the sums inside a row, so the tokens do not depend on the
    choice (tested).
    """

    def __init__(self, lib: Any, ctx: Any, most: int, *, explore: int = 32) -> None:
        self._lib, self._ctx = lib, ctx
        self.options: list[int] = []
        n = max(1, most)
        while True:
            self.options.append(n)
            if n == 1:
                break
            n = max(1, n // 2)
        self.current = self.options[0]
        # Seconds per row by step size (rows.bit_length()): a prompt step costs less per row
        # than a one-token-per-sequence step, so choices are compared on steps alike.
        self._cost: dict[int, dict[int, float]] = {}
        self._wait = dict.fromkeys(self.options, explore)
        self._explore = explore
        self._steps = 0
        self._next_try = 2  # the second step already tries another choice
        self._set = self.current
        self.used: dict[int, int] = dict.fromkeys(self.options, 0)  # steps run with each

    def pick(self) -> int:
        """The thread count for the next step (applied to the context)."""
        self._steps += 1
        n = self.current
        if len(self.options) > 1 and self._steps >= self._next_try:
            others = [o for o in self.options if o != self.current]
            n = others[(self._steps // self._explore) % len(others)]
            self._next_try = self._steps + self._wait[n]
        if n != self._set:
            self._lib.llama_set_n_threads(self._ctx, n, n)
            self._set = n
        self.used[n] += 1
        return n

    def record(self, threads: int, seconds: float, rows: int) -> None:
        costs = self._cost.setdefault(max(rows, 1).bit_length(), {})
        per_row = seconds / max(rows, 1)
        old = costs.get(threads)
        costs[threads] = per_row if old is None else 0.7 * old + 0.3 * per_row
        if self.current not in costs:
            # Nothing to compare with on steps of this size yet: a probe alone in its size
            # would win by default, and prompt steps would then set the count for decoding.
            return
        best = min(costs, key=costs.__getitem__)
        if threads != self.current:
            if best == threads:
                self._wait[threads] = self._explore
            else:
                self._wait[threads] = min(self._wait[threads] * 2, 64 * self._explore)
        if best != self.current:
            self._wait[self.current] = self._explore
            self.current = best
