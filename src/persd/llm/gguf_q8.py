"""Serve Q5_0 weights as Q8_0: the same numbers, in a format this CPU multiplies faster.

Why: Qwen2.5's small models have rows of 896 and 4864 values, not multiples of the 256 that
k-quants need, so a "Q4_K_M" file of the 0.5B student holds most of its matrices as Q5_0 (252M
of the layers' weights; only the FFN down-projections are Q4_K/Q6_K). llama.cpp's Q5_0 kernel
rebuilds every weight's fifth bit for every row it multiplies, about 60% of a 16-sequence
decoding step here (docs/BENCHMARKS.md); its Q8_0 kernel reads the bytes as they are. Both
formats store a float16 scale
``d`` per block of 32 values, Q5_0 an integer ``q`` in [-16, 15] and Q8_0 one in [-127, 127],
and a value is ``d * q`` in both, so a Q5_0 block is rewritten as a Q8_0 block with the same
scale and the same integers: every weight dequantises to the identical float (tested). Only the
kernels that multiply them change, so logits differ in the last bits, as they do between batch
sizes (docs/BENCHMARKS.md). The file grows by 12 bytes per 32 Q5_0 values (0.5B: 491 to 637 MB).

The training side is unaffected: transformers dequantises the original file, whose values are
the same; a LoRA adapter applies to either file alike.
"""

from __future__ import annotations

import hashlib
import logging
import os
import struct
from pathlib import Path
from typing import BinaryIO

import numpy as np

from persd.errors import PersdError
from persd.llm.gguf_check import GGUFFormatError, GGUFHeader, TensorInfo, read_gguf_header

Q5_0, Q8_0 = 6, 8  # ggml type ids
_BLOCK = 32
_Q5_0_BYTES, _Q8_0_BYTES = 22, 34  # float16 d, then 4 bytes of high bits + 16 of nibbles / 32 int8
_CHUNK_BLOCKS = 1 << 20  # ~22 MB of Q5_0 in, ~34 MB of Q8_0 out at a time
_SUFFIX = ".q8serve.gguf"

log = logging.getLogger(__name__)


def q5_0_blocks_as_q8_0(raw: np.ndarray) -> np.ndarray:
    """Rewrite Q5_0 blocks (uint8, ``n * 22`` bytes) as Q8_0 blocks (``n * 34`` bytes).

    ggml's Q5_0 block: ``d`` (float16), ``qh`` (uint32: bit j is the fifth bit of value j),
    ``qs[16]`` (value j in the low nibble of byte j, value j + 16 in the high one); the value
    is ``d * (q - 16)``. The Q8_0 block is ``d`` and the 32 integers ``q - 16`` as int8."""
    blocks = raw.reshape(-1, _Q5_0_BYTES)
    qh = blocks[:, 2:6].copy().view("<u4")  # (n, 1)
    qs = blocks[:, 6:]
    j = np.arange(16, dtype=np.uint32)
    high_lo = (((qh >> j) & 1) << 4).astype(np.uint8)
    high_hi = (((qh >> (j + 16)) & 1) << 4).astype(np.uint8)
    out = np.empty((blocks.shape[0], _Q8_0_BYTES), dtype=np.uint8)
    out[:, :2] = blocks[:, :2]
    lo = ((qs & 0x0F) | high_lo).astype(np.int16) - 16
    hi = ((qs >> 4) | high_hi).astype(np.int16) - 16
    out[:, 2:18] = lo.astype(np.int8).view(np.uint8)
    out[:, 18:] = hi.astype(np.int8).view(np.uint8)
    return out.reshape(-1)


def has_q5_0(path: Path) -> bool:
    """Whether any tensor of the GGUF file at ``path`` is stored as Q5_0."""
    return any(t.ggml_type == Q5_0 for t in read_gguf_header(path).tensors)


def write_q8_copy(src: Path, dst: Path) -> int:
    """Write ``src`` to ``dst`` with every Q5_0 tensor as Q8_0 and everything else byte for
    byte (the key/value section, other tensors); the number of tensors rewritten.

    Written to ``dst`` + ``.part`` and renamed, so a file at ``dst`` is always complete."""
    header = read_gguf_header(src)
    alignment = header.metadata.get("general.alignment", 32)
    size = src.stat().st_size
    ordered = sorted(header.tensors, key=lambda t: t.offset)
    ends = [t.offset for t in ordered[1:]] + [size - header.data_offset]
    old_span = {t.name: end - t.offset for t, end in zip(ordered, ends, strict=True)}
    new_size = {}
    for t in header.tensors:
        if t.ggml_type == Q5_0:
            if t.n_elements % _BLOCK:
                raise GGUFFormatError(f"{src}: Q5_0 tensor {t.name} has {t.n_elements} values")
            new_size[t.name] = t.n_elements // _BLOCK * _Q8_0_BYTES
        else:
            new_size[t.name] = old_span[t.name]  # its bytes and their padding, unchanged
    offsets: dict[str, int] = {}
    at = 0
    for t in ordered:
        offsets[t.name] = at
        at += new_size[t.name]
        at += -at % alignment
    part = dst.with_name(dst.name + ".part")
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        rewritten = _write(src, part, header, ordered, offsets, old_span, alignment)
    except BaseException:
        part.unlink(missing_ok=True)
        raise
    os.replace(part, dst)
    return rewritten


def _write(
    src: Path,
    part: Path,
    header: GGUFHeader,
    ordered: list[TensorInfo],
    offsets: dict[str, int],
    old_span: dict[str, int],
    alignment: int,
) -> int:
    rewritten = 0
    with src.open("rb") as fin, part.open("wb") as fout:
        fout.write(fin.read(header.table_offset))  # magic, counts, keys and values, as they are
        for t in header.tensors:  # the table, in its own order
            name = t.name.encode("utf-8")
            fout.write(struct.pack("<Q", len(name)) + name + struct.pack("<I", len(t.dims)))
            fout.write(struct.pack(f"<{len(t.dims)}Q", *t.dims))
            ggml_type = Q8_0 if t.ggml_type == Q5_0 else t.ggml_type
            fout.write(struct.pack("<IQ", ggml_type, offsets[t.name]))
        fout.write(b"\0" * (-fout.tell() % alignment))
        data = fout.tell()
        for t in ordered:
            fout.write(b"\0" * (data + offsets[t.name] - fout.tell()))
            fin.seek(header.data_offset + t.offset)
            if t.ggml_type == Q5_0:
                _rewrite(fin, fout, t)
                rewritten += 1
            else:
                _copy(fin, fout, old_span[t.name])
        fout.write(b"\0" * (-(fout.tell() - data) % alignment))
        fout.flush()
        os.fsync(fout.fileno())
    return rewritten


def _rewrite(fin: BinaryIO, fout: BinaryIO, t: TensorInfo) -> None:
    left = t.n_elements // _BLOCK
    while left:
        n = min(left, _CHUNK_BLOCKS)
        raw = np.frombuffer(fin.read(n * _Q5_0_BYTES), dtype=np.uint8)
        if raw.size != n * _Q5_0_BYTES:
            raise GGUFFormatError(f"tensor {t.name} ends early (truncated file?)")
        fout.write(q5_0_blocks_as_q8_0(raw).tobytes())
        left -= n


def _copy(fin: BinaryIO, fout: BinaryIO, n: int) -> None:
    while n:
        chunk = fin.read(min(n, 64 << 20))
        if not chunk:
            raise GGUFFormatError("tensor data ends early (truncated file?)")
        fout.write(chunk)
        n -= len(chunk)


def q8_copy(path: Path, cache: Path) -> Path:
    """The Q8_0 serving copy of ``path`` under ``cache``, written on first use; ``path``
    itself when it holds no Q5_0 tensor.

    Keyed by the source's resolved path, size and modification time, so a changed file gets a
    new copy; a copy is written whole and renamed, so two processes racing write the same
    bytes and either rename wins."""
    path = Path(path)
    try:
        if not has_q5_0(path):
            return path
    except GGUFFormatError as e:
        raise PersdError(f"{path}: not a readable GGUF file ({e})") from None
    st = path.stat()
    key = hashlib.sha256(f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}".encode()).hexdigest()
    dst = cache / f"{path.stem}-{key[:12]}{_SUFFIX}"
    if not dst.exists():
        try:
            write_q8_copy(path, dst)
        except OSError as e:  # a read-only or full cache: serve the file as it is, slower
            log.warning("%s: serving it as it is; no Q8_0 copy could be written (%s)", path, e)
            return path
    return dst
