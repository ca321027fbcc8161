"""Run store, templates, decontamination and the dataset builder, without any model."""

from __future__ import annotations

import json

import pytest

from persd.errors import DataError
from persd.pipeline.config import PoolConfig
from persd.pipeline.stages.build import build_datasets
from persd.pipeline.store import RunDirError, RunStore
from persd.prompts import TemplateError, refine_prompt, render_chat
from persd.records import Attempt, Example, Execution, TeacherCall
from persd.tasks import load_benchmark
from persd.tasks.decontaminate import decontaminate
from records_for_tests import feedback


def _attempt(task_id: str, code: str = "def f(x):\n    return x\n") -> Attempt:
    return Attempt(
        id=f"{task_id}#r0a0", task_id=task_id, model_id="m", prompt="p", raw=code, code=code
    )


def _write_a_record(store: RunStore) -> None:
    """A stage has written: from now on the directory's config is pinned."""
    store.stage("attempts", Attempt).append([_attempt("T/0")])


def test_stage_file_appends_and_drops_a_torn_last_line(tmp_path):
    store = RunStore(tmp_path)
    stage = store.stage("attempts", Attempt)
    stage.append([_attempt("T/1"), _attempt("T/2")])
    with stage.path.open("a") as f:  # what kill -9 in the middle of a write leaves
        f.write(_attempt("T/3").model_dump_json()[:40])
    fresh = store.stage("attempts", Attempt)
    assert fresh.ids() == {"T/1#r0a0", "T/2#r0a0"}
    fresh.append([_attempt("T/3")])
    assert [a.task_id for a in fresh.read()] == ["T/1", "T/2", "T/3"]


def test_stage_file_names_file_and_line_of_a_bad_row(tmp_path):
    stage = RunStore(tmp_path).stage("attempts", Attempt)
    stage.append([_attempt("T/1")])
    with stage.path.open("a") as f:
        f.write(json.dumps({"id": "x", "task_id": "T/2"}) + "\n")
    with pytest.raises(DataError, match=r"attempts.jsonl:2: 'model_id' is missing"):
        stage.read()


def test_run_dir_refuses_a_different_config(tmp_path):
    store = RunStore(tmp_path)
    store.bind(PoolConfig(limit=5))
    _write_a_record(store)
    store.bind(PoolConfig(limit=5))  # same config: fine
    with pytest.raises(RunDirError, match="changed: limit"):
        store.bind(PoolConfig(limit=6))


def test_a_run_dir_without_records_takes_a_corrected_config(tmp_path):
    """A run stopped before any stage wrote (its preflight failed) pins nothing: the corrected
    config replaces the snapshot. Once a stage has written, a change is refused again."""
    store = RunStore(tmp_path)
    store.bind(PoolConfig(limit=5))
    (store.logs / "preflight.log").write_text("teacher unreachable\n")
    store.stage("attempts", Attempt).path.touch()  # an empty file holds no record
    store.bind(PoolConfig(limit=6))
    assert "limit: 6" in (tmp_path / "config.yaml").read_text()
    store.stage("attempts", Attempt).append([_attempt("T/1")])
    with pytest.raises(RunDirError, match="changed: limit"):
        store.bind(PoolConfig(limit=7))


def test_operational_settings_may_change_on_resume(tmp_path):
    """Worker counts and what workers preload change speed, not results: an upgrade that
    changes their defaults does not lock users out of their run directories."""
    from persd.config import RunConfig
    from persd.pipeline.run import OPERATIONAL

    store = RunStore(tmp_path)
    config = RunConfig()
    store.bind(config, operational=OPERATIONAL)
    _write_a_record(store)
    sandbox = config.sandbox.model_copy(
        update={"workers": 3, "preimport": ("math",), "send_calls_ahead": False}
    )
    faster = config.model_copy(update={"sandbox": sandbox})
    store.bind(faster, operational=OPERATIONAL)
    stricter = faster.model_copy(
        update={"sandbox": sandbox.model_copy(update={"wall_limit_s": 1.0})}
    )
    with pytest.raises(RunDirError, match=r"changed: sandbox\.wall_limit_s"):
        store.bind(stricter, operational=OPERATIONAL)


def test_keys_a_newer_version_added_count_only_when_set(tmp_path):
    """A run directory made before a config key existed resumes while the key holds its
    default, and is refused once the key is set to something else."""
    import yaml

    store = RunStore(tmp_path)
    store.bind(PoolConfig(limit=5))
    _write_a_record(store)
    snapshot = tmp_path / "config.yaml"
    old = yaml.safe_load(snapshot.read_text())
    del old["ngram"]  # as written by a version without the key
    snapshot.write_text(yaml.safe_dump(old))
    store.bind(PoolConfig(limit=5))
    snapshot.write_text(yaml.safe_dump(old))
    with pytest.raises(RunDirError, match="changed: ngram"):
        store.bind(PoolConfig(limit=5, ngram=8))


def test_an_older_run_dir_resumes_only_with_the_teacher_sampling_it_was_made_with(tmp_path):
    """Teacher replies of a run made before teacher.server.legacy_sampling existed were drawn
    under llama-cpp-python's defaults (repeat penalty 1.1): resuming it with plain sampling
    would mix two teachers in one run, so the key's absence means true, not the default."""
    import yaml

    from persd.config import RunConfig
    from persd.llm.teacher_config import ServerConfig, TeacherConfig
    from persd.pipeline.context import IMPLIED_BEFORE
    from persd.pipeline.run import OPERATIONAL

    def config(legacy: bool) -> RunConfig:
        server = ServerConfig(model="qwen2.5-coder-1.5b-instruct", legacy_sampling=legacy)
        return RunConfig(teacher=TeacherConfig(api_key_env=None, server=server))

    store = RunStore(tmp_path)
    store.bind(config(True), operational=OPERATIONAL, implied=IMPLIED_BEFORE)
    _write_a_record(store)
    snapshot = tmp_path / "config.yaml"
    old = yaml.safe_load(snapshot.read_text())
    del old["teacher"]["server"]["legacy_sampling"]  # as an older persd wrote it
    snapshot.write_text(yaml.safe_dump(old))
    with pytest.raises(RunDirError, match=r"changed: teacher\.server\.legacy_sampling"):
        store.bind(config(False), operational=OPERATIONAL, implied=IMPLIED_BEFORE)
    store.bind(config(True), operational=OPERATIONAL, implied=IMPLIED_BEFORE)


def test_an_older_run_dir_keeps_the_pool_it_was_made_with(tmp_path):
    """A run made before the held-out gate held no task out: its snapshot has no
    pool.validation. Resuming it with today's default (40) would draw another pool, and
    sample tasks the run never had (results/exp-qwen05-sample: 98 of its 160 tasks would have
    changed). The key's absence means 0, so the resume refuses, naming the key."""
    import yaml

    from persd.config import RunConfig
    from persd.pipeline.config import PoolConfig
    from persd.pipeline.context import IMPLIED_BEFORE
    from persd.pipeline.run import OPERATIONAL

    store = RunStore(tmp_path)
    store.bind(RunConfig(pool=PoolConfig(validation=0)), operational=OPERATIONAL)
    _write_a_record(store)
    snapshot = tmp_path / "config.yaml"
    old = yaml.safe_load(snapshot.read_text())
    del old["pool"]["validation"]  # as persd wrote it before the gate
    snapshot.write_text(yaml.safe_dump(old))
    assert RunConfig().pool.validation == 40
    with pytest.raises(RunDirError, match=r"changed: pool\.validation"):
        store.bind(RunConfig(), operational=OPERATIONAL, implied=IMPLIED_BEFORE)
    store.bind(
        RunConfig(pool=PoolConfig(validation=0)), operational=OPERATIONAL, implied=IMPLIED_BEFORE
    )


def test_templates_fill_every_placeholder_once():
    msgs = render_chat(
        "teacher_refine_paper",
        {"task": "T", "entry_point": "f", "reference": "R {{code}}", "code": "C", "feedback": "E"},
    )
    assert [m.role for m in msgs] == ["user", "assistant", "user"]
    assert "R {{code}}" in msgs[1].content  # a value is never filled again
    assert "{{" not in msgs[2].content
    with pytest.raises(TemplateError, match="no value for"):
        render_chat("teacher_refine_paper", {"task": "T"})


def test_user_template_file_errors_are_one_line(tmp_path):
    bad = tmp_path / "t.txt"
    bad.write_text("no turns here {{task}}")
    with pytest.raises(TemplateError, match="must start with a '=== user ===' line"):
        render_chat(str(bad), {"task": "x"})
    with pytest.raises(TemplateError, match="cannot read"):
        render_chat(str(tmp_path / "missing.txt"), {})


def test_refine_prompt_base_ends_with_the_header():
    text = refine_prompt(
        task_text="add", code="def f(): pass", feedback="boom", header='"""\nadd\n"""\n', chat=False
    )
    assert isinstance(text, str) and text.endswith('"""\nadd\n"""\n')
    chat = refine_prompt(
        task_text="add", code="def f(): pass", feedback="boom", header="", chat=True
    )
    assert chat[-1].role == "user" and "boom" in chat[-1].content


def test_decontamination_removes_copies_of_benchmark_tasks():
    bench = load_benchmark("mbpp-test")[:50]
    pool = load_benchmark("mbpp-train")[:50]
    copy = pool[0].model_copy(
        update={
            "id": "mine/1",
            "instruction": bench[3].instruction,
            "reference": bench[3].reference,
        }
    )
    result = decontaminate([*pool, copy], bench)
    assert result.removed["mine/1"] == bench[3].id
    assert "mine/1" not in {t.id for t in result.kept}
    assert len(result.kept) + len(result.removed) == 51


def test_decontamination_names_the_first_overlapping_benchmark_task():
    # a pool task copying two benchmark tasks at once overlaps both; the report names the one
    # that comes first in the benchmark, whatever the order of its n-grams in a set
    bench = load_benchmark("mbpp-test")[:50]
    pool = load_benchmark("mbpp-train")[:1]
    both = pool[0].model_copy(
        update={
            "id": "mine/2",
            "instruction": f"{bench[30].instruction}\n{bench[7].instruction}",
            "reference": f"{bench[30].reference}\n{bench[7].reference}",
        }
    )
    assert decontaminate([both], bench).removed["mine/2"] == bench[7].id
    assert decontaminate([both], bench[::-1]).removed["mine/2"] == bench[30].id


def _call(cid: str, task_id: str, code: str, attempt_id: str | None = None) -> TeacherCall:
    return TeacherCall(
        id=cid,
        task_id=task_id,
        attempt_id=attempt_id,
        model_id="t",
        messages=(),
        raw=code,
        code=code,
    )


def test_builder_variants_and_lineage():
    tasks = load_benchmark("mbpp-train")[:3]
    a, b, c = tasks
    attempts = [_attempt(a.id), _attempt(b.id), _attempt(c.id)]
    executions = {
        attempts[0].id: Execution(id=attempts[0].id, task_id=a.id, feedback=feedback(False)),
        attempts[1].id: Execution(id=attempts[1].id, task_id=b.id, feedback=feedback(True)),
        attempts[2].id: Execution(id=attempts[2].id, task_id=c.id, feedback=feedback(False)),
    }
    solutions = [_call(f"{t.id}#s0", t.id, f"def sol_{i}(): pass") for i, t in enumerate(tasks)]
    refinements = [
        _call(f"{attempts[0].id}#f0", a.id, "def fixed_a(): pass", attempts[0].id),
        _call(f"{attempts[2].id}#f0", c.id, "def wrong_c(): pass", attempts[2].id),
    ]
    verified = [s.id for s in solutions] + [refinements[0].id]
    verifications = {
        i: Execution(id=i, task_id="", feedback=feedback(i in verified))
        for i in [s.id for s in solutions] + [r.id for r in refinements]
    }
    built = build_datasets(
        tasks,
        attempts,
        executions,
        solutions,
        refinements,
        verifications,
        variants=(
            "stand",
            "stand_matched",
            "inpd",
            "persd",
            "persd_refine",
            "persd_combined",
            "persd_combined_inpd",
        ),
        chat=True,
        student_prompt=lambda t: f"PROMPT {t.id}",
    )
    rows = built.rows
    # Equal-size StanD: as many rows as PERsD-combined, a seeded subset of StanD's tasks.
    matched = rows["stand_matched"]
    assert len(matched) == 2 and {r.variant for r in matched} == {"stand_matched"}
    assert {r.task_id for r in matched} < {a.id, b.id, c.id}
    assert [r.completion for r in matched] == [
        r.completion for r in rows["stand"] if r.task_id in {m.task_id for m in matched}
    ]
    assert [r.task_id for r in rows["stand"]] == [a.id, b.id, c.id]
    assert [r.task_id for r in rows["inpd"]] == [a.id]  # failed AND refinement verified
    assert [r.completion for r in rows["persd"]] == ["```python\ndef fixed_a(): pass\n```"]
    refine = rows["persd_refine"][0]
    assert refine.format == "refine" and "f(1)" in refine.prompt  # the rendered feedback
    assert refine.attempt_id == attempts[0].id and refine.teacher_id == refinements[0].id
    assert len(rows["persd_combined"]) == 2 and len(rows["persd_combined_inpd"]) == 2
    assert {r.variant for r in rows["persd_combined_inpd"]} == {"persd_combined_inpd"}
    nofilter = rows["persd_nofilter"]
    assert [(r.task_id, r.verified) for r in nofilter] == [(a.id, True), (c.id, False)]
    assert built.skipped["persd: no refinement passed every test"] == 1
    ids = [r.id for rs in rows.values() for r in rs]
    assert len(ids) == len(set(ids))
    Example.model_validate_json(rows["stand"][0].model_dump_json())


def test_dry_run_prints_the_plan_and_writes_nothing(tmp_path):
    import yaml
    from typer.testing import CliRunner

    from persd.cli import app

    cfg = tmp_path / "plan.yaml"
    cfg.write_text(yaml.safe_dump({"pool": {"source": "mbpp-train", "limit": 5}}))
    run_dir = tmp_path / "never-created"
    result = CliRunner().invoke(app, ["run", str(cfg), "--run-dir", str(run_dir), "--dry-run"])
    assert result.exit_code == 0, result.output
    assert "teacher solve calls" in result.output and "attempts to sample" in result.output
    assert not run_dir.exists()


def test_base_attempts_stop_where_the_task_prompt_says(tmp_path):
    """A base (non-chat) student continues text: each task's attempt carries that task's stop
    sequences; a chat student gets one batched call without them."""
    from persd.llm.base import Generation, Student
    from persd.llm.extract import base_stop_sequences
    from persd.pipeline.config import AttemptConfig
    from persd.pipeline.stages.attempt import run_attempts
    from persd.pipeline.store import StageFile

    class Recorder(Student):
        model_id = "rec"

        def __init__(self):
            self.calls = []

        def generate(self, prompts, params):
            self.calls.append((len(prompts), params.stop))
            return [
                [Generation(text="    return 1\n", tokens_in=1, tokens_out=1, finish_reason="stop")]
                for _ in prompts
            ]

    tasks = load_benchmark("humaneval")[:3]
    for chat in (False, True):
        student = Recorder()
        out = StageFile(tmp_path / f"a{chat}.jsonl", Attempt)
        run_attempts(tasks, student, out, AttemptConfig(), chat=chat)
        if chat:
            assert student.calls == [(3, ())]
        else:
            # Each prompt is asked with its own task's stops (prompts whose stops are equal
            # may share a call).
            asked = [stop for n, stop in student.calls for _ in range(n)]
            assert asked == [base_stop_sequences(t.prompt, t.entry_point) for t in tasks]
            assert all(a.sampling["stop"] for a in out.read())


def test_stage_times_survive_a_resume_and_add_up(tmp_path):
    """Each stage's wall time is kept with the run's records: a second invocation that
    finds everything done adds its few milliseconds instead of erasing the first's minutes."""
    from persd.pipeline.timings import StageTimer

    first = StageTimer(tmp_path)
    with first.stage("attempt"):
        pass
    with first.stage("solve+refine"):
        pass
    first.finish()
    seconds = first.seconds
    assert list(seconds) == ["attempt", "solve+refine"]
    resumed = StageTimer(tmp_path)  # the next `persd run` in the same directory
    with resumed.stage("build"):
        pass
    again = resumed.seconds
    assert list(again) == ["attempt", "solve+refine", "build"]
    assert again["attempt"] == seconds["attempt"]
    assert resumed.wall_seconds() >= first.wall_seconds() - first.elapsed()


def test_stage_times_of_an_older_run_dir_are_taken_over_from_its_summary(tmp_path):
    from persd.pipeline.timings import StageTimer

    (tmp_path / "summary.json").write_text(
        json.dumps({"stage_seconds": {"attempt": 72.5, "solve+refine": 310.0}})
    )
    timer = StageTimer(tmp_path)
    with timer.stage("build"):
        pass
    assert timer.seconds["attempt"] == 72.5 and timer.seconds["solve+refine"] == 310.0
    assert timer.wall_seconds() >= 382.5
    assert StageTimer(tmp_path).seconds["attempt"] == 72.5  # taken over once, not twice
