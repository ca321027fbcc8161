"""Prompt templates shipped as package data (``persd/tasks/templates/*.txt``)."""

from __future__ import annotations

import functools
from importlib import resources


@functools.cache
def prompt_template(name: str) -> str:
    """The text of ``templates/<name>``, read once per process."""
    path = resources.files("persd") / "tasks" / "templates" / name
    return path.read_text(encoding="utf-8")
