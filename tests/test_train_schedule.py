"""The learning-rate schedule (issue 34): no optimizer step of a run trains at rate 0."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("trl")
pytest.importorskip("peft")

from persd.config import load_config  # noqa: E402
from persd.records import Example  # noqa: E402
from persd.train.config import TrainConfig  # noqa: E402
from persd.train.schedule import rate_factor, warmup_steps  # noqa: E402
from persd.train.sft import make_trainer  # noqa: E402
from test_train import TASKS, tiny_model  # noqa: E402,F401  (the session fixture)

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_RUN = ROOT / "results" / "default-run" / "models" / "persd_combined" / "train_summary.json"


def _rows(n: int) -> list[Example]:
    names = list(TASKS)
    return [
        Example(
            id=f"persd:{i}",
            variant="persd_combined",
            format="text2code",
            prompt=f"Write a Python function `{names[i % len(names)]}`.",
            completion=f"```python\n{TASKS[names[i % len(names)]]}\n```",
            task_id=f"t{i}",
        )
        for i in range(n)
    ]


def test_every_step_of_the_default_run_trains(tiny_model: Path, tmp_path: Path):  # noqa: F811
    """The default run's settings on its recorded row count: as many steps as it took, and
    the first has a non-zero rate (it logged learning_rate 0.0 at step 1: warmup 0.03 of 4
    steps was rounded up to a whole step starting at 0)."""
    recorded = json.loads(DEFAULT_RUN.read_text())
    stage = load_config(ROOT / "src" / "persd" / "pipeline" / "default.yaml").train
    settings = TrainConfig.model_validate(
        stage.model_dump(exclude={"variants"}) | {"max_seq_len": 128, "logging_steps": 1}
    )
    assert settings.warmup_ratio > 0  # the default keeps a warmup for long runs
    trainer, _ = make_trainer(settings, _rows(recorded["examples"]), str(tiny_model), tmp_path)
    trainer.train()
    rates = [row["learning_rate"] for row in trainer.state.log_history if "learning_rate" in row]
    assert trainer.state.global_step == recorded["steps"] == len(rates)
    assert rates[0] > 0, rates
    assert all(r > 0 for r in rates), rates
    assert rates[0] == pytest.approx(settings.lr)  # no warmup in a 4-step run: it starts at peak


def test_a_long_run_warms_up_from_a_non_zero_rate():
    assert warmup_steps(0.03, 4) == 0  # transformers rounds up: 1, a quarter of the run
    assert warmup_steps(0.03, 100) == 3 and warmup_steps(5, 100) == 5
    ramp = [rate_factor(k, kind="cosine", warmup=3, total_steps=100) for k in range(4)]
    assert ramp == [0.25, 0.5, 0.75, 1.0]
    last = rate_factor(99, kind="linear", warmup=3, total_steps=100)
    assert 0 < last < 0.02
