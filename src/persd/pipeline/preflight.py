"""Checks a run makes in seconds, before any stage: so a wrong teacher URL fails now, not after
five minutes of student work.

Each check names the config key to change. ``persd run`` stops at the first failing check with
that one line (nothing on disk is touched); ``persd run --dry-run`` runs them all and says
which passed.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from persd.errors import PersdError

if TYPE_CHECKING:
    from persd.config import RunConfig


class PreflightError(PersdError):
    pass


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str  # what was found, or what to change


def _teacher(cfg: RunConfig) -> Check:
    t = cfg.teacher
    if t.server is not None:
        return _model_file("teacher", t.server.model, "teacher.server.model")
    import httpx

    problems = []
    url = t.base_url.rstrip("/") + "/models"
    try:
        # Any HTTP answer (200, 401, 404) means something is there; only no answer fails.
        httpx.get(url, timeout=5.0)
    except httpx.HTTPError as e:
        problems.append(f"teacher.base_url: {t.base_url} does not answer ({type(e).__name__})")
    if t.api_key_env and not os.environ.get(t.api_key_env):
        problems.append(
            f"teacher.api_key_env: the environment variable {t.api_key_env} is not set (export "
            "it, or set teacher.api_key_env: null for an endpoint without a key)"
        )
    if problems:
        return Check("teacher", False, "; ".join(problems))
    return Check("teacher", True, f"{t.base_url} answers")


def _model_file(what: str, model: str, key: str) -> Check:
    from persd.llm.gguf_check import read_gguf_header
    from persd.llm.registry import resolve_model

    try:
        resolved = resolve_model(model)
        if resolved.kind == "gguf" and resolved.path is not None:
            read_gguf_header(resolved.path)
    except PersdError as e:
        return Check(what, False, f"{key}: {e}")
    where = resolved.path or resolved.hub_id
    return Check(what, True, f"{model} ({where})")


def _run_dir(root: Path) -> Check:
    """Writable, or creatable (checked without creating it: a dry run leaves nothing)."""
    existing = root
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    try:
        with tempfile.NamedTemporaryFile(dir=existing, prefix=".persd-preflight-"):
            pass
    except OSError as e:
        return Check(
            "run directory",
            False,
            f"--run-dir: {root} cannot be written ({existing}: {e.strerror})",
        )
    return Check("run directory", True, f"{root} can be written")


def _sandbox(cfg: RunConfig) -> Check:
    from persd.records import Test
    from persd.sandbox import Job, Sandbox

    test = Test(kind="call", source="assert f(2) == 4", call="f(2)", expected="4")
    job = Job(program="def f(x):\n    return x * 2\n", tests=(test,), entry_point="f")
    try:
        with Sandbox(cfg.sandbox.model_copy(update={"workers": 1})) as sandbox:
            result = sandbox.run(job)
    except (PersdError, OSError) as e:
        return Check("sandbox", False, f"sandbox: cannot run programs on this machine: {e}")
    if not result.passed:
        why = result.detail or result.status
        return Check("sandbox", False, f"sandbox: a correct program did not pass ({why})")
    return Check("sandbox", True, "runs a program and judges it")


def run_checks(cfg: RunConfig, root: Path, *, stop_at_first: bool) -> list[Check]:
    """The checks in order; with ``stop_at_first`` raise ``PreflightError`` on a failure."""
    steps = (
        lambda: _model_file("student", cfg.student.model, "student.model"),
        lambda: _teacher(cfg) if cfg.teacher_needed else Check("teacher", True, "not needed"),
        lambda: _run_dir(root),
        lambda: _sandbox(cfg),
    )
    done: list[Check] = []
    for step in steps:
        check = step()
        if not check.ok and stop_at_first:
            raise PreflightError(check.detail)
        done.append(check)
    return done
