"""Optimizer steps (issue 34): none trains at rate 0, and ``persd run`` shows each one."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("trl")
pytest.importorskip("peft")

from persd.config import load_config  # noqa: E402
from persd.pipeline.isolate import run_isolated  # noqa: E402
from persd.pipeline.stages.train import train_variant  # noqa: E402
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


def test_the_train_stage_draws_a_bar_of_optimizer_steps(tiny_model: Path, tmp_path: Path):  # noqa: F811
    """The stage process trains; the parent gets a bar of its steps, each tick and the loss
    lines (it showed one loss line, then nothing until training ended)."""
    data = tmp_path / "rows.jsonl"
    data.write_text("".join(r.model_dump_json() + "\n" for r in _rows(6)))
    settings = TrainConfig(
        max_steps=3, batch_size=2, grad_accum=1, logging_steps=1, max_seq_len=128
    )
    bars: list[tuple[str, int]] = []
    ticks: list[int] = []
    notes: list[str] = []

    def start(stage: str, total: int):
        bars.append((stage, total))
        return ticks.append

    run_isolated(
        "train",
        train_variant,
        settings.model_dump_json(),
        json.dumps([str(data)]),
        str(tiny_model),
        str(tmp_path / "out"),
        on_start=start,
        on_note=notes.append,
        log_path=str(tmp_path / "train.log"),
    )
    assert bars == [("train", 3)] and sum(ticks) == 3, (bars, ticks)
    losses = [n for n in notes if "loss" in n]
    assert [n.split(":")[0] for n in losses[:3]] == ["step 1/3", "step 2/3", "step 3/3"], notes
    assert losses[-1].startswith("step 3/3 in ") and "mean loss" in losses[-1], notes
