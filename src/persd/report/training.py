"""Training logs of one trained variant: the loss curve and ``train_summary.json``.

``persd.train.sft`` leaves TensorBoard events in ``<out>/runs/<time_host>/`` (written as
training goes) and ``trainer_state.json`` in each checkpoint (its ``log_history`` holds every
logged loss up to that checkpoint). Events are preferred: they outlive pruned checkpoints and
see steps after the last one. A run directory copied without them still gets a report.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from persd.pipeline.rundir import RunPaths
from persd.report.data import LossCurve, TrainingRun

log = logging.getLogger(__name__)

LOSS_TAG = "train/loss"  # what transformers' TensorBoardCallback names the training loss


def training_runs(run_dir: Path, configured: list[str]) -> list[TrainingRun]:
    """One entry per variant that was trained, or was configured to be."""
    models = RunPaths(run_dir).models
    dirs = sorted(p for p in models.iterdir() if p.is_dir()) if models.is_dir() else []
    runs = {d.name: _one(d.name, d, _summary(d / "train_summary.json")) for d in dirs}
    # A summary straight under models/ (a flattened copy of one variant's directory) names
    # its variant in "variants"; the committed default run is kept that way.
    flat = _summary(models / "train_summary.json")
    if flat is not None:
        name = ",".join(flat.get("variants") or {}) or "model"
        if name not in runs:
            runs[name] = _one(name, models, flat)
        elif runs[name].summary is None:
            runs[name] = runs[name].model_copy(update={"summary": flat})
    for name in configured:
        if name not in runs:
            note = f"not trained: models/{name}/ does not exist"
            runs[name] = TrainingRun(variant=name, note=note)
    return [runs[k] for k in sorted(runs)]


def _one(name: str, where: Path, summary: dict[str, Any] | None) -> TrainingRun:
    curve, note = _from_tensorboard(where / "runs")
    curve = curve or _from_trainer_state(where)
    if curve is None:
        note = note or (
            "no training logs: no TensorBoard events (runs/) and no checkpoint "
            "trainer_state.json were kept"
        )
    return TrainingRun(variant=name, summary=summary, curve=curve, note="" if curve else note)


def _summary(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _curve(points: dict[int, float], source: str) -> LossCurve | None:
    if not points:
        return None
    steps = sorted(points)
    return LossCurve(steps=steps, losses=[points[s] for s in steps], source=source)


def _from_trainer_state(out: Path) -> LossCurve | None:
    states = [p / "trainer_state.json" for p in out.glob("checkpoint-*")]
    states = [p for p in states if p.is_file()]
    if not states:
        return None
    newest = max(states, key=lambda p: _step_of(p.parent.name))
    try:
        history = json.loads(newest.read_text(encoding="utf-8")).get("log_history") or []
    except (OSError, ValueError, AttributeError):
        return None
    points = {
        int(row["step"]): float(row["loss"])
        for row in history
        if isinstance(row, dict) and "loss" in row and "step" in row
    }
    return _curve(points, "trainer_state.json")


def _step_of(name: str) -> int:
    tail = name.removeprefix("checkpoint-")
    return int(tail) if tail.isdigit() else -1


def _from_tensorboard(runs: Path) -> tuple[LossCurve | None, str]:
    """(the curve, or why the events gave none: "" when there are none)."""
    files = sorted(runs.glob("*/events.out.tfevents.*"), key=lambda p: p.stat().st_mtime)
    if not files:
        return None, ""
    try:  # installed with persd[train], which is what wrote the events
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    except ImportError:
        return None, f"no loss curve: {runs} holds TensorBoard events; pip install tensorboard"
    points: dict[int, float] = {}
    # Oldest session first: a resumed session's values replace the earlier ones.
    for d in dict.fromkeys(p.parent for p in files):
        acc = EventAccumulator(str(d), size_guidance={"scalars": 0})  # 0: keep every point
        try:
            acc.Reload()
        except Exception as e:  # a torn or foreign event file: a curve from the others
            log.warning("%s: unreadable TensorBoard events (%s)", d, e)
            continue
        if LOSS_TAG in acc.Tags().get("scalars", []):
            points.update({int(ev.step): float(ev.value) for ev in acc.Scalars(LOSS_TAG)})
    curve = _curve(points, "TensorBoard")
    return curve, "" if curve else f"no loss curve: no '{LOSS_TAG}' in {runs}"
