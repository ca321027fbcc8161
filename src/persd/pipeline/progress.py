"""How stages report progress without knowing who shows it (the CLI draws rich bars)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Protocol

log = logging.getLogger("persd.pipeline")


class Progress(Protocol):
    def start(self, stage: str, total: int) -> Callable[[int], None]:
        """Begin a stage of ``total`` units; returns ``advance(n)``."""
        ...

    def note(self, message: str) -> None:
        """A one-line fact worth showing (skipped tasks, fallbacks, decontamination)."""
        ...


class LogProgress:
    """Progress as log lines: for tests, libraries and non-interactive runs."""

    def start(self, stage: str, total: int) -> Callable[[int], None]:
        log.info("%s: %d to do", stage, total)
        return lambda n: None

    def note(self, message: str) -> None:
        log.info("%s", message)
