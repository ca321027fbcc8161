"""The train stage: which variants a round trains, on which data, from which starting point,
and where each model lands. ``train_variant`` trains one, as a plain function of serialisable
arguments, so ``isolate.run_isolated`` can run it in its own process (its memory is returned
after)."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from persd.pipeline.isolate import run_isolated
from persd.pipeline.rundir import finished, model_name
from persd.pipeline.store import RunDirError
from persd.train.config import TrainConfig

if TYPE_CHECKING:
    from persd.pipeline.context import RunContext


def train_variant(
    settings_json: str,
    data_json: str,
    base_model: str,
    out: str,
    *,
    tick: Callable[[int], None],
    note: Callable[[str], None],
    start: Callable[[str, int], Callable[[int], None]],
) -> str:
    """Fine-tune ``base_model`` on training sets (a JSON list of JSONL paths); returns the
    adapter/model directory. Its bars (optimizer steps; the teacher's scoring of on-policy rows)
    and loss lines are drawn by the parent, so a long training run in ``persd run`` shows
    where it is."""
    from persd.train.sft import train

    data = [Path(p) for p in json.loads(data_json)]
    result = train(
        TrainConfig.model_validate_json(settings_json),
        data,
        base_model,
        Path(out),
        progress=_StageProgress(start, note),
    )
    return str(result.model_dir)


class _StageProgress:
    """A training ``Progress`` in a stage process: bars and notes cross to the parent."""

    def __init__(
        self, start: Callable[[str, int], Callable[[int], None]], note: Callable[[str], None]
    ) -> None:
        self.start = start
        self.note = note


# ---- the train stage of a run ----------------------------------------------------------------


def has_rows(path: Path) -> bool:
    return path.exists() and bool(path.read_text().strip())


def trained_model(ctx: RunContext, variant: str, round_: int) -> Path | None:
    """The newest model of ``variant`` trained in a round <= ``round_`` (a round with no
    examples trains nothing and leaves the previous round's model in place)."""
    for r in range(round_, -1, -1):
        out = ctx.paths.model(variant, r)
        if finished(out):
            return out / "final"
    return None


def trained_models(ctx: RunContext) -> dict[str, Path]:
    """Every model a previous invocation finished training, by evaluation name."""
    found: dict[str, Path] = {}
    for variant in ctx.config.train.variants:
        if finished(ctx.paths.model(variant)):
            found[variant] = ctx.paths.model(variant) / "final"
    variant = ctx.config.round_variant if ctx.config.train.variants else None
    for r in range(1, ctx.config.rounds.count):
        if variant and finished(ctx.paths.model(variant, r)):
            found[model_name(variant, r)] = ctx.paths.model(variant, r) / "final"
    return found


def train_round(ctx: RunContext, round_: int = 0) -> dict[str, Path]:
    """The train stage: fine-tune the student on each ``train.variants`` set (round 0) or on
    the round variant (later rounds), each in its own process; a finished model is kept, an
    interrupted one resumes from its newest checkpoint."""
    variants = ctx.config.train.variants if round_ == 0 else (ctx.config.round_variant,)
    trained: dict[str, Path] = {}
    for variant in variants:
        out = ctx.paths.model(variant, round_)
        name = model_name(variant, round_)
        if finished(out):
            trained[name] = out / "final"
            continue
        if not has_rows(ctx.paths.data(round_) / f"{variant}.jsonl"):
            # Nothing new this round: the previous round's model stays the student.
            ctx.progress.note(f"train: {name} has no examples; not trained")
            continue
        trained[name] = _train_one(ctx, variant, round_, out)
    return trained


def _train_one(ctx: RunContext, variant: str, round_: int, out: Path) -> Path:
    """One variant of one round, in its own process (``train_variant``)."""
    name = model_name(variant, round_)
    continuing = round_ > 0 and ctx.config.rounds.training == "continue"
    rounds = [round_] if round_ == 0 or continuing else list(range(round_ + 1))
    data = [ctx.paths.data(r) / f"{variant}.jsonl" for r in rounds]
    data = [d for d in data if has_rows(d)]
    base, init_adapter = _starting_point(ctx, variant, round_) if continuing else (None, None)
    resume = out.exists() and any(out.glob("checkpoint-*"))
    if out.exists() and not resume:
        shutil.rmtree(out)  # a start that wrote no checkpoint: nothing to keep
    extra = {
        "format": "chat" if ctx.chat else "base",
        "resume": resume,
        "init_adapter": init_adapter,
    }
    if ctx.gated and ctx.config.gate.epochs:
        # Every epoch's checkpoint stays, for the gate to score.
        extra |= {"save_strategy": "epoch", "save_total_limit": None}
    cfg = ctx.config.train
    if variant == "persd_onpolicy":
        extra["onpolicy"] = _onpolicy_settings(ctx)
    settings = TrainConfig.model_validate(cfg.model_dump(exclude={"variants"}) | extra)
    with ctx.timer.stage(f"train {name}"):
        ctx.progress.note(f"train: {name} ({', '.join(map(str, data))}) -> {out}")
        model_dir = run_isolated(
            f"train {name}",
            train_variant,
            settings.model_dump_json(),
            json.dumps([str(d) for d in data]),
            base or ctx.config.student.model,
            str(out),
            on_note=lambda m: ctx.progress.note(f"train {name}: {m}"),
            on_start=lambda stage, total: ctx.progress.start(f"{stage} {name}", total),
            log_path=ctx.stage_log(f"train-{name}"),
        )
    return Path(model_dir)


def _onpolicy_settings(ctx: RunContext) -> dict[str, object]:
    """``train.onpolicy`` with the run's defaults: the managed teacher server's model scores
    the samples, and its scores are cached in the run directory (kept with the run, like the
    teacher's replies), so a retraining or another seed reuses them."""
    settings = ctx.config.train.onpolicy.model_dump()
    if settings["teacher"] is None:
        assert ctx.config.teacher.server is not None  # RunConfig refuses an API-only scorer
        settings["teacher"] = ctx.config.teacher.server.model
    if settings["cache"] is None:
        settings["cache"] = str(ctx.paths.teacher_scores)
    return settings


def _starting_point(ctx: RunContext, variant: str, round_: int) -> tuple[str | None, str | None]:
    """(base model, adapter to start from) when round ``round_`` continues the previous
    round's model: a LoRA continues its adapter, a full fine-tune its weights."""
    previous = trained_model(ctx, variant, round_ - 1)
    if previous is None:
        raise RunDirError(
            f"{ctx.store.root}: round {round_} continues round {round_ - 1}'s "
            f"{variant} model, and none was trained"
        )
    if ctx.config.train.method == "lora":
        return None, str(previous)
    return str(previous), None
