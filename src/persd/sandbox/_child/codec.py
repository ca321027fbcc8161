"""Plain data across the sandbox boundary: tagged JSON and length-prefixed frames.

Only builtin value types cross: None, bool, int, float, complex, str, bytes, list, tuple,
dict, set, frozenset. Decoding builds exactly those types from JSON, so nothing the sandboxed
program made (an object with its own ``__eq__``, a patched builtin) can reach the trusted side.
pickle and marshal are never used here: loading them from an untrusted peer runs its code.
"""

from __future__ import annotations

import json
import json.encoder
import json.scanner
import math
import struct
from collections.abc import Callable
from typing import Any

MAX_DEPTH = 64
_HEADER = struct.Struct(">I")
_BIG = 1 << 62  # ints beyond this travel as hex: JSON readers cap decimal digits


class Unencodable(TypeError):
    """The value is not plain data (a user-defined object, a function, a generator...)."""


def encode(value: Any, _depth: int = 0) -> Any:
    """A JSON-ready tagged tree of ``value``; raises Unencodable for non-data values."""
    if _depth > MAX_DEPTH:
        raise Unencodable(f"nested deeper than {MAX_DEPTH}")
    d = _depth + 1
    if value is None or value is True or value is False:
        return value
    t = type(value)
    if t is str:
        return value
    if t is int:
        return value if -_BIG < value < _BIG else {"I": hex(value)}
    if t is float:
        return value if math.isfinite(value) else {"F": repr(value)}
    if t is list:
        return _encode_all(value, d)
    if t is tuple:
        return {"t": _encode_all(value, d)}
    if t is dict:
        return {"d": [[encode(k, d), encode(v, d)] for k, v in value.items()]}
    if t is set:
        return {"s": _encode_all(value, d)}
    if t is frozenset:
        return {"S": _encode_all(value, d)}
    if t is bytes:
        return {"b": value.hex()}
    if t is complex:
        return {"c": [encode(value.real, d), encode(value.imag, d)]}
    return encode(_plain(value), d)


def _encode_all(values: Any, d: int) -> list:
    """``[encode(v, d) for v in values]``, with the common leaves (str, small int, bool, None)
    taken as they are instead of a call each."""
    if d > MAX_DEPTH:
        return [encode(v, d) for v in values]
    return [
        v
        if (t := type(v)) is str or (t is int and -_BIG < v < _BIG) or t is bool or v is None
        else encode(v, d)
        for v in values
    ]


def _plain(value: Any) -> Any:
    """The builtin value behind a subclass or a numpy scalar, else Unencodable."""
    # Order matters: bool is an int, and numpy's float64 is a float.
    for base in (bool, int, float, complex, str, bytes, tuple, list, dict, frozenset, set):
        if isinstance(value, base):
            return base(value)
    if type(value).__module__ == "numpy" and hasattr(value, "item"):
        item = value.item()
        if type(item) in (bool, int, float, complex, str, bytes):
            return item
    raise Unencodable(type(value).__name__)


_LEAVES = (bool, int, float, str)  # what decode() returns as it is


def decode(tree: Any, _depth: int = 0) -> Any:
    """The value a tagged tree stands for; raises ValueError on anything malformed."""
    if _depth > MAX_DEPTH + 2:
        raise ValueError("nested too deep")
    d = _depth + 1
    if tree is None or type(tree) in _LEAVES:
        return tree
    if type(tree) is list:
        if d > MAX_DEPTH + 2:
            return [decode(v, d) for v in tree]
        return [v if v is None or type(v) in _LEAVES else decode(v, d) for v in tree]
    if type(tree) is not dict or len(tree) != 1:
        raise ValueError("malformed value")
    ((tag, body),) = tree.items()
    if tag == "t":
        return tuple(decode(v, d) for v in _items(body))
    if tag == "d":
        return {decode(k, d): decode(v, d) for k, v in (_pair(p) for p in _items(body))}
    if tag == "s":
        return {decode(v, d) for v in _items(body)}
    if tag == "S":
        return frozenset(decode(v, d) for v in _items(body))
    if tag == "I" and type(body) is str:
        return int(body, 16)
    if tag == "F" and body in ("nan", "inf", "-inf"):
        return float(body)
    if tag == "b" and type(body) is str:
        return bytes.fromhex(body)
    if tag == "c":
        re, im = _pair(body)
        return complex(decode(re, d), decode(im, d))
    raise ValueError(f"unknown tag {tag!r}")


def _items(body: Any) -> list:
    if type(body) is not list:
        raise ValueError("malformed container")
    return body


def _pair(body: Any) -> list:
    if type(body) is not list or len(body) != 2:
        raise ValueError("malformed pair")
    return body


# One C encoder and one C scanner for every frame: json.dumps / JSONEncoder.encode build a
# new encoder per call, json.loads detects the encoding and strips whitespace in Python.
# No circular check (markers=None): every message is a fresh tree from encode() or literals.
_c_encode = json.encoder.c_make_encoder
_c_scan = json.scanner.c_make_scanner
if _c_encode is not None and _c_scan is not None:
    _iterencode = _c_encode(
        None, None, json.encoder.encode_basestring_ascii, None, ":", ",", False, False, False
    )
    _scan = _c_scan(json.JSONDecoder())

    def _encode(message: dict) -> str:
        return "".join(_iterencode(message, 0))

else:  # an interpreter without the _json accelerator
    _encode = json.JSONEncoder(separators=(",", ":"), allow_nan=False).encode
    _scan = None


def dumps(message: dict) -> bytes:
    """One frame: a 4-byte length, then the message as UTF-8 JSON."""
    data = _encode(message).encode()
    return _HEADER.pack(len(data)) + data


def parse_frame(payload: bytes) -> dict:
    """The message inside a frame's payload; ValueError if it is not a JSON object."""
    message = None
    if _scan is not None:
        try:  # the usual frame: one JSON object, nothing around it
            text = payload.decode()
            message, end = _scan(text, 0)
            if end != len(text) or type(message) is not dict:
                message = None  # anything else takes json.loads' path below
        except (ValueError, RecursionError, StopIteration):
            message = None
    if message is None:
        try:
            message = json.loads(payload)
        except (ValueError, RecursionError) as e:
            raise ValueError(f"not JSON: {e}") from None
    if type(message) is not dict:
        raise ValueError("frame is not an object")
    return message


def header_length(header: bytes) -> int:
    return _HEADER.unpack(header)[0]


class FrameTooLarge(ValueError):
    pass


class FrameReader:
    """Frames from a byte stream, read in large chunks: usually one syscall per message."""

    def __init__(self, read: Callable[[int], bytes], max_size: int) -> None:
        self._read = read  # returns b"" at end of stream
        self._max = max_size
        self._buf = bytearray()

    def _fill(self) -> None:
        chunk = self._read(1 << 16)
        if not chunk:
            raise EOFError
        self._buf += chunk

    def next(self) -> bytes:
        """The next frame's payload; EOFError at end of stream, FrameTooLarge past the cap."""
        buf = self._buf
        if not buf:  # the usual case: one read holds exactly one whole frame
            chunk = self._read(1 << 16)
            if not chunk:
                raise EOFError
            if len(chunk) >= _HEADER.size:
                size = _HEADER.unpack_from(chunk)[0]
                if size > self._max:
                    raise FrameTooLarge(f"frame of {size} bytes")
                if len(chunk) == _HEADER.size + size:
                    return chunk[_HEADER.size :]
            buf += chunk
        while len(buf) < _HEADER.size:
            self._fill()
        size = _HEADER.unpack_from(buf)[0]
        if size > self._max:
            raise FrameTooLarge(f"frame of {size} bytes")
        end = _HEADER.size + size
        while len(buf) < end:
            self._fill()
        payload = bytes(buf[_HEADER.size : end])
        del buf[:end]
        return payload


HEADER_SIZE = _HEADER.size
