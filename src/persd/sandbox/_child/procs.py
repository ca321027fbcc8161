"""What a worker reads of and does to processes through /proc, and the scratch directory's
removal: small functions of the worker's supervision loop, kept apart from it."""

from __future__ import annotations

import os
import signal
from typing import Any

_CLK_TCK = os.sysconf("SC_CLK_TCK")


def remove_tree(name: str, dir_fd: int) -> None:
    """Remove ``name`` under ``dir_fd`` and everything beneath it, never following a link.

    Not ``shutil.rmtree``: shutil maps zlib, bz2 and lzma (30 memory areas every fork copies).
    The sample's processes are all gone by now; errors are ignored, as with ignore_errors.
    """
    try:
        os.rmdir(name, dir_fd=dir_fd)  # the usual case: an empty scratch directory
        return
    except NotADirectoryError:
        _ignore(os.unlink, name, dir_fd=dir_fd)
        return
    except OSError:
        pass
    try:
        fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=dir_fd)
    except OSError:  # a symlink, a special file, or a directory we may not open
        if _ignore(os.unlink, name, dir_fd=dir_fd):
            return
        _ignore(os.chmod, name, 0o700, dir_fd=dir_fd)  # made unreadable by its owner
        try:
            fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=dir_fd)
        except OSError:
            return
    try:
        for entry in os.scandir(fd):
            remove_tree(entry.name, fd)
    finally:
        os.close(fd)
    _ignore(os.rmdir, name, dir_fd=dir_fd)


def _ignore(fn: Any, *args: Any, **kwargs: Any) -> bool:
    try:
        fn(*args, **kwargs)
    except OSError:
        return False
    return True


def _stat_fields(pid: int) -> list[bytes]:
    """The fields of /proc/<pid>/stat after the command name (state first); [] if gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()
    except (OSError, IndexError):
        return []


def waiting_for_cpu(pid: int) -> bool:
    """Whether the sample's main thread is runnable (R) or in the kernel (D), not asleep."""
    return _stat_fields(pid)[:1] in ([b"R"], [b"D"])


def address_space(pid: int) -> int:
    """Bytes the sample has mapped (vsize, what RLIMIT_AS limits); 0 once it is exiting."""
    try:
        return int(_stat_fields(pid)[20])
    except (IndexError, ValueError):
        return 0


def cpu_seconds(pid: int) -> float:
    fields = _stat_fields(pid)
    try:
        return (int(fields[11]) + int(fields[12])) / _CLK_TCK
    except (IndexError, ValueError):
        return 0.0


def kill_children() -> int:
    """Last resort: SIGKILL anything still parented to us. Returns how many there were."""
    me, n = str(os.getpid()).encode(), 0
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/stat", "rb") as f:
                    ppid = f.read().rsplit(b")", 1)[1].split()[1]
            except OSError:
                continue
            if ppid == me:
                n += 1
                try:
                    os.kill(int(name), signal.SIGKILL)
                except OSError:
                    pass
    return n
