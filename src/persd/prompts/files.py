"""Templates kept as files: where they live, their turns, and the one placeholder syntax.

Every prompt persd writes comes from ``persd/prompts/templates/`` (or a file a user names in
their place): the student's task and refinement prompts, the teacher's, MBPP's and a user
pool's task prompts, execution feedback (``feedback.yaml``). Placeholders are ``{{name}}``
everywhere and are filled in one pass, so a value that itself contains ``{{code}}`` (a
program, a traceback) is never filled again. A chat template starts each turn with a
``=== user ===`` / ``=== assistant ===`` / ``=== system ===`` line.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from functools import cache
from importlib import resources
from pathlib import Path

import yaml

from persd.errors import PersdError
from persd.llm.base import Message

_TURN = re.compile(r"^=== (user|assistant|system) ===[ \t]*$", re.MULTILINE)
_SLOT = re.compile(r"\{\{(\w+)\}\}")

# Shipped chat templates by name; a config names one of these or a file path.
SHIPPED = (
    "teacher_solve",
    "teacher_refine_paper",
    "teacher_refine_chat",
    "teacher_tests",
    "student_refine",
    "teacher_onpolicy",
)


class TemplateError(PersdError):
    pass


@cache
def shipped_text(filename: str) -> str:
    """A shipped template file's text (``templates/<filename>``), read once per process."""
    return resources.files("persd.prompts").joinpath("templates", filename).read_text("utf-8")


@cache
def shipped_yaml(filename: str) -> dict[str, str]:
    """A shipped YAML file of templates by key (``feedback.yaml``)."""
    return yaml.safe_load(shipped_text(filename))


def fill(text: str, values: Mapping[str, object], *, where: str = "template") -> str:
    """``text`` with every ``{{name}}`` replaced by ``values[name]``, in one pass; values
    beyond the template's placeholders are ignored, a placeholder without one is an error."""
    missing = set(_SLOT.findall(text)) - values.keys()
    if missing:
        raise TemplateError(f"{where}: no value for {{{{{sorted(missing)[0]}}}}}")
    return _SLOT.sub(lambda m: str(values[m.group(1)]), text)


@cache
def _read(name_or_path: str) -> tuple[str, str]:
    if name_or_path in SHIPPED:
        return name_or_path, shipped_text(f"{name_or_path}.txt")
    path = Path(name_or_path)
    try:
        return str(path), path.read_text(encoding="utf-8")
    except OSError as e:
        shipped = ", ".join(SHIPPED)
        raise TemplateError(
            f"template '{name_or_path}': cannot read ({e.strerror}); "
            f"give a file path or one of: {shipped}"
        ) from None


def load_turns(name_or_path: str) -> tuple[tuple[str, str], ...]:
    """The (role, text) turns of a chat template, placeholders unfilled."""
    where, text = _read(name_or_path)
    parts = _TURN.split(text)
    if parts[0].strip() or len(parts) < 3:
        raise TemplateError(f"template {where}: must start with a '=== user ===' line")
    turns = tuple(
        (role, body.strip("\n")) for role, body in zip(parts[1::2], parts[2::2], strict=True)
    )
    if turns[-1][0] != "user":
        raise TemplateError(f"template {where}: the last turn must be the user's")
    return turns


def placeholders(name_or_path: str) -> set[str]:
    return {m for _, body in load_turns(name_or_path) for m in _SLOT.findall(body)}


def render_chat(name_or_path: str, values: Mapping[str, str]) -> tuple[Message, ...]:
    """Fill a chat template's placeholders; every placeholder must have a value."""
    where = f"template {_read(name_or_path)[0]}"
    missing = placeholders(name_or_path) - values.keys()
    if missing:
        raise TemplateError(f"{where}: no value for {{{{{sorted(missing)[0]}}}}}")
    return tuple(
        Message(role=role, content=fill(body, values, where=where))
        for role, body in load_turns(name_or_path)
    )


def as_text(messages: tuple[Message, ...]) -> str:
    """A conversation flattened for base (non-chat) models: the turns' text, in order."""
    return "\n\n".join(m.content for m in messages)
