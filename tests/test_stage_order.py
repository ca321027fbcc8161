"""The loop's order is declared once (``pipeline.stages.ORDER``): every stage module is in it,
and ``Loop.run`` calls the stages in that order, pool and synthesis included."""

from __future__ import annotations

from pathlib import Path

from persd.config import load_config
from persd.pipeline import stages
from persd.pipeline.run import Loop
from persd.pipeline.rundir import RunSummary

# Loop's method for each stage, where the name differs (``pool`` is the context's tasks).
METHOD = {"pool": "load_pool", "synth": "synthesize", "gate": "validate", "summary": "finish"}


def test_every_stage_module_is_in_the_declared_order() -> None:
    modules = {p.stem for p in Path(stages.__file__).parent.glob("*.py")} - {"__init__"}
    assert modules == set(stages.ORDER)
    assert [s for s in stages.ORDER if s in stages.ROUND] == list(stages.ROUND)


def test_the_loop_calls_the_stages_in_that_order(tmp_path: Path) -> None:
    called: list[str] = []

    class Recording(Loop):
        pass

    for stage in stages.ORDER:
        method = METHOD.get(stage, stage)

        def record(self, *args, _stage=stage, **kwargs):
            called.append(_stage)
            if _stage == "summary":
                return RunSummary(tasks=0)
            if _stage == "train":
                return {"persd_combined": tmp_path / "model"}  # a model for the gate to judge
            return {} if _stage in ("build", "evaluate") else None

        setattr(Recording, method, record)
    cfg = load_config(
        None,
        {"pool": {"source": "mbpp-train", "limit": 4, "validation": 2, "decontaminate": False}},
    )
    Recording(cfg, tmp_path / "run").run()
    assert called == list(stages.ORDER)
