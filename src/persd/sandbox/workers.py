"""The trusted parent: a pool of warm workers and the per-sample protocol (``Sandbox``).

Each worker is forked from one zygote, a fresh interpreter (``python -I -S``, empty
environment) that preloaded and warmed up once, and forks one confined process per sample.
The parent never forks from itself (it holds the answer key and maybe a model) and never runs
untrusted code; it runs the tests' trusted half (see runner.py).
"""

from __future__ import annotations

import json
import logging
import os
import queue
import select
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from persd.errors import SandboxError
from persd.records import Feedback
from persd.sandbox.channel import Channel, ChannelClosed, ProtocolViolation, set_timeout
from persd.sandbox.config import SandboxConfig
from persd.sandbox.job import Job, imports_named
from persd.sandbox.runner import RunState, run_tests
from persd.sandbox.verdict import build_feedback

log = logging.getLogger(__name__)

_CHILD_DIR = str(Path(__file__).parent)
_BOOT = (
    "import sys; sys.path.insert(0, {dir!r}); from _child import zygote; "
    "del sys.path[0]; zygote.main()"
)
_GRACE_S = 2.0  # how much longer than the sample's limit the parent waits for the worker
_FIRST_OPS = ("ready", "syntax_error", "error", "exited")  # what harness.serve sends first


def _read_paths(extra: Iterable[str]) -> list[str]:
    """What a sample may read: the standard library (not site-packages) and system libs."""
    paths: list[str] = []
    for key in ("stdlib", "platstdlib"):
        root = sysconfig.get_paths()[key]
        if os.path.isdir(root):
            for name in sorted(os.listdir(root)):
                if name not in ("site-packages", "dist-packages"):
                    paths.append(os.path.join(root, name))
    libdir = sysconfig.get_config_var("LIBDIR") or ""
    if os.path.isdir(libdir):
        paths += [os.path.join(libdir, n) for n in os.listdir(libdir) if n.startswith("libpython")]
    paths += ["/lib", "/lib64", "/usr/lib", "/usr/lib64"]
    paths += list(extra)
    return sorted(set(paths))


class _Zygote:
    """The one fresh interpreter the workers are forked from, and its socket."""

    def __init__(self, config: SandboxConfig) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        cfg = {
            "ctrl_fd": theirs.fileno(),
            "scratch_mb": config.scratch_mb,
            "read_paths": _read_paths(config.import_paths),
            "preimport": list(config.preimport),
            "import_on_demand": list(config.import_on_demand),
        }
        boot = _BOOT.format(dir=_CHILD_DIR)
        if config.import_paths:
            boot = f"import sys; sys.path[1:1] = {list(config.import_paths)!r}; " + boot
        self.proc = subprocess.Popen(
            [sys.executable, "-I", "-S", "-c", boot, json.dumps(cfg)],
            pass_fds=[theirs.fileno()],
            # Empty but for eager binding: every symbol is resolved once, here, instead of
            # lazily (a symbol lookup and a write to a shared page) in each sample that first
            # calls it. The worker clears the environment before any sample runs.
            env={"LD_BIND_NOW": "1"},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            cwd="/",
        )
        theirs.close()
        self.ctrl = ours
        self._lock = threading.Lock()

    def fork(self, requests: list[tuple[dict[str, Any], socket.socket]]) -> list[tuple[int, int]]:
        """New workers, one per (config, control socket): each one's pid and a pidfd for it.

        All requests are sent before the first reply is read: the zygote forks them back to
        back instead of waiting for a round trip (and a scheduler slot) each.
        """
        replies: list[tuple[bytes, list[int]]] = []
        with self._lock:
            self.ctrl.settimeout(30.0)
            try:
                for cfg, ctrl in requests:
                    socket.send_fds(self.ctrl, [json.dumps(cfg).encode()], [ctrl.fileno()])
                for _ in requests:
                    data, fds, _flags, _addr = socket.recv_fds(self.ctrl, 1 << 16, 1)
                    replies.append((data, fds))
            except OSError:
                pass
        done = [(int(json.loads(d)["pid"]), fds[0]) for d, fds in replies if d and len(fds) == 1]
        if len(done) < len(requests):
            for _, pidfd in done:
                os.close(pidfd)
            raise SandboxError("sandbox zygote failed to start a worker (see its stderr above)")
        return done

    def close(self) -> None:
        self.ctrl.close()  # it waits for its workers, then exits
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def _exited(pidfd: int, timeout: float) -> bool:
    poller = select.poll()
    poller.register(pidfd, select.POLLIN)
    return bool(poller.poll(timeout * 1000))


def _quiet(report: dict[str, Any]) -> bool:
    """Whether a sample ended with nothing but its replies to show: no limit, no signal, no
    output, no process left behind, and the exit of a harness that stopped answering."""
    return (
        report.get("reason") is None
        and "signal" not in report
        and "infra" not in report
        and not report.get("confine_failed")
        and not report.get("output_bytes")
        and not report.get("leftover")
        and report.get("exit_code") in (0, 1)
    )


class _Worker:
    """One warm worker process (forked by the zygote) and its control socket."""

    def __init__(self, config: SandboxConfig, ctrl: socket.socket, pid: int, pidfd: int) -> None:
        self.config = config
        self.ctrl = ctrl
        self.pid, self._pidfd = pid, pidfd
        self._timeout: float | None = None
        self.features: dict[str, Any] = {}
        self.warnings: list[str] = []
        self._on_demand = frozenset(config.import_on_demand)

    def wait_ready(self) -> _Worker:
        """Wait for the worker's hello (workers start in parallel, then are waited for)."""
        hello = self._recv(timeout=30.0)
        if hello is None or hello.get("op") != "hello":
            self.close()
            raise SandboxError("sandbox worker failed to start (see its stderr above)")
        self.features = hello["features"]
        self.warnings = hello["warnings"]
        return self

    def _recv(self, timeout: float) -> dict[str, Any] | None:
        if timeout != self._timeout:  # a kernel timeout: one recv per report, no poll
            set_timeout(self.ctrl, timeout)
            self._timeout = timeout
        try:
            data = self.ctrl.recv(1 << 20)
        except OSError:  # EAGAIN when the timeout expires
            return None
        return json.loads(data) if data else None

    def alive(self) -> bool:
        return self._pidfd >= 0 and not _exited(self._pidfd, 0)

    def execute(self, job: Job, *, ahead: bool | None = None) -> Feedback:
        """Run ``job`` in a fresh sample process of this worker.

        ``ahead``: whether a check may send its calls ahead (runner.Speculation); the config's
        by default. A run where that could have changed anything is repeated without it: one
        where the check made another call than predicted, or stopped on its own before using
        every call sent ahead while the sample hit a limit, crashed or wrote any output (the
        calls it ran beyond the check's last could be the cause). A sample that went away
        while the check waited for an answer (exit, crash, a limit) never started a later
        call: the harness answers in order, and an answer sent before it went stays readable.
        What is left is a run whose verdict and feedback are those of asking each call in turn.
        A check whose run had to be repeated is not sent ahead again, so a task whose wrong
        samples print (or time out after failing) costs at most one extra run.
        """
        c = self.config
        if ahead is None:
            ahead = c.send_calls_ahead
        wall = job.wall_limit_s or c.wall_limit_s
        cpu = min(job.cpu_limit_s or c.cpu_limit_s, wall)
        limits = {
            "wall_s": wall,
            "wall_max_s": wall * c.busy_wall_factor,
            "cpu_s": cpu,
            "memory_bytes": c.memory_limit_mb << 20,
            "file_bytes": c.file_size_limit_mb << 20,
            "open_files": c.max_open_files,
            "processes": c.max_processes,
            "output_bytes": c.output_limit_kb << 10,
        }
        if self._on_demand:
            names = imports_named(job.program, self._on_demand)
            names += imports_named(job.setup_code, self._on_demand) if job.setup_code else []
            if names:
                limits["imports"] = names  # the worker loads them before it forks the sample
        ours, theirs = socket.socketpair()
        first: dict[str, Any] | None = None
        state = RunState()
        try:
            socket.send_fds(self.ctrl, [json.dumps(limits).encode()], [theirs.fileno()])
        except OSError as e:
            raise SandboxError(f"sandbox worker is gone: {e}") from None
        finally:
            theirs.close()
        wall_max = wall * c.busy_wall_factor  # the worker's limit for a starved sample
        ch = Channel(ours, deadline=time.monotonic() + wall_max + _GRACE_S)
        try:
            ch.send({"program": job.program, "setup": job.setup_code})
            reply = ch.recv()
            if reply.get("op") not in _FIRST_OPS:
                raise ProtocolViolation(f"unexpected first reply {str(reply.get('op'))!r}")
            first = reply
            if first.get("op") == "ready":
                state = run_tests(
                    ch,
                    job.tests,
                    test_context=job.test_context,
                    entry_point=job.entry_point,
                    speculate=ahead,
                )
                if not (state.unused_ahead or state.mispredicted):
                    ch.send({"op": "done"})  # else hang up: the sample stops at its next reply
        except ChannelClosed:
            state.closed = True
        except ProtocolViolation as e:
            state.corrupt = str(e)
        finally:
            ch.close()
        report = self._recv(timeout=wall_max + 2 * _GRACE_S)
        if report is None:
            raise SandboxError("sandbox worker stopped answering")
        if state.mispredicted or (
            state.unused_ahead and not (state.closed or state.exited) and not _quiet(report)
        ):
            if state.ahead is not None:
                state.ahead.give_up()  # at most one repeated run per check
            return self.execute(job, ahead=False)
        report["wall_limit_s"] = wall
        return build_feedback(
            first, state, report, n_tests=len(job.tests), test_set=job.test_set, cpu_limit_s=cpu
        )

    def close(self) -> None:
        self.ctrl.close()  # the worker exits when its socket closes
        if self._pidfd < 0:
            return
        if not _exited(self._pidfd, 5.0):
            signal.pidfd_send_signal(self._pidfd, signal.SIGKILL)
            _exited(self._pidfd, 5.0)
        os.close(self._pidfd)
        self._pidfd = -1


class Sandbox:
    """Run untrusted programs against tests. Thread-safe; use as a context manager."""

    def __init__(self, config: SandboxConfig | None = None) -> None:
        self.config = config or SandboxConfig()
        self._base = Path(tempfile.mkdtemp(prefix="persd-sandbox-"))
        os.chmod(self._base, 0o711)
        self._idle: queue.Queue[_Worker] = queue.Queue()
        self._lock = threading.Lock()
        self._count = 0
        self._closed = False
        self._zygote = _Zygote(self.config)
        try:
            starting = self._start(self.config.workers)
        except SandboxError:
            self._zygote.close()
            raise
        try:
            workers = [w.wait_ready() for w in starting]
        except SandboxError:
            for w in starting:
                w.close()
            self._zygote.close()
            raise
        self.features, self.warnings = workers[0].features, workers[0].warnings
        for w in self.warnings:
            log.warning("sandbox: %s", w)
        for worker in workers:
            self._idle.put(worker)

    def _start(self, n: int) -> list[_Worker]:
        """Fork ``n`` workers, each with its own scratch directory and sample uid."""
        with self._lock:
            indices = range(self._count + 1, self._count + n + 1)
            self._count += n
        requests, theirs = [], []
        for index in indices:
            scratch = self._base / f"w{index}"
            scratch.mkdir(mode=0o711)
            cfg = {
                "scratch_base": str(scratch),
                # A uid range per Sandbox, so two sandboxes on one machine don't share a
                # process budget; one uid per worker, so one sample's processes are all of
                # that uid.
                "sample_uid": self.config.sample_uid + (os.getpid() % 65536) * 256 + index % 256,
            }
            pair = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
            requests.append((cfg, pair[1]))
            theirs.append(pair)
        try:
            forked = self._zygote.fork(requests)
        except SandboxError:
            for ours, _ in theirs:
                ours.close()
            raise
        finally:
            for _, t in theirs:
                t.close()
        return [
            _Worker(self.config, ours, pid, pidfd)
            for (ours, _), (pid, pidfd) in zip(theirs, forked, strict=True)
        ]

    def _spawn(self) -> _Worker:
        return self._start(1)[0].wait_ready()

    def run(self, job: Job) -> Feedback:
        """Run one job on the next free worker; an infra failure respawns that worker."""
        if self._closed:
            raise SandboxError("sandbox is closed")
        worker = self._idle.get()
        try:
            return worker.execute(job)
        except SandboxError as e:
            worker.close()
            worker = self._spawn()
            return Feedback(status="infra_error", test_set=job.test_set, detail=str(e))
        finally:
            self._idle.put(worker)

    def run_many(
        self, jobs: Iterable[Job], *, on_result: Callable[[int, Feedback], None] | None = None
    ) -> list[Feedback]:
        """Run jobs concurrently on every worker; results in input order."""
        jobs = list(jobs)
        results: list[Feedback | None] = [None] * len(jobs)
        for i, fb in self.imap(jobs):
            results[i] = fb
            if on_result:
                on_result(i, fb)
        return [r for r in results if r is not None]

    def imap(self, jobs: Iterable[Job]) -> Iterator[tuple[int, Feedback]]:
        """Yield (index, feedback) as results arrive."""
        from concurrent.futures import ThreadPoolExecutor, as_completed

        with ThreadPoolExecutor(max_workers=self.config.workers) as pool:
            futures = {pool.submit(self.run, job): i for i, job in enumerate(jobs)}
            for future in as_completed(futures):
                yield futures[future], future.result()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        workers = []
        while not self._idle.empty():
            workers.append(self._idle.get())
        for w in workers:  # hang up on every worker first: they exit in parallel
            w.ctrl.close()
        for w in workers:
            w.close()
        self._zygote.close()
        shutil.rmtree(self._base, ignore_errors=True)

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
