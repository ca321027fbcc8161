"""The teach stage (pipeline/stages/teach.py), one path for every teacher: on a local
teacher's slots each task's refinements go to the slot that just solved it, right after its
solution is verified; pinned or not, the stage asks exactly what solving everything first and
then refining would ask.

The teacher is a recorder standing in for persd's llama.cpp slots; the sandbox is real."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from pathlib import Path

import pytest

from persd.config import load_config
from persd.llm.base import Message, SamplingParams, Teacher, TeacherReply
from persd.pipeline.run import Loop
from persd.pipeline.stages.execute import failed_attempts
from persd.pipeline.stages.teach import refine_requests, solve_requests
from persd.pipeline.stages.verify import verified_solutions
from persd.records import Attempt, Execution
from records_for_tests import feedback

TASKS = 6


class _Slots(Teacher):
    """``lanes`` slots (0: an API answering 3 requests at once, unpinned); every call is
    logged as (slot, first user message, kind) and answered with the task's reference
    program plus a helper of its own, so solutions verify and a refinement that shows the verified
    solution differs from one that shows the pool's reference."""

    def __init__(self, lanes: int, references: dict[str, str]) -> None:
        self._lanes = lanes
        self.log: list[tuple[int | None, str, str]] = []
        self._refs = references

    @property
    def lanes(self) -> int:
        return self._lanes

    @property
    def concurrency(self) -> int:
        return self._lanes or 3

    @property
    def model_id(self) -> str:
        return "slots"

    def lane(self, index: int):
        slots = self

        class _Pinned:
            model_id = "slots"

            async def chat(self, messages: Sequence[Message], params: SamplingParams):
                return await slots.chat(messages, params, lane=index)

            async def aclose(self) -> None:
                return None

        return _Pinned()

    async def chat(self, messages, params, *, lane=None) -> list[TeacherReply]:
        first = messages[0].content
        kind = "refine" if len(messages) > 1 or "INCORRECT" in messages[-1].content else "solve"
        self.log.append((lane, first, kind))
        await asyncio.sleep(0.01 * (1 + len(self.log) % 3))  # replies finish out of order
        task = next(t for t in self._refs if f"`{t}`" in first)
        text = f"```python\n{self._refs[task]}\n\n\ndef teachers_own():\n    return 1\n```"
        return [
            TeacherReply(text=text, model="slots", tokens_in=1, tokens_out=1, finish_reason="stop")
        ]

    async def aclose(self) -> None:
        return None


def _loop(tmp_path: Path) -> Loop:
    cfg = load_config(
        None,
        {
            "pool": {
                "source": "mbpp-train",
                "limit": TASKS,
                "decontaminate": False,
                "validation": 0,
            },
            "sandbox": {"workers": 2},
        },
    )
    loop = Loop(cfg, tmp_path)
    for i, task in enumerate(loop.pool.tasks):  # every other attempt fails its test
        aid = f"{task.id}#r0a0"
        code = "def f():\n    return None\n"
        loop.attempts.append(
            [
                Attempt(
                    id=aid, task_id=task.id, round=0, model_id="s", prompt="p", raw=code, code=code
                )
            ]
        )
        loop.executions.append([Execution(id=aid, task_id=task.id, feedback=feedback(i % 2 == 0))])
    return loop


def _teach(loop: Loop, teacher, monkeypatch: pytest.MonkeyPatch) -> None:
    import persd.llm.teacher as teacher_mod

    @contextlib.asynccontextmanager
    async def fake_open(cfg, *, run_dir):
        yield teacher

    monkeypatch.setattr(teacher_mod, "open_teacher", fake_open)
    loop.teach()


def _references(loop: Loop) -> dict[str, str]:
    return {t.entry_point: t.reference for t in loop.pool.tasks}


def test_each_refinement_follows_its_solution_on_the_same_slot(tmp_path, monkeypatch) -> None:
    loop = _loop(tmp_path / "run")
    slots = _Slots(2, _references(loop))
    _teach(loop, slots, monkeypatch)
    assert len(loop.solutions.ids()) == TASKS
    assert len(loop.refinements.ids()) == TASKS // 2
    assert {lane for lane, _, _ in slots.log} == {0, 1}  # both slots worked
    for lane in (0, 1):
        mine = [(first, kind) for slot, first, kind in slots.log if slot == lane]
        for j, (first, kind) in enumerate(mine):
            if kind == "refine":  # the slot's previous call was this task's solve
                assert mine[j - 1] == (first, "solve")
    # Every solution was verified on all tests, and passed (the reference program).
    rec = loop.store.records()
    assert all(rec.passed(s.id) for s in loop.solutions.read())


def test_the_same_calls_as_solving_everything_first(tmp_path, monkeypatch) -> None:
    """Pinned slots or an unpinned API, the stage asks what the paper's order would: every
    task's solution, then a refinement of every failed attempt that shows its task's verified
    solution (requests built here from the records, in that order)."""
    pinned = _loop(tmp_path / "pinned")
    _teach(pinned, _Slots(2, _references(pinned)), monkeypatch)
    plain = _loop(tmp_path / "plain")
    _teach(plain, _Slots(0, _references(plain)), monkeypatch)
    cfg = plain.config.teach
    solve = {r.id: r.messages for r in solve_requests(plain.pool.tasks, cfg)}
    refine, _ = refine_requests(
        plain.tasks,
        failed_attempts(plain),
        verified_solutions(plain),
        cfg,
        feedback_max_chars=plain.config.prompt.feedback_max_chars,
    )
    expected = {"solutions": solve, "refinements": {r.id: r.messages for r in refine}}
    for loop in (pinned, plain):
        for name, want in expected.items():
            got = {
                c.id: tuple(Message(**m) for m in c.messages) for c in getattr(loop, name).read()
            }
            assert got == want, name
    assert pinned.verifications.ids() == plain.verifications.ids()


def test_a_rerun_asks_nothing(tmp_path, monkeypatch) -> None:
    loop = _loop(tmp_path / "run")
    _teach(loop, _Slots(2, _references(loop)), monkeypatch)
    again = _Slots(2, _references(loop))
    _teach(Loop(loop.config, tmp_path / "run"), again, monkeypatch)
    assert again.log == []


def test_a_resumed_stage_shows_the_references_verified_before_and_after(
    tmp_path, monkeypatch
) -> None:
    """Solutions answered before a stop, one verified and the rest not: the resumed stage asks
    only the refinements, and each shows its task's verified solution, whether it was verified
    before the stop or by the resumed stage (the queue keeps them in memory, reading no file
    per task)."""
    first = _loop(tmp_path / "first")
    _teach(first, _Slots(2, _references(first)), monkeypatch)
    refine, _ = refine_requests(
        first.tasks,
        failed_attempts(first),
        verified_solutions(first),
        first.config.teach,
        feedback_max_chars=first.config.prompt.feedback_max_chars,
    )
    want = {r.id: tuple(m.model_dump() for m in r.messages) for r in refine}
    run = tmp_path / "resumed"
    loop = _loop(run)
    loop.solutions.append(first.solutions.read())
    kept = next(s.id for s in first.solutions.read())
    loop.verifications.append([v for v in first.verifications.read() if v.id == kept])
    slots = _Slots(2, _references(loop))
    _teach(Loop(loop.config, run), slots, monkeypatch)
    assert {kind for _, _, kind in slots.log} == {"refine"}
    got = {r.id: r.messages for r in Loop(loop.config, run).refinements.read()}
    assert got == want
    assert Loop(loop.config, run).verifications.ids() >= first.solutions.ids()
