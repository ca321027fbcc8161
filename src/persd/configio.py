"""Helpers every pydantic config of persd shares: reading the YAML, layering, and one-line
error messages."""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from persd.errors import PersdError


def load_yaml_mapping(path: Path, error: type[PersdError], what: str) -> dict[str, Any]:
    """A config file's keys (empty file: none); a file that cannot be read, is not YAML or is
    not a mapping raises ``error`` with one line naming the file (and the line)."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except OSError as e:
        raise error(f"{path}: cannot read ({e.strerror})") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        problem = getattr(e, "problem", None) or "not parseable"
        raise error(f"{where}: not valid YAML ({problem})") from None
    if not isinstance(data, dict):
        raise error(f"{path}: must be a mapping of {what}")
    return data


def known_keys(model: type[BaseModel], prefix: str = "") -> list[str]:
    """Every dotted key ``model`` accepts, nested sections included (for "did you mean")."""
    keys = []
    for name, f in model.model_fields.items():
        keys.append(prefix + name)
        if isinstance(f.annotation, type) and issubclass(f.annotation, BaseModel):
            keys += known_keys(f.annotation, prefix + name + ".")
    return keys


def merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """``over`` on top of ``base``, section by section (defaults < YAML < flags)."""
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def describe(source: str, e: ValidationError, model: type[BaseModel]) -> str:
    """One line per bad key: where, which key, what was expected or what was meant."""
    known = known_keys(model)
    lines = []
    for err in e.errors():
        key = ".".join(str(p) for p in err["loc"])
        if err["type"] == "extra_forbidden":
            close = difflib.get_close_matches(key, known, n=1)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            lines.append(f"{source}: unknown key '{key}'{hint}")
        elif not key:  # a check across keys: its message names them
            lines.append(f"{source}: {err['msg'].removeprefix('Value error, ')}")
        else:
            lines.append(f"{source}: '{key}' {err['msg'].lower()}")
    return "\n".join(lines)
