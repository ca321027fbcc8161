"""Progress and throughput of a training run, as a Trainer callback."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Protocol


class Progress(Protocol):
    """Same shape as ``persd.pipeline.progress.Progress`` (train does not import pipeline)."""

    def start(self, stage: str, total: int) -> Callable[[int], None]: ...

    def note(self, message: str) -> None: ...


def make_meter(progress: Progress | None) -> Any:
    from transformers import TrainerCallback

    class _Meter(TrainerCallback):
        """Counts this session's steps, tokens and time (a resumed run starts from a checkpoint's
        counts), and reports progress and loss lines to the caller from rank 0."""

        def __init__(self) -> None:
            self.advance: Callable[[int], None] | None = None
            self.tokens0 = self.step0 = 0
            self.t0 = self.t1 = 0.0
            self.dtype = "float32"

        def on_train_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            self.tokens0, self.step0 = state.num_input_tokens_seen, state.global_step
            self.t0 = time.perf_counter()
            if progress and state.is_world_process_zero:
                self.advance = progress.start("train", state.max_steps)
                self.advance(state.global_step)

        def on_train_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            self.t1 = time.perf_counter()

        def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            if self.advance:
                self.advance(1)

        def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kw: Any) -> None:
            if not (progress and state.is_world_process_zero and logs):
                return
            step = f"step {state.global_step}/{state.max_steps}"
            if "loss" in logs:
                progress.note(f"{step}: loss {logs['loss']:.4f}")
            elif "train_loss" in logs:  # the Trainer's last log: this session's mean
                elapsed = time.perf_counter() - self.t0
                progress.note(f"{step} in {elapsed:.0f} s: mean loss {logs['train_loss']:.4f}")

    return _Meter()
