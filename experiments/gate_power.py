"""What the held-out gate can see: the chance that it keeps a trained model, by true effect.

A trained model and its base, scored on n held-out tasks, disagree on some of them: the model
gains a task with probability (flip + delta) / 2 and loses one with (flip - delta) / 2, where
``flip`` is the share of tasks that change verdict and ``delta`` the true change of pass@1.
The gate keeps the model when its rule holds on the (gained, lost) it sees: ``gained - lost >=
min_net_gain`` and, with ``max_p``, an exact McNemar p at most that. This script sums the
trinomial distribution of (gained, lost) exactly (no simulation), for each n and rule.

    python experiments/gate_power.py                       # the table in docs/PIPELINE.md
    python experiments/gate_power.py --flip 0.05 --n 40 100
"""

from __future__ import annotations

import argparse
from math import exp, lgamma, log

from persd.evaluate.paired import mcnemar_exact


def keep_probability(
    n: int, flip: float, delta: float, *, min_net_gain: int, max_p: float | None
) -> float:
    """P(the gate keeps the model) for n tasks, discordant share ``flip``, true gain ``delta``."""
    pg, pl = (flip + delta) / 2, (flip - delta) / 2
    same = 1.0 - pg - pl
    if min(pg, pl, same) < 0:
        raise ValueError(f"delta {delta} is not possible with flip {flip}")
    total = 0.0
    for g in range(n + 1):
        for lost in range(n - g + 1):
            if g - lost < min_net_gain:
                continue
            if max_p is not None and mcnemar_exact(g, lost) > max_p:
                continue
            log_pmf = lgamma(n + 1) - lgamma(g + 1) - lgamma(lost + 1) - lgamma(n - g - lost + 1)
            log_pmf += _xlog(g, pg) + _xlog(lost, pl) + _xlog(n - g - lost, same)
            total += exp(log_pmf)
    return total


def _xlog(k: int, p: float) -> float:
    if k == 0:
        return 0.0
    return float("-inf") if p == 0 else k * log(p)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--flip", type=float, default=0.11, help="share of tasks that flip")
    ap.add_argument("--n", type=int, nargs="+", default=[40, 100, 200, 401])
    ap.add_argument("--delta", type=float, nargs="+", default=[-0.03, 0.0, 0.03, 0.05])
    args = ap.parse_args()
    rules = [(1, None), (3, None), (1, 0.05)]
    names = [f"net>={k}" + (f", p<={p}" if p else "") for k, p in rules]
    print(f"flip rate {args.flip}: P(the gate keeps the model)")
    print("| validation tasks | true change | " + " | ".join(names) + " |")
    print("|---|---|" + "---|" * len(rules))
    for n in args.n:
        for d in args.delta:
            cells = [keep_probability(n, args.flip, d, min_net_gain=k, max_p=p) for k, p in rules]
            print(f"| {n} | {100 * d:+.0f} pp | " + " | ".join(f"{c:.2f}" for c in cells) + " |")


if __name__ == "__main__":
    main()
