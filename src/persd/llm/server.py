"""Managed local teacher: llama-cpp-python's OpenAI-compatible server, started and stopped by persd.

llama-cpp-python's server answers one request at a time (one model behind one lock), so
parallel *slots* are separate processes on separate ports, each with its own threads; the
teacher client sends each request to the least busy slot. With ``parallel`` > 1 a slot is
persd's own batch server instead (``persd.llm.batch_server``): one process decodes that many
requests together in one llama.cpp batch, reading the weights once per step for all of them.

No server may outlive persd, however persd ends:
- normal exit or an exception: the context manager stops every slot (SIGTERM, then SIGKILL,
  to the slot's whole process group), and an atexit hook catches what a caller forgot;
- persd killed (SIGKILL, OOM): the kernel sends the slot SIGKILL (PR_SET_PDEATHSIG), and a
  watcher thread inside the slot exits it when its parent changes. The watcher is the one that
  always works: PDEATHSIG fires when the *thread* that started the slot ends, so it is set only
  when slots are started from the main thread.

The slot process runs ``python -m persd.llm.server <llama_cpp.server args>``: this module's
``__main__`` starts the watcher, then hands over to ``llama_cpp.server``.
"""

from __future__ import annotations

import atexit
import ctypes
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import TracebackType

import httpx

from persd.errors import PersdError
from persd.llm.teacher_config import ServerConfig

_PARENT_ENV = "PERSD_SERVER_PARENT_PID"
_PR_SET_PDEATHSIG = 1
_live: set[ManagedServers] = set()


class ServerError(PersdError):
    """The managed llama.cpp server could not start or died."""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _log_tail(path: Path, lines: int = 3) -> str:
    try:
        text = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return " | ".join(line.strip() for line in text[-lines:])


def _describe_exit(code: int) -> str:
    if code < 0:
        return f"killed by {signal.Signals(-code).name}"
    return f"exit code {code}"


class _Slot:
    """One server process on one port."""

    def __init__(self, proc: subprocess.Popen[bytes], port: int, log_path: Path) -> None:
        self.proc, self.port, self.log_path = proc, port, log_path
        self.base_url = f"http://127.0.0.1:{port}/v1"

    def stop(self, grace_s: float = 5.0) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)  # the slot leads its own group
                self.proc.wait(grace_s)
            except ProcessLookupError:
                pass
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        else:
            try:  # the leader died; anything it left in its group goes too
                os.killpg(self.proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass


class ManagedServers:
    """``cfg.slots`` llama.cpp server processes for one GGUF model, as a context manager."""

    def __init__(self, cfg: ServerConfig, *, log_dir: Path, model_path: Path | None = None):
        self.cfg = cfg
        self.log_dir = Path(log_dir)
        if model_path is None:
            self.model_name, self.model_path = _resolve_gguf(cfg.model)
        else:
            self.model_name, self.model_path = model_path.stem, Path(model_path)
        self._slots: list[_Slot] = []

    @property
    def endpoint_id(self) -> str:
        """Names the model, not the port (which changes every run), for stable cache keys, and
        how the server samples: replies drawn under llama-cpp-python's own defaults (repeat
        penalty 1.1, top-k 40, min-p 0.05; ``legacy_sampling``) keep the key they were cached
        under, plain sampling gets its own."""
        base = f"llama.cpp:{self.model_path.name}:{self.model_path.stat().st_size}"
        return base if self.cfg.legacy_sampling else f"{base}:plain"

    @property
    def extra_body(self) -> dict[str, float | int]:
        """Fields every request to these slots carries so the server samples only what the
        request's temperature and top_p say: llama-cpp-python's server otherwise applies a
        repeat penalty of 1.1 (greedy included), top-k 40 and min-p 0.05 of its own."""
        if self.cfg.legacy_sampling:
            return {}
        return {"repeat_penalty": 1.0, "top_k": 0, "min_p": 0.0}

    @property
    def base_urls(self) -> list[str]:
        return [s.base_url for s in self._slots]

    @property
    def capacity(self) -> int:
        """Requests the slots answer at once: one per slot, ``parallel`` per batch slot."""
        return self.cfg.slots * self.cfg.parallel

    @property
    def pids(self) -> list[int]:
        return [s.proc.pid for s in self._slots]

    def start(self) -> ManagedServers:
        """Start every slot, then wait until each answers ``GET /v1/models``."""
        self.log_dir.mkdir(parents=True, exist_ok=True)
        _live.add(self)
        pending: list[_Slot] = []
        try:
            # All slots load the model at once; then each is waited for in turn.
            for i in range(self.cfg.slots):
                pending.append(self._spawn(i))
            deadline = time.monotonic() + self.cfg.startup_timeout_s
            for i in range(len(pending)):
                for _retry in range(3):  # another program may take the port we picked
                    if self._wait_ready(pending[i], deadline):
                        break
                    if "address already in use" not in _log_tail(pending[i].log_path, 20).lower():
                        raise self._start_error(pending[i])
                    pending[i] = self._spawn(i)
                else:
                    raise self._start_error(pending[i])
                self._slots.append(pending[i])
        except BaseException:
            for slot in pending:
                slot.stop(grace_s=1.0)
            self.stop()
            raise
        return self

    def _spawn(self, index: int) -> _Slot:
        cfg, port = self.cfg, _free_port()
        threads = str(cfg.threads_per_slot)
        common = [
            "--model", str(self.model_path), "--model_alias", self.model_name,
            "--host", "127.0.0.1", "--port", str(port), "--n_ctx", str(cfg.n_ctx),
        ]  # fmt: skip
        if cfg.batched:  # persd's batch server: all requests in flight in one batch
            args = [sys.executable, "-m", "persd.llm.batch_server", *common,
                    "--parallel", str(cfg.parallel), "--threads", threads,
                    "--lookup", str(cfg.lookup)]  # fmt: skip
        else:
            # Never cut a streamed reply short because another request came in.
            args = [sys.executable, "-m", "persd.llm.server", *common,
                    "--n_threads", threads, "--n_threads_batch", threads,
                    "--interrupt_requests", "false"]  # fmt: skip
            if cfg.chat_format:
                args += ["--chat_format", cfg.chat_format]
        log_path = self.log_dir / f"llama-server-{index}.log"
        env = {**os.environ, _PARENT_ENV: str(os.getpid())}
        with log_path.open("ab") as log:
            log.write(f"--- persd: starting slot {index} on port {port}: {args}\n".encode())
            log.flush()
            on_main = threading.current_thread() is threading.main_thread()
            proc = subprocess.Popen(
                args,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,  # its own process group: stop() kills all of it
                preexec_fn=_die_with_parent if on_main else None,
            )
        return _Slot(proc, port, log_path)

    def _wait_ready(self, slot: _Slot, deadline: float) -> bool:
        """True once the slot answers; False if it exited; raises on timeout."""
        with httpx.Client(timeout=2.0) as http:
            while time.monotonic() < deadline:
                if slot.proc.poll() is not None:
                    return False
                try:
                    if http.get(f"{slot.base_url}/models").status_code == 200:
                        return True
                except httpx.TransportError:
                    pass
                time.sleep(0.1)
        raise self._start_error(slot)

    def _start_error(self, slot: _Slot) -> ServerError:
        code = slot.proc.poll()
        slot.stop(grace_s=1.0)
        what = (
            f"did not answer within {self.cfg.startup_timeout_s:g}s"
            if code is None
            else f"exited ({_describe_exit(code)})"
        )
        return ServerError(
            f"llama.cpp server for {self.model_path} {what}; log {slot.log_path}: "
            f"{_log_tail(slot.log_path) or '(empty)'}"
        )

    def diagnose(self, base_url: str) -> str | None:
        """Why ``base_url`` may be unreachable, for the teacher's error line."""
        for slot in self._slots:
            if slot.base_url == base_url.rstrip("/"):
                code = slot.proc.poll()
                state = "is running" if code is None else f"exited ({_describe_exit(code)})"
                return f"the managed llama.cpp server {state}; see its log {slot.log_path}"
        return None

    def stop(self) -> None:
        """Stop every slot. Safe to call twice."""
        for slot in self._slots:
            slot.stop()
        self._slots = []
        _live.discard(self)

    def __enter__(self) -> ManagedServers:
        return self.start()

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def _resolve_gguf(name_or_path: str) -> tuple[str, Path]:
    """(model name, GGUF path) of a registry name or a path; pulls a registry model if needed."""
    from persd.llm.registry import resolve_model

    model = resolve_model(name_or_path)
    if model.kind != "gguf" or model.path is None:
        raise ServerError(
            f"teacher.server.model '{name_or_path}' is not a GGUF file (it is {model.kind}); "
            "the managed llama.cpp server needs a .gguf model or a registry name"
        )
    return model.name, model.path


_libc = ctypes.CDLL(None, use_errno=True)


def _die_with_parent() -> None:
    """Runs in the forked child before exec: SIGKILL it when the parent (thread) dies."""
    _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


@atexit.register
def _stop_all() -> None:
    for servers in list(_live):
        servers.stop()


def _watch_parent(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(0.2)
    os.killpg(os.getpgrp(), signal.SIGKILL)


def watch_parent() -> None:
    """Inside a slot: exit when persd goes (see the module docstring), from a watcher thread."""
    parent = int(os.environ.pop(_PARENT_ENV, "0"))
    if parent and os.getppid() != parent:  # persd died before we got here
        sys.exit(1)
    if parent:
        threading.Thread(target=_watch_parent, args=(parent,), daemon=True).start()


def _child_main() -> None:
    """Inside the slot: exit when persd goes, then run llama_cpp.server with our argv."""
    import runpy

    watch_parent()
    sys.argv = ["llama_cpp.server", *sys.argv[1:]]
    runpy.run_module("llama_cpp.server", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    _child_main()
