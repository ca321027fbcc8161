"""The one way persd reads JSONL: one JSON object per line, typed by a pydantic model, and
every fault a one-line ``DataError`` naming the file, the line and the field.

Stage files, training rows, user task pools and sample files all come through here, so the
same fault reads the same everywhere (``attempts.jsonl:2: 'model_id' is missing``).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import TypeVar

from pydantic import BaseModel, ValidationError

from persd.errors import DataError

M = TypeVar("M", bound=BaseModel)


def read_text(path: Path, what: str) -> str:
    """The whole file; a missing, unreadable or non-UTF-8 file names ``what`` it should be."""
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DataError(path, None, None, f"no such file ({what})") from None
    except OSError as e:
        raise DataError(path, None, None, f"cannot be read ({e.strerror})") from None
    except UnicodeDecodeError:
        raise DataError(path, None, None, f"is not UTF-8 text ({what})") from None


def json_object(raw: str, path: Path | str, number: int) -> dict:
    """One line as a JSON object."""
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as e:
        raise DataError(path, number, None, f"not valid JSON ({e.msg}, column {e.colno})") from None
    if not isinstance(data, dict):
        raise DataError(path, number, None, f"not a JSON object (got {type(data).__name__})")
    return data


def json_objects(path: Path, what: str) -> Iterator[tuple[int, dict]]:
    """(line number, object) for every non-blank line."""
    for number, raw in enumerate(read_text(path, what).splitlines(), start=1):
        if raw.strip():
            yield number, json_object(raw, path, number)


def invalid(path: Path | str, number: int | None, error: ValidationError) -> DataError:
    """A model's first validation error in the user's words: ``'field' is missing``."""
    first = error.errors()[0]
    if first["type"] == "json_invalid":
        return DataError(path, number, None, f"not valid JSON ({first['ctx']['error']})")
    field = ".".join(str(p) for p in first["loc"]) or None
    message = "is missing" if first["type"] == "missing" else first["msg"].lower()
    if field is None and first["type"] == "model_type":
        message = f"not a JSON object (got {type(first['input']).__name__})"
    return DataError(path, number, field, message)


def parse_record(raw: str, model: type[M], path: Path | str, number: int) -> M:
    """One line as a ``model`` record (pydantic parses the JSON itself: the fast path)."""
    try:
        return model.model_validate_json(raw)
    except ValidationError as e:
        raise invalid(path, number, e) from None
