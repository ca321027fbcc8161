"""``persd run --dry-run``: what a run would do and what its teacher calls could cost.

Nothing is sampled or called. Counts come from the run directory (a resumed run plans only
what is missing); teacher tokens come from the rendered prompts, with the output at its cap
(``max_new_tokens``) for the worst case and at half of it for a typical one; input tokens
are bounded by the prompt's UTF-8 bytes for the worst case and taken as bytes/4 for a
typical one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from persd.llm.budget import resolve_price, worst_case_tokens_in
from persd.pipeline.pool import needs_tests
from persd.pipeline.stages.synth import synth_requests
from persd.pipeline.stages.teach import solve_requests

if TYPE_CHECKING:
    from persd.pipeline.run import Loop


@dataclass
class Plan:
    tasks: int
    attempts_missing: int
    solve_calls: int
    synth_calls: int  # test-input requests for reference-only tasks
    refine_calls_max: int  # if every missing attempt fails; fewer once attempts have run
    tokens_in: int  # upper bound
    tokens_out_max: int
    cost_typical_usd: float
    cost_max_usd: float
    price_known: bool


def make_plan(loop: Loop) -> Plan:
    cfg = loop.config
    # Tasks still waiting for synthesised tests count as tasks: they will be attempted.
    pending = [t for t in loop.raw_pool.tasks if needs_tests(t)] if cfg.synth.enabled else []
    ready = {t.id for t in loop.pool.tasks}
    tasks = [*loop.pool.tasks, *(t for t in pending if t.id not in ready)]
    attempts_done = loop.attempts.ids()
    n = cfg.attempt.n
    rounds = cfg.rounds
    if rounds.tasks == "fresh":  # each task is attempted in exactly one round
        missing = sum(
            1
            for r in range(rounds.count)
            for t in loop.round_tasks(r)
            for i in range(n)
            if f"{t.id}#r{r}a{i}" not in attempts_done
        )
    else:  # round 0 attempts every task; later rounds at most every task again
        missing = sum(1 for t in tasks for i in range(n) if f"{t.id}#r0a{i}" not in attempts_done)
        missing += (rounds.count - 1) * len(tasks) * n
    synth = [r for r in synth_requests(pending, cfg.synth) if r.id not in loop.synth_calls.ids()]
    solve = [r for r in solve_requests(tasks, cfg.teach) if r.id not in loop.solutions.ids()]
    solve = solve if cfg.teach.solve and cfg.teacher_needed else []
    # Refinements: the failures already known, plus every missing attempt failing.
    known_failed = [a for a, _ in loop.failed_attempts()]
    done_refine = loop.refinements.ids()
    per = cfg.teach.refinements_per_failure
    refine_known = sum(
        1 for a in known_failed for j in range(per) if f"{a.id}#f{j}" not in done_refine
    )
    refine_max = refine_known + missing * per if cfg.teacher_needed else 0
    tokens_in_solve = sum(worst_case_tokens_in(r.messages) for r in solve)
    # A refinement prompt is the solve prompt plus a reference, the attempt and feedback:
    # about three solve prompts' worth plus the feedback cap.
    mean_solve = tokens_in_solve / len(solve) if solve else 1200
    per_refine_in = int(3 * mean_solve + cfg.prompt.feedback_max_chars)
    tokens_in_synth = sum(worst_case_tokens_in(r.messages) for r in synth)
    tokens_in = tokens_in_solve + refine_max * per_refine_in + tokens_in_synth
    calls = len(solve) + refine_max
    tokens_out_max = calls * cfg.teach.max_new_tokens + len(synth) * cfg.synth.max_new_tokens
    local = cfg.teacher.server is not None
    try:
        price = resolve_price(cfg.teacher, local=local)
        known = True
    except Exception:  # an unknown API model: the plan still shows the token counts
        price, known = None, False
    typical = price.cost(tokens_in // 4, tokens_out_max // 2) if price else 0.0
    worst = price.cost(tokens_in, tokens_out_max) if price else 0.0
    return Plan(
        tasks=len(tasks),
        attempts_missing=missing,
        solve_calls=len(solve),
        synth_calls=len(synth),
        refine_calls_max=refine_max,
        tokens_in=tokens_in,
        tokens_out_max=tokens_out_max,
        cost_typical_usd=typical,
        cost_max_usd=worst,
        price_known=known,
    )
