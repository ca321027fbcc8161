"""Q5_0 weights served as Q8_0 (llm/gguf_q8.py): every weight dequantises to the same float,
everything else in the file is kept byte for byte, and llama.cpp runs the copy."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from persd.llm.gguf_q8 import Q5_0, Q8_0, q5_0_blocks_as_q8_0, q8_copy, write_q8_copy

gguf = pytest.importorskip("gguf")
from gguf.quants import dequantize, quantize  # noqa: E402

QT = gguf.GGMLQuantizationType


def _values(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(n).astype(np.float32)
    x[::97] *= 40  # outliers: blocks whose scale is set by one large value
    x[5 * 32 : 6 * 32] = 0  # an all-zero block
    return x


def test_every_q5_0_value_dequantises_identically_as_q8_0() -> None:
    x = _values(64 * 1024, seed=0).reshape(64, 1024)
    q5 = quantize(x, QT.Q5_0)
    q8 = q5_0_blocks_as_q8_0(q5.reshape(-1)).reshape(64, -1)
    assert q8.shape[1] == 1024 // 32 * 34
    a, b = dequantize(q5, QT.Q5_0), dequantize(q8, QT.Q8_0)
    assert a.dtype == b.dtype == np.float32
    assert np.array_equal(a.view(np.uint32), b.view(np.uint32))  # bit for bit, not close
    # Every value of the 5-bit range occurs, so every bit of the layout was exercised.
    ints = q8.reshape(-1, 34)[:, 2:].view(np.int8)
    assert set(np.unique(ints)) == set(range(-16, 16))


def _tiny_gguf(path: Path) -> dict[str, np.ndarray]:
    """A GGUF of four tensors in four formats, with scalar, string and array metadata."""
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_string("general.name", "tiny")
    w.add_uint32("llama.block_count", 1)
    w.add_array("tokenizer.ggml.tokens", ["a", "b", "<c>"])
    tensors = {
        "a.q5": quantize(_values(4 * 96, 1).reshape(4, 96), QT.Q5_0),
        "b.f32": _values(7 * 3, 2).reshape(7, 3),
        "c.q8": quantize(_values(2 * 64, 3).reshape(2, 64), QT.Q8_0),
        "d.q5": quantize(_values(3 * 32, 4).reshape(3, 32), QT.Q5_0),
    }
    kinds = {"a.q5": QT.Q5_0, "b.f32": QT.F32, "c.q8": QT.Q8_0, "d.q5": QT.Q5_0}
    for name, data in tensors.items():
        w.add_tensor(name, data, raw_dtype=kinds[name])
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return tensors


def test_the_copy_changes_only_the_q5_0_tensors(tmp_path: Path) -> None:
    src, dst = tmp_path / "m.gguf", tmp_path / "m.q8.gguf"
    _tiny_gguf(src)
    assert write_q8_copy(src, dst) == 2
    a, b = gguf.GGUFReader(str(src)), gguf.GGUFReader(str(dst))
    assert {k: f.contents() for k, f in a.fields.items() if not k.startswith("GGUF.")} == {
        k: f.contents() for k, f in b.fields.items() if not k.startswith("GGUF.")
    }
    assert [t.name for t in a.tensors] == [t.name for t in b.tensors]
    for ta, tb in zip(a.tensors, b.tensors, strict=True):
        assert list(ta.shape) == list(tb.shape)
        if ta.tensor_type == Q5_0:
            assert tb.tensor_type == Q8_0
            da = dequantize(np.asarray(ta.data), QT.Q5_0)
            db = dequantize(np.asarray(tb.data), QT.Q8_0)
            assert np.array_equal(da.view(np.uint32), db.view(np.uint32)), ta.name
        else:
            assert tb.tensor_type == ta.tensor_type
            assert np.asarray(ta.data).tobytes() == np.asarray(tb.data).tobytes(), ta.name
    assert not (tmp_path / "m.q8.gguf.part").exists()


def test_q8_copy_is_written_once_and_follows_the_source(tmp_path: Path) -> None:
    src = tmp_path / "m.gguf"
    _tiny_gguf(src)
    cache = tmp_path / "cache"
    first = q8_copy(src, cache)
    assert first != src and first.parent == cache
    stamp = first.stat().st_mtime_ns
    assert q8_copy(src, cache) == first and first.stat().st_mtime_ns == stamp  # reused
    src.write_bytes(src.read_bytes())  # a new file at the same path: a new copy
    assert q8_copy(src, cache) != first


def test_an_unwritable_cache_serves_the_file_as_it_is(tmp_path: Path) -> None:
    src = tmp_path / "m.gguf"
    _tiny_gguf(src)
    blocked = tmp_path / "not-a-dir"
    blocked.write_text("")  # the cache "directory" is a file: nothing can be written there
    assert q8_copy(src, blocked / "serving") == src


def test_a_file_without_q5_0_is_served_as_it_is(tmp_path: Path) -> None:
    w = gguf.GGUFWriter(str(tmp_path / "f.gguf"), "llama")
    w.add_tensor("x", _values(64, 5))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    assert q8_copy(tmp_path / "f.gguf", tmp_path / "cache") == tmp_path / "f.gguf"
    assert not (tmp_path / "cache").exists()


def test_llama_cpp_runs_the_copy_with_the_same_logits(smollm2_gguf: Path, tmp_path: Path) -> None:
    """SmolLM2 re-quantised to Q5_0 by llama.cpp, then copied as Q8_0: llama.cpp loads the
    copy and its logits are the original's up to the kernels' last bits."""
    llama_cpp = pytest.importorskip("llama_cpp")
    import ctypes

    q5 = tmp_path / "smollm2-q5_0.gguf"
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = 8  # LLAMA_FTYPE_MOSTLY_Q5_0
    params.allow_requantize = True
    params.nthread = 2
    assert (
        llama_cpp.llama_model_quantize(
            str(smollm2_gguf).encode(), str(q5).encode(), ctypes.byref(params)
        )
        == 0
    )
    q8 = tmp_path / "smollm2-q8.gguf"
    assert write_q8_copy(q5, q8) > 0
    prompt = b"def fibonacci(n):\n    "
    logits = []
    for path in (q5, q8):
        llm = llama_cpp.Llama(str(path), n_ctx=128, n_threads=2, verbose=False)
        llm.eval(llm.tokenize(prompt))
        row = llama_cpp.llama_get_logits_ith(llm._ctx.ctx, -1)
        logits.append(np.ctypeslib.as_array(row, shape=(llm.n_vocab(),)).copy())
        llm.close()
    a, b = logits
    assert np.abs(a).max() > 1  # real logits, not an empty buffer
    assert a.argmax() == b.argmax()
    assert np.abs(a - b).max() < 0.01 * np.abs(a).max()
