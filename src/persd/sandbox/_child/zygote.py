"""The zygote: one warm interpreter that forks the pool's workers.

Started as a fresh interpreter with a scrubbed environment (``python -I -S``), it holds no
task data and no secrets. It imports the preloaded modules and warms up once, then forks a
worker (worker.py) whenever the trusted parent asks, so the workers share its warmed-up
pages instead of each starting an interpreter, and a fork of it has nothing to leak.
"""

from __future__ import annotations

import json
import os
import socket
import sys
from typing import Any

from . import codec, harness
from .worker import Worker

ZYGOTE_FD = 249  # the zygote's socket to the trusted parent (SOCK_SEQPACKET)
CTRL_FD = 250  # a worker's control socket to the trusted parent (SOCK_SEQPACKET)


_WARM_UP_PROGRAM = """
def f(xs: list[int], k: int = 2) -> list[int]:
    \"\"\"Doc.\"\"\"
    out = [x * k for x in xs if x % 2]
    return sorted({i: str(i) for i in out}.keys(), key=lambda v: -v) + [sum(xs)]
class C:
    def g(self, s: str) -> str:
        return "".join(reversed(s)).upper() + f"{len(s):d}"
"""


def _warm_up() -> None:
    """Do once, here, the lazy first-time work every sample would otherwise repeat.

    The first compile, exec, JSON round trip and traceback in a process fill caches; done
    after each fork, that costs ~2 ms per sample, several times the rest of the sample.
    Only our own fixed program runs here, never a sample's.
    """
    ns: dict[str, Any] = {}
    exec(compile(_WARM_UP_PROGRAM, harness.PROGRAM_FILE, "exec", dont_inherit=True), ns)
    value = ns["f"]([1, 2, 3]) + [ns["C"]().g("ab")]
    tree = codec.encode({"v": (value, {1.5, None}, b"x")})
    codec.decode(codec.parse_frame(codec.dumps({"value": tree})[codec.HEADER_SIZE :])["value"])
    eval(compile("f([5]) == [10, 5]", harness.TEST_FILE, "eval", dont_inherit=True), ns)
    try:
        ns["f"](None)
    except TypeError as e:
        harness._exception(e)


def _serve(cfg: dict[str, Any], ctrl: socket.socket) -> None:
    """A worker's loop: one job (limits + the sample's socket) in, one report out."""
    worker = Worker(cfg)
    ctrl.send(json.dumps(worker.setup()).encode())
    while True:
        try:
            data, fds, _flags, _addr = socket.recv_fds(ctrl, 1 << 16, 1)
        except OSError:
            data = b""
        if not data:  # the parent hung up: nothing to flush or finalize, so skip teardown
            os._exit(0)
        job = json.loads(data)
        if not fds:
            ctrl.send(json.dumps({"op": "report", "infra": "no socket passed"}).encode())
            continue
        try:
            report = worker.run(job, fds[0])
        except Exception as e:  # noqa: BLE001 - report, keep serving
            report = {"op": "report", "infra": f"{type(e).__name__}: {e}"}
        ctrl.send(json.dumps(report).encode())


def _fork_worker(cfg: dict[str, Any], ctrl_fd: int) -> int:
    """Fork one worker serving ``ctrl_fd``; in the zygote, return its pid."""
    pid = os.fork()
    if pid:
        return pid
    try:  # the worker: never returns into the zygote's loop
        os.close(ZYGOTE_FD)  # a worker can't ask for more workers
        os.dup2(ctrl_fd, CTRL_FD, inheritable=False)
        os.close(ctrl_fd)
        _serve(cfg, socket.socket(fileno=CTRL_FD))
    except BaseException:  # noqa: BLE001 - the parent sees the socket close
        import traceback

        traceback.print_exc()
    os._exit(1)


def _reap(block: bool) -> None:
    while True:
        try:
            pid, _ = os.waitpid(-1, 0 if block else os.WNOHANG)
        except ChildProcessError:
            return
        if not pid:
            return


def main() -> None:
    cfg = json.loads(sys.argv[1])
    for name in cfg.get("preimport", ()):
        try:
            __import__(name)
        except ImportError:
            pass
    import ctypes  # noqa: F401 - what every worker's set-up uses

    _warm_up()
    os.dup2(int(cfg["ctrl_fd"]), ZYGOTE_FD, inheritable=False)
    os.close(int(cfg["ctrl_fd"]))
    zygote = socket.socket(fileno=ZYGOTE_FD)
    while True:
        _reap(block=False)  # workers the parent replaced
        try:
            data, fds, _flags, _addr = socket.recv_fds(zygote, 1 << 16, 1)
        except OSError:
            data = b""
        if not data:
            break
        if len(fds) != 1:
            for fd in fds:
                os.close(fd)
            zygote.send(json.dumps({"op": "error", "why": "no socket passed"}).encode())
            continue
        pid = _fork_worker({**cfg, **json.loads(data)}, fds[0])
        os.close(fds[0])
        pidfd = os.pidfd_open(pid)  # not reaped yet: the pid is still this worker's
        socket.send_fds(zygote, [json.dumps({"op": "spawned", "pid": pid}).encode()], [pidfd])
        os.close(pidfd)
    # The parent hung up (it closes every worker's socket first): wait for them, so their
    # CPU time is accounted to us and, through us, to the parent.
    _reap(block=True)
    os._exit(0)
