"""The sample side: compile the program, then answer the trusted parent's calls.

Runs inside the confined sample process. It never sees an expected value and never decides
a verdict: it evaluates the expressions the parent asks for and sends back plain data. Whatever
the program does to this module (patching it, its frames, builtins) can only change what the
parent is told the values were, which is no more than the program could do by computing them.
"""

from __future__ import annotations

import builtins
import linecache
import os
import socket
import sys
import traceback
from typing import Any

from . import codec

PROGRAM_FILE, SETUP_FILE, TEST_FILE = "<candidate>", "<setup>", "<test>"
MAX_TEXT = 2000
EXIT_MEMORY = 123  # MemoryError while the harness itself was replying


def _short(text: str) -> str:
    return text if len(text) <= MAX_TEXT else text[: MAX_TEXT - 3] + "..."


def _safe_repr(value: Any) -> str:
    try:
        return _short(repr(value))
    except BaseException as e:  # noqa: BLE001 - a hostile __repr__ may raise anything
        return f"<repr failed: {type(e).__name__}>"


def _exception(e: BaseException) -> dict:
    """Type, message and the traceback restricted to the program's own lines."""
    frames = [
        f for f in traceback.extract_tb(e.__traceback__) if f.filename in (PROGRAM_FILE, SETUP_FILE)
    ]
    tb = "".join(traceback.format_list(frames))
    try:
        message = e.msg if isinstance(e, SyntaxError) else str(e)
    except BaseException:  # noqa: BLE001 - a hostile __str__ may raise anything
        message = "<str failed>"
    lineno = e.lineno if isinstance(e, SyntaxError) else None
    return {
        "exc": type(e).__name__,
        "msg": _short(message),
        "tb": _short(tb),
        "line": lineno,
    }


def _register(filename: str, source: str) -> None:
    # Lets tracebacks show the program's lines; the program's own line numbers, no offset.
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)


def serve(sock: socket.socket) -> None:
    """Receive the job, run the program, answer requests until told to stop."""
    send = sock.sendall
    dumps = codec.dumps
    reader = codec.FrameReader(sock.recv, 1 << 40)  # the parent is trusted: no cap

    def recv() -> dict:
        return codec.parse_frame(reader.next())

    job = recv()
    program, setup = job["program"], job.get("setup", "")
    ns: dict[str, Any] = {"__name__": "__candidate__", "__builtins__": builtins}
    _register(PROGRAM_FILE, program)
    try:
        code = compile(program, PROGRAM_FILE, "exec", dont_inherit=True)
    except (SyntaxError, ValueError, RecursionError, MemoryError) as e:
        send(dumps({"op": "syntax_error", **_exception(e)}))
        return
    for filename, source in ((PROGRAM_FILE, None), (SETUP_FILE, setup)):
        try:
            if source is None:
                exec(code, ns)
            elif source:
                _register(SETUP_FILE, source)
                exec(compile(source, SETUP_FILE, "exec", dont_inherit=True), ns)
        except SystemExit:
            send(dumps({"op": "exited", "where": filename}))
            return
        except BaseException as e:  # noqa: BLE001 - report, never crash the harness
            send(dumps({"op": "error", "where": filename, **_exception(e)}))
            return
    send(dumps({"op": "ready"}))
    while True:
        request = recv()
        op = request.get("op")
        if op == "done":
            return
        try:
            if op == "eval":
                value = eval(compile(request["expr"], TEST_FILE, "eval", dont_inherit=True), ns)
            elif op == "apply":
                fn = ns[request["fn"]]
                value = fn(*codec.decode(request["args"]), **codec.decode(request["kwargs"]))
            else:
                raise ValueError(f"unknown request {op!r}")
        except SystemExit:
            send(dumps({"op": "exited"}))
            return
        except BaseException as e:  # noqa: BLE001
            send(dumps({"op": "raised", **_exception(e)}))
            continue
        try:
            reply = {"op": "value", "value": codec.encode(value)}
        except codec.Unencodable as e:
            reply = {"op": "unencodable", "type": str(e), "repr": _safe_repr(value)}
        except RecursionError:
            reply = {"op": "unencodable", "type": "too deeply nested", "repr": ""}
        send(dumps(reply))


def main(fd: int) -> None:
    """Entry point in the sample process; exits without running interpreter teardown."""
    # The parent's socketpair(): saying what it is spares three queries (getsockname, ...).
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM, 0, fileno=fd)
    code = 0
    try:
        serve(sock)
    except MemoryError:
        code = EXIT_MEMORY
    except EOFError:
        code = 0  # the parent hung up: nothing more to answer
    except BaseException:  # noqa: BLE001
        code = 1
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except BaseException:  # noqa: BLE001
        pass
    os._exit(code)
