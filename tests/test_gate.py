"""The held-out gate: validation tasks are kept out of training, every trained checkpoint is
paired against the base on them, and a model that does not beat the base is not kept."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from persd.evaluate.paired import mcnemar_exact, paired
from persd.pipeline.config import GateConfig, PoolConfig
from persd.pipeline.pool import PoolError, load_pool
from persd.pipeline.rundir import Candidate
from persd.pipeline.stages.gate import candidates, decide


def test_mcnemar_exact_matches_the_binomial_test():
    assert mcnemar_exact(0, 0) == 1.0
    assert mcnemar_exact(5, 1) == pytest.approx(0.21875)  # 2 * P(X <= 1), X ~ Bin(6, 1/2)
    assert mcnemar_exact(1, 5) == mcnemar_exact(5, 1)
    assert mcnemar_exact(10, 0) == pytest.approx(2 / 1024)


def test_paired_counts_gained_and_lost_on_shared_tasks():
    base = {"a": True, "b": False, "c": True, "d": False}
    model = {"a": False, "b": True, "c": True, "d": True, "extra": True}
    p = paired(base, model)
    assert (p.tasks, p.base_passed, p.passed, p.gained, p.lost) == (4, 2, 3, 2, 1)
    assert p.describe() == "+2/−1 on 4 tasks (p=1)"


def _cand(variant: str, checkpoint: str = "final") -> Candidate:
    return Candidate(variant=variant, checkpoint=checkpoint, path=f"/m/{variant}/{checkpoint}")


BASE = {f"t{i}": i < 5 for i in range(10)}  # passes t0..t4


def _with(gains: int, losses: int) -> dict[str, bool]:
    out = dict(BASE)
    for i in range(gains):
        out[f"t{5 + i}"] = True
    for i in range(losses):
        out[f"t{i}"] = False
    return out


def test_a_model_worse_than_the_base_is_never_kept():
    result = decide(BASE, [(_cand("persd"), _with(1, 3))], GateConfig())
    assert result.kept == "base" and result.kept_path is None
    assert result.verdict.startswith("the base is the result: no trained model cleared")
    assert "(gained - lost >= 1)" in result.verdict
    assert "the best, persd, had +1/−3" in result.verdict
    assert result.rows[0].decision == "best of its variant; no gain"


def test_the_best_checkpoint_of_the_best_variant_is_kept():
    scored = [
        (_cand("persd", "epoch 1"), _with(3, 0)),
        (_cand("persd"), _with(2, 2)),
        (_cand("stand"), _with(2, 0)),
    ]
    result = decide(BASE, scored, GateConfig())
    assert result.kept == "persd@epoch1"
    assert [r.decision for r in result.rows] == [
        "kept",
        "not its variant's best",
        "not kept",
    ]
    assert result.verdict.startswith("persd@epoch1 is the result: +3/−0 on 10 tasks")
    assert result.verdict.endswith("clears the rule (gained - lost >= 1)")


def test_a_tie_goes_to_the_earlier_checkpoint_and_max_p_is_honoured():
    scored = [(_cand("persd", "epoch 1"), _with(2, 1)), (_cand("persd"), _with(2, 1))]
    assert decide(BASE, scored, GateConfig()).kept == "persd@epoch1"
    strict = decide(BASE, scored, GateConfig(max_p=0.05))
    assert strict.kept == "base" and "p <= 0.05" in strict.rule


def test_candidates_are_each_epochs_checkpoint_then_final(tmp_path: Path):
    model = tmp_path / "persd"
    for step, epoch in ((2, 1.0), (4, 2.0)):
        ckpt = model / f"checkpoint-{step}"
        ckpt.mkdir(parents=True)
        (ckpt / "adapter_config.json").write_text("{}")
        (ckpt / "trainer_state.json").write_text(json.dumps({"global_step": step, "epoch": epoch}))
    (model / "final").mkdir()
    found = candidates("persd", model / "final", epochs=True)
    assert [(c.checkpoint, Path(c.path).name) for c in found] == [
        ("epoch 1", "checkpoint-2"),
        ("final", "final"),
    ]
    assert [c.checkpoint for c in candidates("persd", model / "final", epochs=False)] == ["final"]


def test_validation_tasks_are_held_out_of_the_pool_seeded_and_disjoint():
    cfg = PoolConfig(limit=40, validation=40)
    pool = load_pool(cfg)
    train_ids = {t.id for t in pool.tasks}
    val_ids = {t.id for t in pool.validation}
    assert len(val_ids) == 40 and len(train_ids) == 40 and not train_ids & val_ids
    assert all(t.tests_hidden for t in pool.validation)
    # The same seed holds out the same tasks, whatever the training limit.
    bigger = load_pool(PoolConfig(limit=80, validation=40))
    assert {t.id for t in bigger.validation} == val_ids
    assert not {t.id for t in bigger.tasks} & val_ids
    assert {t.id for t in load_pool(PoolConfig(validation=0, limit=40)).validation} == set()


def test_a_pool_too_small_to_hold_out_says_which_key_to_change():
    with pytest.raises(PoolError, match="Lower pool.validation"):
        load_pool(PoolConfig(source="mbpp-validation", validation=60))
