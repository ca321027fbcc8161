"""A minimal GGUF header reader: enough to tell a model file from garbage or a truncated copy.

Why not ``gguf.GGUFReader``: it mmaps the whole file and builds numpy views of every tensor,
and ``gguf`` is only in the ``hf`` extra. Checking a cached 1 GB file must stay cheap and must
work with the core dependencies, so this reads the key/value section and the tensor table
(streamed, a few MB for a 150k-token vocabulary) and nothing else.

What it checks: the magic, the version, that every key/value and tensor entry parses, and that
the tensor data the table promises starts inside the file. What it does not check: the tensor
bytes themselves (the registry's sha256 does that for its own models).
"""

from __future__ import annotations

import io
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

MAGIC = b"GGUF"
_SUPPORTED_VERSIONS = (2, 3)  # v1 (2023, uint32 counts) is long gone from llama.cpp
_DEFAULT_ALIGNMENT = 32
# Sanity bounds: a damaged length field must fail fast, not allocate gigabytes.
_MAX_STRING = 64 << 20
_MAX_ARRAY = 1 << 24
_MAX_TENSORS = 1 << 20
_MAX_DIMS = 8

# value type id -> struct format (little-endian); 8 = string, 9 = array are handled apart
_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q"}
_SCALARS |= {11: "<q", 12: "<d"}
_STRING, _ARRAY = 8, 9


class GGUFFormatError(ValueError):
    """The bytes are not a readable GGUF file; the message says what was wrong and where."""


@dataclass(frozen=True)
class TensorInfo:
    """One entry of the tensor table: ``offset`` is relative to the data section."""

    name: str
    dims: tuple[int, ...]
    ggml_type: int
    offset: int

    @property
    def n_elements(self) -> int:
        n = 1
        for d in self.dims:
            n *= d
        return n


@dataclass(frozen=True)
class GGUFHeader:
    """What the header of a GGUF file says about the model inside."""

    version: int
    tensor_count: int
    architecture: str | None
    name: str | None
    data_offset: int  # where tensor data begins (aligned)
    last_tensor_offset: int  # relative to data_offset; must lie inside the file
    metadata: dict[str, Any] = field(repr=False)  # scalars and strings; arrays as their length
    table_offset: int = 0  # where the tensor table begins (the key/value section ends)
    tensors: tuple[TensorInfo, ...] = field(default=(), repr=False)


def read_gguf_header(path: Path) -> GGUFHeader:
    """Parse the header of ``path``; raise ``GGUFFormatError`` if it is not an intact GGUF."""
    size = path.stat().st_size
    with path.open("rb") as raw:
        f = io.BufferedReader(raw, buffer_size=1 << 20)  # type: ignore[arg-type]
        header = _parse(f, size)
    if header.data_offset + header.last_tensor_offset >= size and header.tensor_count:
        raise GGUFFormatError(
            f"tensor data ends early: file is {size} bytes, the tensor table points past "
            f"{header.data_offset + header.last_tensor_offset} (truncated?)"
        )
    return header


def _parse(f: BinaryIO, size: int) -> GGUFHeader:
    magic = f.read(4)
    if magic != MAGIC:
        raise GGUFFormatError(f"not a GGUF file: starts with {magic!r}, expected {MAGIC!r}")
    version = _unpack(f, "<I")
    if version not in _SUPPORTED_VERSIONS:
        raise GGUFFormatError(f"unsupported GGUF version {version} (readable: 2, 3)")
    tensor_count, kv_count = _unpack(f, "<Q"), _unpack(f, "<Q")
    if tensor_count > _MAX_TENSORS or kv_count > _MAX_ARRAY:
        raise GGUFFormatError(f"corrupt header: {tensor_count} tensors, {kv_count} keys")
    metadata: dict[str, Any] = {}
    for i in range(kv_count):
        key = _string(f, f"key {i}")
        metadata[key] = _value(f, _unpack(f, "<I"), key)
    table_offset = f.tell()
    tensors = []
    for i in range(tensor_count):
        name = _string(f, f"tensor {i} name")
        n_dims = _unpack(f, "<I")
        if n_dims > _MAX_DIMS:
            raise GGUFFormatError(f"corrupt tensor table: tensor {name!r} has {n_dims} dims")
        dims = tuple(_unpack(f, "<Q") for _ in range(n_dims))
        ggml_type = _unpack(f, "<I")
        tensors.append(TensorInfo(name, dims, ggml_type, _unpack(f, "<Q")))
    last_offset = max((t.offset for t in tensors), default=0)
    alignment = metadata.get("general.alignment", _DEFAULT_ALIGNMENT)
    if not isinstance(alignment, int) or alignment <= 0:
        raise GGUFFormatError(f"corrupt header: general.alignment = {alignment!r}")
    position = f.tell()
    data_offset = position + (-position % alignment)
    arch = metadata.get("general.architecture")
    name = metadata.get("general.name")
    return GGUFHeader(
        version=version,
        tensor_count=tensor_count,
        architecture=arch if isinstance(arch, str) else None,
        name=name if isinstance(name, str) else None,
        data_offset=data_offset,
        last_tensor_offset=last_offset,
        metadata=metadata,
        table_offset=table_offset,
        tensors=tuple(tensors),
    )


def _unpack(f: BinaryIO, fmt: str) -> Any:
    n = struct.calcsize(fmt)
    data = f.read(n)
    if len(data) != n:
        raise GGUFFormatError("header ends early (truncated file?)")
    return struct.unpack(fmt, data)[0]


def _string(f: BinaryIO, what: str) -> str:
    n = _unpack(f, "<Q")
    if n > _MAX_STRING:
        raise GGUFFormatError(f"corrupt header: {what} claims a {n}-byte string")
    data = f.read(n)
    if len(data) != n:
        raise GGUFFormatError("header ends early (truncated file?)")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise GGUFFormatError(f"corrupt header: {what} is not UTF-8") from None


def _value(f: BinaryIO, vtype: int, key: str) -> Any:
    if vtype in _SCALARS:
        return _unpack(f, _SCALARS[vtype])
    if vtype == _STRING:
        return _string(f, key)
    if vtype == _ARRAY:
        etype, count = _unpack(f, "<I"), _unpack(f, "<Q")
        if count > _MAX_ARRAY or etype == _ARRAY:
            raise GGUFFormatError(f"corrupt header: {key} is an array of {count} (type {etype})")
        if etype in _SCALARS:  # fixed width: skip without decoding
            n = struct.calcsize(_SCALARS[etype]) * count
            if len(f.read(n)) != n:
                raise GGUFFormatError("header ends early (truncated file?)")
        elif etype == _STRING:  # skip: vocabularies may hold byte tokens that are not UTF-8
            for _ in range(count):
                n = _unpack(f, "<Q")
                if n > _MAX_STRING or len(f.read(n)) != n:
                    raise GGUFFormatError(f"corrupt header: {key} holds a damaged string")
        else:
            raise GGUFFormatError(f"corrupt header: {key} has unknown element type {etype}")
        return count  # arrays (vocabularies, merges) are not needed: their length is enough
    raise GGUFFormatError(f"corrupt header: {key} has unknown value type {vtype}")
