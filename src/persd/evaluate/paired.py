"""Paired comparison of two models on the same tasks: tasks gained, tasks lost, exact McNemar.

Two pass rates on the same tasks are not independent samples: most tasks are solved by both
or by neither, and only the discordant tasks carry evidence. The exact McNemar test is a
binomial test of those at 1/2; it needs no large-sample approximation, which matters at the
few dozen tasks a CPU run can afford.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from pydantic import BaseModel, ConfigDict


def mcnemar_exact(only_a: int, only_b: int) -> float:
    """Two-sided exact McNemar p-value: a binomial test of the discordant pairs at 1/2."""
    n = only_a + only_b
    if n == 0:
        return 1.0
    k = min(only_a, only_b)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2**n
    return min(1.0, 2 * tail)


class Paired(BaseModel):
    """A model against its base on the tasks both were scored on."""

    model_config = ConfigDict(frozen=True)

    tasks: int
    base_passed: int
    passed: int
    gained: int  # tasks this model passes and the base fails
    lost: int  # tasks the base passes and this model fails
    p_value: float

    @property
    def net(self) -> int:
        return self.gained - self.lost

    def describe(self) -> str:
        """``+5/−1 on 80 tasks (p=0.22)``."""
        return f"+{self.gained}/−{self.lost} on {self.tasks} tasks (p={self.p_value:.2g})"


def paired(base: Mapping[str, bool], model: Mapping[str, bool]) -> Paired:
    """Compare per-task pass/fail maps on the tasks they share."""
    shared = [t for t in base if t in model]
    gained = sum(model[t] and not base[t] for t in shared)
    lost = sum(base[t] and not model[t] for t in shared)
    return Paired(
        tasks=len(shared),
        base_passed=sum(base[t] for t in shared),
        passed=sum(model[t] for t in shared),
        gained=gained,
        lost=lost,
        p_value=mcnemar_exact(gained, lost),
    )
