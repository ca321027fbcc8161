"""Teacher prices and the hard budget: reserve a call's worst case before making it.

The cap is checked against money already in the ledger (this run directory, earlier sessions
included) plus every call still in flight, so concurrent requests cannot overspend together.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from importlib import resources

import yaml

from persd.errors import PersdError
from persd.llm.base import Message
from persd.llm.teacher_config import TeacherConfig

log = logging.getLogger(__name__)

# Chat templates wrap each message in a few special tokens (role markers, separators).
_TOKENS_PER_MESSAGE = 8
_TOKENS_PER_REQUEST = 16


class BudgetExceeded(PersdError):
    """The next teacher call could cross ``budget_usd`` or ``max_calls``; nothing was sent."""


class UnknownPrice(PersdError):
    """A budget was set for a model whose price persd does not know."""


@dataclass(frozen=True)
class Price:
    """USD per 1M tokens."""

    per_mtok_in: float
    per_mtok_out: float

    def cost(self, tokens_in: int, tokens_out: int) -> float:
        return (tokens_in * self.per_mtok_in + tokens_out * self.per_mtok_out) / 1e6

    def estimate(self, n_calls: int, tokens_in: int, tokens_out: int) -> float:
        """Dollars for ``n_calls`` calls of ``tokens_in``/``tokens_out`` tokens each (dry run)."""
        return n_calls * self.cost(tokens_in, tokens_out)


@cache
def load_prices() -> dict[str, Price]:
    """The packaged price table (prices.yaml)."""
    text = resources.files("persd.llm").joinpath("prices.yaml").read_text()
    table = yaml.safe_load(text)["models"]
    return {name: Price(float(p["in"]), float(p["out"])) for name, p in table.items()}


def resolve_price(cfg: TeacherConfig, *, local: bool = False) -> Price:
    """The config's override, else 0 for a managed local server, else the table (longest prefix).

    An unknown price is 0 with a warning, but an error when a budget is set: a cap that
    counts every call as free would never bind.
    """
    if cfg.price_per_mtok_in is not None and cfg.price_per_mtok_out is not None:
        return Price(cfg.price_per_mtok_in, cfg.price_per_mtok_out)
    if local:  # a model we run ourselves has no per-token bill
        return Price(0.0, 0.0)
    prices = load_prices()
    matches = [name for name in prices if cfg.model == name or cfg.model.startswith(name + "-")]
    if matches:
        return prices[max(matches, key=len)]
    if cfg.budget_usd is not None:
        raise UnknownPrice(
            f"teacher.model '{cfg.model}' has no known price, so teacher.budget_usd cannot be "
            "enforced; set teacher.price_per_mtok_in and teacher.price_per_mtok_out"
        )
    log.warning("teacher model %r has no known price: its calls are recorded as $0", cfg.model)
    return Price(0.0, 0.0)


def worst_case_tokens_in(messages: Sequence[Message]) -> int:
    """An upper bound on prompt tokens: one per UTF-8 byte, plus template overhead.

    Byte-level BPE (GPT, Llama 3, Qwen) never makes more tokens than bytes. chars/4 is the
    usual *estimate*, but a cap built on an estimate can be crossed; this bound cannot.
    """
    content = sum(len(m.content.encode()) for m in messages)
    return content + _TOKENS_PER_MESSAGE * len(messages) + _TOKENS_PER_REQUEST


@dataclass(frozen=True)
class Reservation:
    usd: float


class Budget:
    """Spent money and calls, plus reservations for calls in flight. Thread- and task-safe."""

    def __init__(
        self,
        price: Price,
        *,
        budget_usd: float | None,
        max_calls: int | None,
        spent_usd: float = 0.0,
        calls: int = 0,
    ) -> None:
        self.price = price
        self.budget_usd, self.max_calls = budget_usd, max_calls
        self.spent_usd, self.calls = spent_usd, calls
        self._reserved_usd, self._reserved_calls = 0.0, 0
        self._lock = threading.Lock()

    def reserve(self, messages: Sequence[Message], *, max_tokens: int, n: int) -> Reservation:
        """Hold the worst-case cost of one call, or raise BudgetExceeded without sending it."""
        worst = self.price.cost(worst_case_tokens_in(messages), max_tokens * n)
        with self._lock:
            if self.max_calls is not None and self.calls + self._reserved_calls >= self.max_calls:
                raise BudgetExceeded(
                    f"teacher call cap reached: {self.calls} calls made and "
                    f"{self._reserved_calls} in flight of teacher.max_calls={self.max_calls}; "
                    "raise it to continue (cached replies are kept)"
                )
            committed = self.spent_usd + self._reserved_usd
            if self.budget_usd is not None and committed + worst > self.budget_usd:
                raise BudgetExceeded(
                    f"teacher budget reached: ${self.spent_usd:.4f} spent and "
                    f"${self._reserved_usd:.4f} in flight of teacher.budget_usd="
                    f"${self.budget_usd:.4f}; the next call could cost up to ${worst:.4f}; "
                    "raise the budget to continue (cached replies are kept)"
                )
            self._reserved_usd += worst
            self._reserved_calls += 1
        return Reservation(worst)

    def settle(self, reservation: Reservation, cost_usd: float) -> None:
        """The call was made: swap its reservation for what it really cost."""
        with self._lock:
            self._reserved_usd -= reservation.usd
            self._reserved_calls -= 1
            self.spent_usd += cost_usd
            self.calls += 1

    def release(self, reservation: Reservation) -> None:
        """The call failed before any reply: nothing was spent (providers bill replies)."""
        with self._lock:
            self._reserved_usd -= reservation.usd
            self._reserved_calls -= 1
