"""Multi-round personalisation without models: which tasks each round attempts, which student
makes the attempts, and what each round trains on and from (continue vs retrain).

The stage files are written by hand and training/evaluation processes are replaced by a
recorder, so these tests pin the loop's bookkeeping; tests/test_loop.py runs real rounds."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from persd.config import ConfigError, load_config
from persd.pipeline.run import Loop, model_name, trained_student
from persd.pipeline.stages import train as training_mod
from persd.pipeline.store import RunDirError
from persd.records import Attempt, Example, Execution, TeacherCall
from records_for_tests import feedback

TASKS = 6


def _config(**rounds: object):
    return load_config(
        None,
        {
            "pool": {
                "source": "mbpp-train",
                "limit": TASKS,
                "decontaminate": False,
                "validation": 0,
            },
            "train": {"variants": ["persd_combined", "stand"]},
            "rounds": {"count": 3, **rounds},
        },
    )


def _attempt(loop: Loop, task_id: str, round_: int, passed: bool) -> None:
    aid = f"{task_id}#r{round_}a0"
    loop.attempts.append(
        [
            Attempt(
                id=aid,
                task_id=task_id,
                round=round_,
                model_id="s",
                prompt="p",
                raw="x",
                code="def f(x):\n    return x\n",
            )
        ]
    )
    loop.executions.append([Execution(id=aid, task_id=task_id, feedback=feedback(passed))])


def _fake_trained(out: Path) -> None:
    (out / "final").mkdir(parents=True)
    (out / "final" / "adapter_config.json").write_text("{}")
    (out / "train_summary.json").write_text("{}")


@pytest.fixture
def recorder(monkeypatch: pytest.MonkeyPatch) -> list[dict]:
    """Stands in for the training process: records its arguments, writes a finished model."""
    calls: list[dict] = []

    def fake(label, fn, settings, data, base, out, **kw):
        calls.append(
            {
                "label": label,
                "settings": json.loads(settings),
                "data": json.loads(data),
                "base": base,
                "out": out,
            }
        )
        _fake_trained(Path(out))
        return str(Path(out) / "final")

    monkeypatch.setattr(training_mod, "run_isolated", fake)
    return calls


def _rows(loop: Loop, round_: int, variant: str = "persd_combined", n: int = 1) -> None:
    from persd.pipeline.store import StageFile

    rows = [
        Example(
            id=f"{variant}:{round_}:{i}",
            variant=variant,
            format="text2code",
            prompt="p",
            completion="c",
            task_id="t",
        )
        for i in range(n)
    ]
    StageFile(loop.paths.data(round_) / f"{variant}.jsonl", Example).rewrite(rows)


def test_failed_mode_reattempts_what_the_previous_round_failed(tmp_path: Path):
    loop = Loop(_config(), tmp_path)
    ids = [t.id for t in loop.pool.tasks]
    assert [t.id for t in loop.round_tasks(0)] == ids
    for i, tid in enumerate(ids):
        _attempt(loop, tid, 0, passed=i % 2 == 0)  # round 0 fails the odd ones
    assert [t.id for t in loop.round_tasks(1)] == ids[1::2]
    _attempt(loop, ids[1], 1, passed=True)  # round 1 fixes one of them
    _attempt(loop, ids[3], 1, passed=False)
    assert [t.id for t in loop.round_tasks(2)] == [ids[3]]


def test_fresh_mode_cuts_the_pool_into_disjoint_shards(tmp_path: Path):
    loop = Loop(_config(tasks="fresh"), tmp_path)
    shards = [[t.id for t in loop.round_tasks(r)] for r in range(3)]
    assert [len(s) for s in shards] == [2, 2, 2]
    assert sum(shards, []) == [t.id for t in loop.pool.tasks]


def test_later_rounds_attempt_with_the_previous_rounds_model(tmp_path: Path):
    loop = Loop(_config(), tmp_path)
    assert loop.student_config(0) == loop.config.student
    with pytest.raises(RunDirError, match="round 1 needs the model trained in round 0"):
        loop.student_config(1)
    _fake_trained(loop.paths.model("persd_combined"))
    assert loop.student_config(1).adapter == loop.paths.model("persd_combined") / "final"
    # A round that trained nothing (no examples) leaves the previous model as the student.
    assert loop.student_config(2).adapter == loop.paths.model("persd_combined") / "final"
    _fake_trained(loop.paths.model("persd_combined", 1))
    assert loop.student_config(2).adapter == loop.paths.model("persd_combined", 1) / "final"


def test_continue_trains_the_previous_adapter_on_this_rounds_data(tmp_path: Path, recorder):
    loop = Loop(_config(training="continue"), tmp_path)
    _rows(loop, 0)
    _rows(loop, 0, "stand")
    trained0 = loop.train(0)
    assert set(trained0) == {"persd_combined", "stand"}  # round 0 trains every variant
    assert all(c["settings"]["init_adapter"] is None for c in recorder)
    _rows(loop, 1)
    trained1 = loop.train(1)
    assert list(trained1) == ["persd_combined@r1"]  # later rounds: the round variant only
    call = recorder[-1]
    assert call["data"] == [str(loop.paths.data(1) / "persd_combined.jsonl")]
    assert call["settings"]["init_adapter"] == str(loop.paths.model("persd_combined") / "final")
    assert call["base"] == loop.config.student.model
    assert call["out"] == str(tmp_path / "models" / "r1" / "persd_combined")
    assert loop.train(1) == trained1 and len(recorder) == 3  # finished: not trained again


def test_retrain_trains_the_base_on_every_rounds_data(tmp_path: Path, recorder):
    loop = Loop(_config(training="retrain"), tmp_path)
    _rows(loop, 0)
    loop.train(0)
    assert loop.train(1) == {}  # no round-1 rows: nothing new to train on
    _rows(loop, 1, n=3)
    _rows(loop, 2, n=2)
    loop.train(1)
    loop.train(2)
    last = recorder[-1]
    assert last["settings"]["init_adapter"] is None and last["base"] == loop.config.student.model
    assert last["data"] == [str(loop.paths.data(r) / "persd_combined.jsonl") for r in range(3)]


def test_evaluation_names_every_rounds_model(tmp_path: Path):
    loop = Loop(_config(), tmp_path)
    for r in (0, 1, 2):
        _fake_trained(loop.paths.model("persd_combined", r))
    assert list(loop.trained_models()) == [
        "persd_combined",
        "persd_combined@r1",
        "persd_combined@r2",
    ]
    assert model_name("persd", 0) == "persd"


def test_trained_student_samples_full_weights_with_transformers(tmp_path: Path):
    base = _config().student
    adapter = tmp_path / "lora"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text("{}")
    assert trained_student(base, adapter).adapter == adapter
    full = tmp_path / "full"
    full.mkdir()
    cfg = trained_student(base.model_copy(update={"backend": "llama_cpp"}), full)
    assert (cfg.model, cfg.adapter, cfg.backend) == (str(full), None, "transformers")


def test_round_summaries_count_each_round(tmp_path: Path):
    loop = Loop(_config(), tmp_path)
    ids = [t.id for t in loop.pool.tasks]
    for tid in ids:
        _attempt(loop, tid, 0, passed=False)
    _attempt(loop, ids[0], 1, passed=True)
    _attempt(loop, ids[1], 1, passed=False)
    loop.refinements.append(
        [
            TeacherCall(
                id=f"{ids[1]}#r1a0#f0",
                task_id=ids[1],
                attempt_id=f"{ids[1]}#r1a0",
                model_id="t",
                messages=(),
                raw="",
                code="",
            )
        ]
    )
    _rows(loop, 1, n=2)
    rows = loop.round_summaries()
    assert [(r.round, r.tasks, r.attempts_passed, r.refinements) for r in rows] == [
        (0, TASKS, 0, 0),
        (1, 2, 1, 1),
    ]
    assert rows[1].examples == 2 and rows[1].training == "continue"


def test_rounds_config_errors_name_the_keys():
    with pytest.raises(ConfigError, match="rounds.variant 'inpd' is not in train.variants"):
        load_config(None, {"rounds": {"count": 2, "variant": "inpd"}})
    with pytest.raises(ConfigError, match="rounds.training"):
        load_config(None, {"rounds": {"training": "sometimes"}})


def test_a_copied_run_without_weights_trains_again(tmp_path: Path, recorder):
    """Committed run directories keep train_summary.json but never the weights: such a model
    is not 'trained', so the next machine trains it instead of evaluating a missing adapter."""
    loop = Loop(_config(), tmp_path)
    _rows(loop, 0)
    out = loop.paths.model("persd_combined")
    out.mkdir(parents=True)
    (out / "train_summary.json").write_text("{}")  # as committed, no final/
    assert loop.trained_models() == {}
    assert loop.trained_model("persd_combined", 0) is None
    assert "persd_combined" in loop.train(0)
    assert recorder[0]["out"] == str(out)
