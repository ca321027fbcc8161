"""The one exception family persd raises for problems a user can fix.

Domain code raises these with the context it knows (file, line, field, URL); only ``cli.py``
turns them into a one-line message with exit code 1 and no traceback.
"""

from __future__ import annotations

from pathlib import Path


class PersdError(Exception):
    """Expected, explained failure: bad input, bad config, unreachable service."""


class DataError(PersdError):
    """A data file is malformed: names the file, the line and the field."""

    def __init__(self, path: Path | str, line: int | None, field: str | None, message: str):
        self.path, self.line, self.field, self.message = Path(path), line, field, message
        where = f"{self.path}:{line}" if line is not None else f"{self.path}"
        what = f"'{field}' {message}" if field else message
        super().__init__(f"{where}: {what}")


class SandboxError(PersdError):
    """The sandbox could not start or lost a worker: says nothing about the program."""
