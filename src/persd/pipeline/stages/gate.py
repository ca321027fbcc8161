"""The held-out gate: which trained model a run keeps, judged on tasks no model trained on.

A trained student is only a result if it beats the student it started from on tasks it never
saw. Each trained variant is scored at each epoch's checkpoint on the pool's validation tasks,
with the decoding evaluation uses, and paired per task against the base (tasks gained, tasks
lost, exact McNemar p). A variant keeps its best checkpoint; the run keeps the best variant
only when it clears ``gate.min_net_gain`` (and ``gate.max_p`` when set), else the base.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from persd.evaluate.paired import Paired, paired
from persd.jsonl import json_objects
from persd.pipeline.config import GateConfig
from persd.pipeline.model_eval import evaluate_one
from persd.pipeline.rundir import Candidate, GateResult, GateRow, write_gate

if TYPE_CHECKING:
    from persd.pipeline.context import RunContext


def candidates(variant: str, final: Path, *, epochs: bool) -> list[Candidate]:
    """``final`` and, with ``epochs``, every earlier epoch's checkpoint beside it (the last
    epoch's checkpoint holds the same weights as ``final``)."""
    found = [Candidate(variant=variant, checkpoint="final", path=str(final))]
    if not epochs:
        return found
    by_step: list[tuple[int, float, Path]] = []
    for ckpt in final.parent.glob("checkpoint-*"):
        state = ckpt / "trainer_state.json"
        if not (ckpt / "adapter_config.json").is_file() or not state.is_file():
            continue
        data = json.loads(state.read_text())
        by_step.append((int(data.get("global_step", 0)), float(data.get("epoch") or 0), ckpt))
    by_step.sort()
    earlier = [
        Candidate(variant=variant, checkpoint=f"epoch {round(epoch)}", path=str(path))
        for _, epoch, path in by_step[:-1]  # the last one is final's twin
        if epoch > 0 and abs(epoch - round(epoch)) < 1e-6
    ]
    return earlier + found


def rule_text(cfg: GateConfig) -> str:
    rule = f"gained - lost >= {cfg.min_net_gain}"
    return rule + (f" and p <= {cfg.max_p:g}" if cfg.max_p is not None else "")


def _clears(p: Paired, cfg: GateConfig) -> bool:
    return p.net >= cfg.min_net_gain and (cfg.max_p is None or p.p_value <= cfg.max_p)


def decide(
    base: dict[str, bool], scored: list[tuple[Candidate, dict[str, bool]]], cfg: GateConfig
) -> GateResult:
    """Pair every candidate with the base; keep each variant's best, then the best overall
    if it clears the rule. Ties go to the earlier checkpoint (fewer steps from the base)."""
    pairs = [(c, paired(base, verdicts)) for c, verdicts in scored]
    best: dict[str, tuple[Candidate, Paired]] = {}
    for c, p in pairs:  # candidates come in training order within a variant
        if c.variant not in best or p.net > best[c.variant][1].net:
            best[c.variant] = (c, p)
    winner = max(best.values(), key=lambda cp: cp[1].net, default=None)
    kept = winner if winner is not None and _clears(winner[1], cfg) else None
    rows = []
    for c, p in pairs:
        if kept is not None and c == kept[0]:
            decision = "kept"
        elif best[c.variant][0] == c:
            decision = "best of its variant; no gain" if not _clears(p, cfg) else "not kept"
        else:
            decision = "not its variant's best"
        rows.append(GateRow(candidate=c, vs_base=p, decision=decision))
    n, rule = len(base), rule_text(cfg)
    if kept is not None:
        c, p = kept
        verdict = (
            f"{c.label} is the result: {p.describe()} on validation, which clears the rule ({rule})"
        )
    elif winner is not None:
        c, p = winner
        verdict = (
            f"the base is the result: no trained model cleared the rule ({rule}) on {n} "
            f"validation tasks; the best, {c.label}, had {p.describe()}"
        )
    else:
        verdict = "the base is the result: nothing was trained"
    return GateResult(
        validation_tasks=n,
        base_passed=sum(base.values()),
        rule=rule,
        rows=rows,
        kept=kept[0].label if kept else "base",
        kept_path=kept[0].path if kept else None,
        verdict=verdict,
    )


def per_task(eval_dir: Path) -> dict[str, bool]:
    """Task id -> passed, from an evaluation's step-0 samples (one greedy sample per task;
    with n > 1 a task counts as passed when its first sample passed)."""
    out: dict[str, bool] = {}
    for _, row in json_objects(eval_dir / "samples_base.jsonl", "an evaluation's samples"):
        if row.get("index", 0) == 0:
            out[row["task_id"]] = bool(row["passed"])
    return out


# ---- the gate stage of a run -----------------------------------------------------------------


def validate(ctx: RunContext, trained: dict[str, Path]) -> GateResult | None:
    """The held-out gate (gate.py): base and every trained checkpoint on the validation
    tasks; the decision is written to ``gate.json``."""
    tasks = ctx.pool.validation
    if not tasks or not trained:
        return None
    base_dir = ctx.paths.validation("base")
    evaluate_one(ctx, "base", None, "validation", base_dir, tasks)
    base = per_task(base_dir)
    scored = []
    for name, final in trained.items():
        for cand in candidates(name, final, epochs=ctx.config.gate.epochs):
            out = ctx.paths.validation(cand.label)
            evaluate_one(ctx, cand.label, Path(cand.path), "validation", out, tasks)
            scored.append((cand, per_task(out)))
    result = decide(base, scored, ctx.config.gate)
    write_gate(ctx.store.root, result)
    ctx.progress.note(f"gate: {result.verdict}")
    return result
