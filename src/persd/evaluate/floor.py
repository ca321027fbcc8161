"""The serving path's noise floor (``noise_floor.yaml``): how many paired verdicts flip with
nothing trained, said beside every comparison with the base, so that a difference of that
size is read as what it is."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from importlib import resources

import yaml


@dataclass(frozen=True)
class Floor:
    backend: str
    flipped: int
    of: int
    all_one_way: bool
    machine: str

    @property
    def rate(self) -> float:
        return self.flipped / self.of

    def note(self, tasks: Sequence[int]) -> str:
        """One line: the floor, scaled to each comparison's count of paired tasks."""
        way = ", all one way" if self.all_one_way else ""
        scaled = ", ".join(f"~{self.rate * n:.0f} of {n}" for n in sorted(set(tasks)))
        return (
            f"{self.flipped} of {self.of} verdicts ({100 * self.rate:.1f}%) flipped with "
            f"nothing trained ({self.backend}, another batch arrangement{way}): gained + lost "
            f"of {scaled} tasks is within the serving path's noise"
        )


@cache
def floors() -> dict[str, Floor]:
    text = resources.files("persd.evaluate").joinpath("noise_floor.yaml").read_text()
    return {name: Floor(backend=name, **fields) for name, fields in yaml.safe_load(text).items()}


def floor_for(backend: str | None) -> Floor | None:
    """The measured floor of ``backend`` (None where it was never measured)."""
    return floors().get(backend or "")
