"""One evaluation path (issue 33): ``persd eval`` scores a model as a run scores it, and every
report says which backend and weights it scored."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import pytest
from typer.testing import CliRunner

from persd.cli import app
from persd.evaluate.multistep import evaluate_student
from persd.llm.base import Generation, Prompt, SamplingParams, Student
from persd.llm.student import StudentConfig, choose_backend
from persd.sandbox import Sandbox, SandboxConfig
from persd.tasks import load_humaneval


def _no_vllm() -> None:
    if __import__("importlib").util.find_spec("vllm") is not None:
        pytest.skip("vLLM is installed: auto may pick it")


def test_auto_picks_llama_cpp_for_a_gguf_as_a_run_does() -> None:
    _no_vllm()
    pytest.importorskip("llama_cpp")
    assert choose_backend(StudentConfig(), kind="gguf") == "llama_cpp"
    # A run's trained LoRA (a PEFT directory) is converted for llama.cpp, not sampled apart.
    assert choose_backend(StudentConfig(adapter=Path("run/final")), kind="gguf") == "llama_cpp"
    assert choose_backend(StudentConfig(), kind="hf_dir") == "transformers"


def test_auto_falls_back_to_transformers_without_llama_cpp(monkeypatch) -> None:
    _no_vllm()
    monkeypatch.setattr("persd.llm.student._llama_cpp_usable", lambda: False)
    assert choose_backend(StudentConfig(), kind="gguf") == "transformers"


class _Described(Student):
    """A student that says what it is, answering every task with ``return None``."""

    model_id = "fake"
    backend = "llama_cpp"
    weights = "fake.gguf, Q5_0 served as Q8_0"

    def generate(self, prompts: Sequence[Prompt], params: SamplingParams) -> list[list[Generation]]:
        gen = Generation(text="    return None\n", tokens_in=1, tokens_out=1, finish_reason="stop")
        return [[gen] for _ in prompts]

    def close(self) -> None:
        pass


def test_the_report_names_the_backend_and_weights_it_scored(tmp_path: Path) -> None:
    with Sandbox(SandboxConfig(workers=1)) as sandbox:
        evaluate_student(
            _Described(), load_humaneval()[:1], sandbox, benchmark="humaneval", chat=False,
            out_dir=tmp_path,
        )  # fmt: skip
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["backend"] == "llama_cpp"
    assert report["weights"] == "fake.gguf, Q5_0 served as Q8_0"


@pytest.mark.slow  # samples SmolLM2 on three HumanEval tasks twice (~1 min on 2 cores)
def test_persd_eval_gives_a_runs_verdicts(smollm2_gguf: Path, tmp_path: Path) -> None:
    """The same model through ``persd eval -m`` (backend auto) and through a run's evaluation
    (the default run's config, as ``pipeline.model_eval.evaluate_one`` hands it to its stage
    process): the same texts, so the same verdicts, and both reports say llama_cpp."""
    pytest.importorskip("llama_cpp")
    _no_vllm()
    from persd.cli.run import default_config
    from persd.config import load_config
    from persd.pipeline.eval_settings import eval_settings
    from persd.pipeline.model_eval import evaluate_isolated

    settings = {"limit": 3, "max_new_tokens": 48}
    run = load_config(
        default_config(), {"student": {"model": str(smollm2_gguf)}, "evaluate": settings}
    )
    settings = eval_settings(run, None)  # what evaluate_one hands its stage process
    evaluate_isolated(
        settings.student.model_dump_json(),
        settings.sandbox.model_dump_json(),
        settings.evaluate.model_dump_json(),
        "humaneval",
        str(tmp_path / "run"),
        settings.prompt.model_dump_json(),
        tick=lambda n: None,
        note=lambda s: None,
    )
    result = CliRunner().invoke(
        app,
        ["eval", "-m", str(smollm2_gguf), "--limit", "3", "--max-new-tokens", "48",
         "--out", str(tmp_path / "cli")],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "scored: llama_cpp on" in result.output

    def rows(out: str) -> dict[str, tuple[str, bool]]:
        lines = (tmp_path / out / "samples_base.jsonl").read_text().splitlines()
        return {r["task_id"]: (r["history"][0]["raw"], r["passed"]) for r in map(json.loads, lines)}

    assert len(rows("run")) == 3
    assert rows("cli") == rows("run")
    for out in ("cli", "run"):
        report = json.loads((tmp_path / out / "report.json").read_text())
        assert report["backend"] == "llama_cpp"
        assert report["weights"].startswith(str(smollm2_gguf))
