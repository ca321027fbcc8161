"""The learning-rate schedule: a warmup in which every optimizer step learns.

transformers' warmup multiplies optimizer step k's rate (k from 0) by ``k / warmup_steps``,
and rounds a warmup fraction up (``ceil(0.03 * 4) = 1``): the first step of any run with
warmup runs at rate 0.0, and the default run's four steps spent a quarter of its training
doing nothing. Here the warmup is rounded down and its ramp starts above zero.
"""

from __future__ import annotations

import math
from functools import partial
from typing import Any


def warmup_steps(warmup: float, total_steps: int) -> int:
    """Optimizer steps of warmup: ``warmup`` >= 1 is a count, below 1 a fraction of
    ``total_steps`` rounded down, so a run shorter than ``1 / warmup`` steps has none (rounding
    up made 0.03 of a 4-step run a quarter of it)."""
    count = int(warmup) if warmup >= 1 else math.floor(warmup * total_steps)
    return max(0, min(count, total_steps - 1))


def rate_factor(step: int, *, kind: str, warmup: int, total_steps: int) -> float:
    """The peak rate's multiplier at optimizer step ``step`` (from 0).

    Warmup step k runs at ``(k + 1) / (warmup + 1)`` of the peak, never 0 (transformers'
    ``k / warmup`` gives the first step 0); after the warmup, ``linear`` and ``cosine`` decay
    over the remaining steps as transformers' schedules do, and the last step is above 0 too.
    """
    if kind == "constant":
        return 1.0
    if step < warmup:
        return (step + 1) / (warmup + 1)
    if kind == "constant_with_warmup":
        return 1.0
    progress = (step - warmup) / max(1, total_steps - warmup)
    if kind == "linear":
        return max(0.0, 1.0 - progress)
    if kind == "cosine":
        return max(0.0, 0.5 * (1.0 + math.cos(math.pi * progress)))
    raise ValueError(f"lr_scheduler {kind!r}: constant, constant_with_warmup, linear or cosine")


def make_scheduler(optimizer: Any, args: Any, total_steps: int) -> Any:
    """A ``LambdaLR`` for ``args.lr_scheduler_type`` with ``args.warmup_steps`` (a count, or a
    fraction below 1) over ``total_steps`` optimizer steps."""
    from torch.optim.lr_scheduler import LambdaLR

    kind = getattr(args.lr_scheduler_type, "value", args.lr_scheduler_type)
    factor = partial(
        rate_factor,
        kind=str(kind),
        warmup=warmup_steps(args.warmup_steps, total_steps),
        total_steps=total_steps,
    )
    return LambdaLR(optimizer, factor)


class FirstStepLearns:
    """Mixin for a transformers ``Trainer``: its schedule is ``make_scheduler``'s (put it
    first among the bases)."""

    args: Any
    optimizer: Any
    lr_scheduler: Any
    _created_lr_scheduler: bool

    def create_scheduler(self, num_training_steps: int, optimizer: Any = None) -> Any:
        if self.lr_scheduler is None:
            self.lr_scheduler = make_scheduler(
                optimizer or self.optimizer, self.args, num_training_steps
            )
            # As Trainer.create_scheduler does: a later train() call builds a fresh schedule.
            self._created_lr_scheduler = True
        return self.lr_scheduler
