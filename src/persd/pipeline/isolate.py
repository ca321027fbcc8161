"""Run a heavy stage (training, evaluation) in a fresh process, so its memory is returned.

Torch and the allocator keep freed memory in the process; loading a model for training, then
again for evaluation, then again for the next variant, would stack gigabytes in one process
(measured: 8.9 GB peak for train + two evaluations of the 0.5B student in one process). A
spawned child exits after each stage and its memory goes back to the machine.

The child reports progress (bars it starts and their ticks), one-line notes and its result
over a pipe; a ``PersdError`` raised there is raised again here with the same one-line message.
"""

from __future__ import annotations

import multiprocessing as mp
import traceback
from collections.abc import Callable
from typing import Any

from persd.errors import PersdError


class StageProcessError(PersdError):
    pass


def _child(
    conn: Any,
    fn: Callable[..., Any],
    args: tuple,
    kwargs: dict,
    log_path: str | None = None,
    parent: int | None = None,
    starts: bool = False,
) -> None:
    if parent is not None:
        _exit_with(parent)
    if log_path is not None:
        _output_to(log_path)

    def tick(n: int) -> None:
        conn.send(("tick", n))

    def note(message: str) -> None:
        conn.send(("note", message))

    def start(stage: str, total: int) -> Callable[[int], None]:
        conn.send(("start", (stage, total)))
        return tick

    if starts:
        kwargs = {**kwargs, "start": start}
    try:
        result = fn(*args, tick=tick, note=note, **kwargs)
        conn.send(("ok", result))
    except PersdError as e:
        conn.send(("persd", str(e)))
    except BaseException:  # noqa: BLE001 - everything else crosses as text, then re-raised
        conn.send(("crash", traceback.format_exc()))
    finally:
        conn.close()


def _exit_with(parent: int) -> None:
    """End this stage process when persd ends, however it ends. A SIGTERM or SIGKILL to
    ``persd run`` skips its cleanup, and the stage process would train or score on alone for
    half an hour (it did), holding the CPU and memory the next run needs. A daemon thread
    watches for the parent to change (the orphan is re-parented) and exits at once; what the
    stage had written (checkpoints, cached teacher scores) is kept for the resume."""
    import os
    import threading
    import time

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(1)

    if os.getppid() != parent:  # persd died while this process was starting
        os._exit(1)
    threading.Thread(target=watch, name="persd-parent-watch", daemon=True).start()


def _output_to(log_path: str) -> None:
    """Send this process's stdout and stderr, C level included (transformers' loading bars,
    llama.cpp's load logs, library warnings), to ``log_path``: the terminal shows persd's own
    progress only. Progress and notes travel over the pipe, unaffected."""
    import os
    import sys
    import warnings

    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    sys.stdout.flush()
    sys.stderr.flush()
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    warnings.simplefilter("default")  # shown once each, in the log
    # llama-cpp-python opens /dev/null twice on import and keeps both open for its destructors
    # (llama_cpp/_utils.py); closing them early would break those. Every stage log that loaded
    # it ended with "ResourceWarning: unclosed file ... /dev/null", which is not this stage's.
    warnings.filterwarnings(
        "ignore", r"unclosed file <_io\.TextIOWrapper name='/dev/null'", ResourceWarning
    )
    os.environ.setdefault("TQDM_DISABLE", "1")  # bars are noise in a file


def run_isolated(
    name: str,
    fn: Callable[..., Any],
    *args: Any,
    on_tick: Callable[[int], None] | None = None,
    on_note: Callable[[str], None] | None = None,
    on_start: Callable[[str, int], Callable[[int], None]] | None = None,
    log_path: str | None = None,
    **kwargs: Any,
) -> Any:
    """``fn(*args, tick=..., note=..., **kwargs)`` in a spawned process; its return value comes
    back, its ticks and notes go to ``on_tick`` and ``on_note`` as they arrive. With
    ``on_start``, ``fn`` also gets ``start(stage, total)``, which begins a bar here
    (``on_start`` returns its ``advance``) that the child's later ticks move (a stage whose
    total only the child knows: training's optimizer steps). With ``log_path``, everything the
    child prints goes to that file instead of the terminal."""
    ctx = mp.get_context("spawn")
    receive, send = ctx.Pipe(duplex=False)
    import os

    child_args = (send, fn, args, kwargs, log_path, os.getpid(), on_start is not None)
    proc = ctx.Process(target=_child, args=child_args, name=f"persd-{name}")
    proc.start()
    send.close()
    advance = on_tick
    try:
        while True:
            try:
                kind, payload = receive.recv()
            except EOFError:
                proc.join()
                raise StageProcessError(
                    f"{name}: the stage process died (exit code {proc.exitcode}); "
                    "out of memory? rerun the same command to resume"
                ) from None
            if kind == "tick":
                if advance:
                    advance(payload)
                continue
            if kind == "start" and on_start:
                advance = on_start(*payload)
                continue
            if kind == "note":
                if on_note:
                    on_note(payload)
                continue
            proc.join()
            if kind == "ok":
                return payload
            if kind == "persd":
                raise StageProcessError(payload)
            raise RuntimeError(f"{name} failed in its stage process:\n{payload}")
    finally:
        if proc.is_alive():
            proc.kill()
            proc.join()
