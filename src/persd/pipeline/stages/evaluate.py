"""The evaluate stage: the base student and every trained model (each at the checkpoint the
gate found best for it) on the run's benchmarks, with the same settings; each against the
base, paired per task."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from persd.evaluate.paired import Paired, paired
from persd.pipeline.model_eval import evaluate_one
from persd.pipeline.rundir import GateResult, read_gate
from persd.pipeline.stages.gate import per_task
from persd.pipeline.stages.train import trained_models

if TYPE_CHECKING:
    from persd.evaluate.multistep import EvalReport
    from persd.pipeline.context import RunContext


def evaluate_models(
    ctx: RunContext, trained: dict[str, Path] | None = None, gate: GateResult | None = None
) -> dict[str, dict[str, EvalReport]]:
    """The evaluate stage: the base student and each trained model with the same settings.
    With a gate, each variant is scored at the checkpoint the gate found best for it."""
    if trained is None:
        trained = trained_models(ctx)
    if gate is None:
        gate = read_gate(ctx.store.root)
    if gate is not None:
        trained = _at_best_checkpoint(trained, gate)
    results: dict[str, dict[str, EvalReport]] = {}
    for name, model in [("base", None), *trained.items()]:
        for bench in ctx.config.evaluate.benchmarks:
            out = ctx.paths.eval(name, bench)
            results.setdefault(name, {})[bench] = evaluate_one(ctx, name, model, bench, out, None)
    return results


def _at_best_checkpoint(trained: dict[str, Path], gate: GateResult) -> dict[str, Path]:
    """Each variant at its best checkpoint, named for it (persd_combined@epoch1)."""
    best = {
        row.candidate.variant: row.candidate
        for row in gate.rows
        if row.decision != "not its variant's best"
    }
    return {
        (best[n].label if n in best else n): (Path(best[n].path) if n in best else p)
        for n, p in trained.items()
    }


def versus_base(ctx: RunContext, names: Sequence[str]) -> dict[str, dict[str, Paired]]:
    """Each evaluated model against the base, per benchmark, paired per task."""
    out: dict[str, dict[str, Paired]] = {}
    for bench in ctx.config.evaluate.benchmarks:
        base_dir = ctx.paths.eval("base", bench)
        if not (base_dir / "samples_base.jsonl").exists():
            continue
        base = per_task(base_dir)
        for name in names:
            model_dir = ctx.paths.eval(name, bench)
            if name != "base" and (model_dir / "samples_base.jsonl").exists():
                out.setdefault(name, {})[bench] = paired(base, per_task(model_dir))
    return out
