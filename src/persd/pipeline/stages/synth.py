"""Test synthesis for pool tasks that come with a reference solution and no tests.

The teacher only proposes INPUTS; every expected output is computed by running the task's
reference in the sandbox. An input is kept when the reference, on two separate runs, returns
the same plain-data value within the CPU limit. A wrong teacher therefore costs coverage, never
correctness: the worst it can do is propose inputs the reference rejects, which are dropped.
"""

from __future__ import annotations

import ast
import asyncio
import re
from collections import Counter
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from persd.pipeline.config import SynthConfig
from persd.pipeline.pool import needs_tests
from persd.pipeline.store import StageFile
from persd.pipeline.teacher_calls import LazyTeacher, TeacherRequest, ask, with_teacher
from persd.prompts import render_chat
from persd.pysource import parse_module
from persd.records import Outcome, SynthesizedTests, Task, TeacherCall, Test
from persd.sandbox import Job, Sandbox
from persd.sandbox.runner import MAX_REPR
from persd.tasks.asserts import call_test

if TYPE_CHECKING:
    from persd.pipeline.context import RunContext

_FENCE = re.compile(r"```[a-zA-Z0-9_+-]*\n(.*?)(?:```|\Z)", re.S)
# The placeholder a probe compares against; the verdict is ignored, only ``actual`` is read.
_PROBE_EXPECTED = "None"


def synth_requests(tasks: Sequence[Task], cfg: SynthConfig) -> list[TeacherRequest]:
    """One request per task: ``cfg.inputs`` calls of the entry point, literals only."""
    return [
        TeacherRequest(
            id=f"{task.id}#t0",
            task=task,
            attempt=None,
            messages=render_chat(
                cfg.template,
                {
                    "task": task.prompt,
                    "entry_point": task.entry_point,
                    "reference": (task.reference or "").strip(),
                    "n": str(cfg.inputs),
                },
            ),
            seed=cfg.seed,
            # The opening fence, the calls, and two spare lines (a blank one, a duplicate):
            # the reply is closed there rather than left to list calls to its token cap.
            max_lines=cfg.inputs + 3,
        )
        for task in tasks
    ]


def parse_calls(text: str, entry_point: str, limit: int) -> list[str]:
    """Distinct one-line calls of ``entry_point`` whose arguments are all literals.

    Reads fenced blocks (or the whole reply when it has none). ``assert f(x) == y`` and
    ``print(f(x))`` lines give their call; anything else is ignored. Literal arguments keep
    every test's input printable in feedback and free of side effects before the call.
    """
    blocks = _FENCE.findall(text) or [text]
    seen: set[str] = set()
    out: list[str] = []
    for line in (ln.strip() for block in blocks for ln in block.splitlines()):
        call = _call_in(line, entry_point)
        if call is None:
            continue
        key = ast.dump(call)
        if key in seen:
            continue
        seen.add(key)
        out.append(ast.unparse(call))
        if len(out) == limit:
            break
    return out


def _call_in(line: str, entry_point: str) -> ast.Call | None:
    if not line or line.startswith("#"):
        return None
    try:
        node: ast.AST = parse_module(line)
    except SyntaxError:
        return None
    body = node.body  # type: ignore[attr-defined]
    if len(body) != 1:
        return None
    stmt = body[0]
    expr = stmt.test if isinstance(stmt, ast.Assert) else getattr(stmt, "value", None)
    if isinstance(expr, ast.Compare):
        expr = expr.left
    if isinstance(expr, ast.Call) and _is_name(expr.func, "print") and len(expr.args) == 1:
        expr = expr.args[0]
    if not (isinstance(expr, ast.Call) and _is_name(expr.func, entry_point)):
        return None
    values = [*expr.args, *(k.value for k in expr.keywords)]
    if any(isinstance(a, ast.Starred) for a in expr.args) or any(
        k.arg is None for k in expr.keywords
    ):
        return None
    try:
        for v in values:
            ast.literal_eval(v)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return None
    return expr


def _is_name(node: ast.AST, name: str) -> bool:
    return isinstance(node, ast.Name) and node.id == name


def _probe(task: Task, call: str, cfg: SynthConfig) -> Job:
    test = Test(kind="call", source=call, call=call, expected=_PROBE_EXPECTED)
    return Job(
        program=task.reference or "",
        tests=(test,),
        entry_point=task.entry_point,
        test_set="all",
        setup_code=task.setup_code,
        cpu_limit_s=cfg.max_cpu_s,
    )


def _value(outcome: Outcome | None) -> tuple[str | None, str]:
    """(the literal repr of the returned value, or None with the reason it is unusable)."""
    if outcome is None:
        return None, "no result"
    if outcome.exception:
        return None, "the reference raised"
    text = outcome.actual or ""
    if len(text) >= MAX_REPR and text.endswith("..."):
        return None, "value too large"
    try:
        value = ast.literal_eval(text)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return None, "not plain data"
    if repr(value) != text or value != value:  # noqa: PLR0124 - NaN is never equal to itself
        return None, "not plain data"
    return text, ""


def probe_task(
    task: Task, calls: Sequence[str], sandbox: Sandbox, cfg: SynthConfig
) -> SynthesizedTests:
    """Run the reference on every call twice; keep the calls it answers identically."""
    jobs = [_probe(task, call, cfg) for call in calls for _ in range(2)]
    feedback = sandbox.run_many(jobs)
    kept: list[Test] = []
    dropped: Counter[str] = Counter()
    for i, call in enumerate(calls):
        runs = feedback[2 * i : 2 * i + 2]
        if any(f.status == "timeout" for f in runs):
            dropped["slower than max_cpu_s"] += 1
            continue
        if any(f.status not in ("passed", "failed") for f in runs):
            reason = next(f.status for f in runs if f.status not in ("passed", "failed"))
            dropped["the reference raised" if reason == "error" else reason] += 1
            continue
        values = [_value(f.outcomes[0] if f.outcomes else None) for f in runs]  # one test
        (first, why), (second, _) = values
        if first is None:
            dropped[why] += 1
        elif first != second:
            dropped["differs between runs"] += 1
        elif len(kept) < cfg.keep_max:
            kept.append(call_test(call, ast.literal_eval(first)))
    return SynthesizedTests(
        id=task.id, task_id=task.id, tests=tuple(kept), proposed=len(calls), dropped=dict(dropped)
    )


def probe_all(
    tasks: Sequence[Task],
    calls: Sequence[TeacherCall],
    out: StageFile,
    sandbox: Sandbox,
    cfg: SynthConfig,
    *,
    on_done: Callable[[int], None] | None = None,
) -> int:
    """Probe every task with a teacher reply and no record in ``out`` yet."""
    by_task = {c.task_id: c for c in calls}
    done = out.ids()
    todo = [t for t in tasks if t.id in by_task and t.id not in done]
    for task in todo:
        proposed = by_task[task.id].code.splitlines()
        out.append([probe_task(task, proposed, sandbox, cfg)])
        if on_done:
            on_done(1)
    return len(todo)


# ---- the synthesize stage of a run -----------------------------------------------------------


def synthesize(ctx: RunContext) -> None:
    """Tests for reference-only pool tasks: teacher inputs, reference outputs."""
    cfg = ctx.config.synth
    pending = [t for t in ctx.raw_pool.tasks if needs_tests(t)]
    todo = [t for t in pending if t.id not in ctx.synth_tests.ids()]
    if not cfg.enabled or not todo:
        return  # nothing to ask or probe: every later call of a run lands here
    requests = [r for r in synth_requests(todo, cfg) if r.id not in ctx.synth_calls.ids()]
    if requests:
        asyncio.run(with_teacher(ctx, lambda lazy: _ask_inputs(ctx, lazy, requests)))
    with ctx.timer.stage("synthesize"), Sandbox(ctx.config.sandbox) as sandbox:
        advance = ctx.progress.start("synthesize: probe", len(todo))
        probe_all(todo, ctx.synth_calls.read(), ctx.synth_tests, sandbox, cfg, on_done=advance)
    ctx.forget_pool()  # the tasks now carry their tests
    made = [r for r in ctx.synth_tests.read() if r.task_id in {t.id for t in pending}]
    kept = sum(len(r.tests) for r in made)
    short = sum(len(r.tests) < cfg.min_tests for r in made)
    ctx.progress.note(
        f"synthesize: {kept} test(s) for {len(made) - short} task(s) from "
        f"{sum(r.proposed for r in made)} proposed input(s); {short} task(s) dropped "
        f"(fewer than {cfg.min_tests} tests survived)"
    )


async def _ask_inputs(ctx: RunContext, lazy: LazyTeacher, requests: list[TeacherRequest]) -> None:
    cfg = ctx.config.synth
    # The teacher's sampling for test inputs is the synth section's, not teach's.
    params = ctx.config.teach.model_copy(
        update={
            "temperature": cfg.temperature,
            "max_new_tokens": cfg.max_new_tokens,
            "seed": cfg.seed,
        }
    )
    async with lazy as get_teacher:
        await ask(
            ctx,
            "synthesize",
            get_teacher,
            requests,
            params,
            ctx.synth_calls,
            lambda text, task: "\n".join(parse_calls(text, task.entry_point, cfg.inputs)),
            label="synthesize: ask",
        )
