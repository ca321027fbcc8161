"""Train one variant, as a plain function of serialisable arguments, so
``isolate.run_isolated`` can run it in its own process (its memory is returned after)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path


def train_variant(
    settings_json: str,
    data_json: str,
    base_model: str,
    out: str,
    *,
    tick: Callable[[int], None],
    note: Callable[[str], None],
) -> str:
    """Fine-tune ``base_model`` on training sets (a JSON list of JSONL paths); returns the
    adapter/model directory. Steps and losses go back to the parent as notes, so a long
    training run in ``persd run`` shows where it is."""
    import json

    from persd.train.config import TrainConfig
    from persd.train.sft import train

    data = [Path(p) for p in json.loads(data_json)]
    progress = _StepNotes(note)
    result = train(
        TrainConfig.model_validate_json(settings_json),
        data,
        base_model,
        Path(out),
        progress=progress,
    )
    return str(result.model_dir)


class _StepNotes:
    """A training ``Progress`` for a stage process: every loss line becomes a note that says
    how many optimizer steps are done of how many."""

    def __init__(self, note: Callable[[str], None]) -> None:
        self._note = note
        self._total = 0

    def start(self, stage: str, total: int) -> Callable[[int], None]:
        self._total = total
        self._note(f"{stage}: {total} optimizer steps")
        return lambda n: None

    def note(self, message: str) -> None:
        self._note(f"{message} (of {self._total} steps)" if self._total else message)
