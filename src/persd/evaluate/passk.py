"""The unbiased pass@k estimator (Chen et al., 2021), as a small pure function."""

from __future__ import annotations

from collections.abc import Iterable, Mapping


def pass_at_k(n: int, c: int, k: int) -> float:
    """Probability that at least one of k samples drawn from n (c correct) passes.

    1 - C(n-c, k) / C(n, k), computed as a product to stay exact for large n.
    """
    if not 0 <= c <= n:
        raise ValueError(f"need 0 <= c <= n, got n={n}, c={c}")
    if k > n:
        raise ValueError(f"pass@{k} needs at least {k} samples per task, got {n}")
    if n - c < k:
        return 1.0
    prob_all_fail = 1.0
    for i in range(n - c + 1, n + 1):
        prob_all_fail *= 1.0 - k / i
    return 1.0 - prob_all_fail


def mean_pass_at_k(counts: Mapping[str, tuple[int, int]], ks: Iterable[int]) -> dict[int, float]:
    """pass@k averaged over tasks, for each k that every task has enough samples for.

    ``counts`` maps task id -> (samples, correct).
    """
    if not counts:
        return {}
    smallest = min(n for n, _ in counts.values())
    return {
        k: sum(pass_at_k(n, c, k) for n, c in counts.values()) / len(counts)
        for k in ks
        if k <= smallest
    }
