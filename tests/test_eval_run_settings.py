"""``persd eval --run DIR`` asks a run's trained model exactly what the run's own evaluation
asked it (issues 33 and 37): the same student config, the same prompts, so the same token ids
(tests/test_prompt_parity.py holds prompts to ids on every backend).

Both entry points run for real down to the student: the run's evaluate stage (its stage
process replaced by a call in this process) and the CLI, with a student that records what it
was loaded as and asked, and always answers with the same wrong program, so the refinement
step's prompt (template, feedback cut) is exercised too.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import pytest
from typer.testing import CliRunner

from persd.cli import app
from persd.config import load_config
from persd.evaluate.paired import Paired
from persd.llm.base import Generation, Prompt, SamplingParams, Student
from persd.pipeline import model_eval as run_eval
from persd.pipeline.run import Loop
from persd.pipeline.rundir import Candidate, GateResult, GateRow
from persd.pipeline.stages.evaluate import evaluate_models

WRONG = "def f(*args):\n    print('debug ' * 40)\n    return None\n"


class Recorder:
    """Every student loaded: its config and the prompts it was given, in order; and the token
    ids those prompts become for the student's model (its renderer, as every backend feeds
    them: tests/test_prompt_parity.py)."""

    def __init__(self) -> None:
        self.loaded: list[tuple[dict, list[Prompt]]] = []
        self.ids: list[list[list[int]]] = []

    def load(self, cfg):
        from persd.llm.render import renderer_for

        prompts: list[Prompt] = []
        ids: list[list[int]] = []
        self.loaded.append((cfg.model_dump(mode="json"), prompts))
        self.ids.append(ids)
        renderer = renderer_for(cfg.model)

        class Scripted(Student):
            model_id = "scripted"

            def generate(self, batch: Sequence[Prompt], params: SamplingParams):
                prompts.extend(batch)
                ids.extend(renderer.ids(p) for p in batch)
                gen = Generation(
                    text=f"```python\n{WRONG}```", tokens_in=1, tokens_out=1, finish_reason="stop"
                )
                return [[gen] * params.n for _ in batch]

            def close(self) -> None:
                pass

        return Scripted()


def _run_dir(tmp_path: Path, model: Path) -> Path:
    """A run directory as `persd run` leaves it after its gate kept a LoRA model, with prompt
    and evaluate settings that differ from every default."""
    template = tmp_path / "refine.txt"
    template.write_text("=== user ===\nRepair this.\n{{task}}\n---\n{{code}}\n---\n{{feedback}}\n")
    cfg = load_config(
        None,
        {
            "student": {"model": str(model), "backend": "llama_cpp"},
            "data": {"variants": ["self"]},
            "train": {"variants": ["self"]},
            "prompt": {
                "mbpp_shape": "signature",
                "refine_template": str(template),
                "feedback_max_chars": 150,
            },
            "evaluate": {
                "benchmarks": ["mbpp-test"], "limit": 2, "sample_seed": 7,
                "refine_steps": 1, "max_new_tokens": 200,
            },
        },
    )  # fmt: skip
    run = tmp_path / "run"
    loop = Loop(cfg, run)  # writes the config snapshot, as every run does
    final = run / "models" / "self" / "final"
    final.mkdir(parents=True)
    (final / "adapter_config.json").write_text("{}")
    (final.parent / "train_summary.json").write_text("{}")  # training finished
    cand = Candidate(variant="self", checkpoint="final", path=str(final))
    even = Paired(tasks=1, base_passed=0, passed=0, gained=0, lost=0, p_value=1.0)
    row = GateRow(candidate=cand, vs_base=even, decision="kept")
    gate = GateResult(
        validation_tasks=1, base_passed=0, rule="r", rows=[row], kept="self",
        kept_path=str(final), verdict="v",
    )  # fmt: skip
    (run / "gate.json").write_text(gate.model_dump_json())
    evaluate_models(loop)  # the run's evaluate stage: base, then the kept model
    return run


@pytest.fixture
def recorder(monkeypatch) -> Recorder:
    rec = Recorder()
    monkeypatch.setattr("persd.llm.student.load_student", rec.load)
    monkeypatch.setattr("persd.llm.student.weights_fingerprint", lambda cfg: "fake")

    def in_process(name, fn, *args, on_tick=None, on_note=None, log_path=None, **kw):
        return fn(*args, tick=lambda n: None, note=lambda s: None, **kw)

    monkeypatch.setattr(run_eval, "run_isolated", in_process)
    return rec


def test_persd_eval_of_a_run_asks_what_the_run_asked(
    tmp_path: Path, recorder: Recorder, smollm2_gguf: Path
):
    run = _run_dir(tmp_path, smollm2_gguf)
    (base_cfg, base_prompts), (run_cfg, run_prompts) = recorder.loaded
    assert run_cfg["adapter"] == str(run / "models/self/final") and base_cfg["adapter"] is None
    assert len(run_prompts) == 2 * 3  # two tasks: attempt, refinement, equal-budget resample
    text = json.dumps([str(p) for p in run_prompts])
    assert "Repair this." in text and "[...truncated]" in text  # the run's template and cut

    out = tmp_path / "cli"
    result = CliRunner().invoke(
        app, ["eval", "--run", str(run), "-b", "mbpp-test", "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    cli_cfg, cli_prompts = recorder.loaded[-1]
    assert cli_cfg == run_cfg
    assert cli_prompts == run_prompts
    assert recorder.ids[-1] == recorder.ids[1] and len(recorder.ids[1]) == 6  # the same token ids
    samples = lambda d: (d / "samples_base.jsonl").read_text()  # noqa: E731
    assert samples(out) == samples(run / "eval" / "self" / "mbpp-test")

    # --variant base scores the base as the run did; a flag overrides the run's setting.
    CliRunner().invoke(app, ["eval", "--run", str(run), "--variant", "base", "-b", "mbpp-test"])
    assert recorder.loaded[-1] == (base_cfg, base_prompts)
    CliRunner().invoke(
        app, ["eval", "--run", str(run), "-b", "mbpp-test", "--mbpp-shape", "docstring"]
    )
    assert recorder.loaded[-1][1] != run_prompts


def test_persd_eval_of_a_run_names_what_is_missing(tmp_path: Path):
    run = tmp_path / "run"
    run.mkdir()
    result = CliRunner().invoke(app, ["eval", "--run", str(run)])
    assert "no config.yaml" in str(result.exception)
    (run / "config.yaml").write_text("{}\n")
    result = CliRunner().invoke(app, ["eval", "--run", str(run)])
    assert "no gate.json; name the model with --variant" in str(result.exception)
