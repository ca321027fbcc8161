"""An evaluation cut off mid-way resumes from its generations journal (``--out``)."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path

import pytest

from persd.errors import PersdError
from persd.evaluate.multistep import evaluate_student
from persd.llm.base import Generation, Prompt, SamplingParams, Student
from persd.sandbox import Sandbox, SandboxConfig
from persd.tasks import load_humaneval

TASKS = load_humaneval()[:3]


class CountingStudent(Student):
    """Answers HumanEval/0 right and the others wrong; counts the prompts it is asked."""

    def __init__(self, name: str = "fake", delay: float = 0.0) -> None:
        self.model_id, self.prompts, self.delay = name, 0, delay

    def generate(self, prompts: Sequence[Prompt], params: SamplingParams) -> list[list[Generation]]:
        time.sleep(self.delay)
        out = []
        for p in prompts:
            self.prompts += 1
            text = str(p)
            body = (
                TASKS[0].reference[len(TASKS[0].prompt) :]
                if "has_close_elements" in text
                else "    return None\n"
            )
            out.append([Generation(text=body, tokens_in=1, tokens_out=1, finish_reason="stop")])
        return out

    def close(self) -> None:
        pass


@pytest.fixture(scope="module")
def sandbox():
    with Sandbox(SandboxConfig(workers=2)) as sb:
        yield sb


def _eval(student, sandbox, out: Path, refine_steps: int):
    return evaluate_student(
        student,
        TASKS,
        sandbox,
        benchmark="humaneval",
        chat=False,
        refine_steps=refine_steps,
        out_dir=out,
    )


def test_a_rerun_reuses_every_generation_and_scores_the_same(sandbox, tmp_path: Path):
    first = CountingStudent()
    report = _eval(first, sandbox, tmp_path, refine_steps=1)
    assert first.prompts == 3 + 2 + 2  # step 0, then 2 failing samples in each arm
    again = CountingStudent()
    resumed = _eval(again, sandbox, tmp_path, refine_steps=1)
    assert again.prompts == 0 and resumed.batches_resumed == 3
    assert resumed.steps == report.steps


def test_generation_time_counts_resumed_batches_as_journaled(sandbox, tmp_path: Path):
    slow = _eval(CountingStudent(delay=0.05), sandbox, tmp_path, refine_steps=0)
    assert slow.generate_s is not None and slow.generate_s >= 0.05  # one batch of 3 tasks
    assert slow.score_s > 0
    resumed = _eval(CountingStudent(), sandbox, tmp_path, refine_steps=0)
    assert resumed.generate_s == slow.generate_s  # the journaled time, not the reuse's
    journal = tmp_path / "generations.jsonl"
    header, *rows = journal.read_text().splitlines()
    untimed = [{k: v for k, v in json.loads(r).items() if k != "seconds"} for r in rows]
    journal.write_text("".join(json.dumps(x) + "\n" for x in [json.loads(header), *untimed]))
    assert _eval(CountingStudent(), sandbox, tmp_path, refine_steps=0).generate_s is None


def test_step_zero_is_reused_when_refinement_steps_are_added(sandbox, tmp_path: Path):
    _eval(CountingStudent(), sandbox, tmp_path, refine_steps=0)
    later = CountingStudent()
    _eval(later, sandbox, tmp_path, refine_steps=1)
    assert later.prompts == 2 + 2  # only the new steps are sampled


def test_a_half_written_last_line_is_sampled_again(sandbox, tmp_path: Path):
    _eval(CountingStudent(), sandbox, tmp_path, refine_steps=1)
    journal = tmp_path / "generations.jsonl"
    journal.write_text(journal.read_text()[:-20])  # killed while writing the last batch
    again = CountingStudent()
    _eval(again, sandbox, tmp_path, refine_steps=1)
    assert again.prompts == 2  # the cut batch (the resample arm's step 1) only
    lines = journal.read_text().splitlines()
    assert all(json.loads(line) for line in lines) and len(lines) == 1 + 3


def test_generations_of_another_model_are_refused(sandbox, tmp_path: Path):
    _eval(CountingStudent("a"), sandbox, tmp_path, refine_steps=0)
    with pytest.raises(
        PersdError,
        match=r"generations.jsonl: generations of another evaluation "
        r"\(differs in model_id\)",
    ):
        _eval(CountingStudent("b"), sandbox, tmp_path, refine_steps=0)


def test_weights_fingerprint_follows_the_adapter_not_its_converted_copy(tmp_path: Path):
    import os

    from persd.llm.student import StudentConfig, weights_fingerprint

    adapter = tmp_path / "final"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text("{}")
    (adapter / "adapter_model.safetensors").write_bytes(b"old")
    cfg = StudentConfig(model="smollm2-135m-instruct", adapter=adapter)
    before = weights_fingerprint(cfg)
    (adapter / "adapter.lora.gguf").write_bytes(b"converted by llama.cpp on first load")
    assert weights_fingerprint(cfg) == before
    (adapter / "adapter_model.safetensors").write_bytes(b"retrained")
    os.utime(adapter / "adapter_model.safetensors", ns=(1, 1))
    assert weights_fingerprint(cfg) != before


def test_weights_fingerprint_tells_the_decoding_settings_that_change_samples() -> None:
    """Q8_0 serving and the shared prefix change the batches' kernels or shapes, so greedy
    samples can differ: a journal is not resumed across them."""
    from persd.llm.student import StudentConfig, weights_fingerprint

    cfg = StudentConfig(model="qwen2.5-coder-0.5b-instruct", backend="llama_cpp")
    prints = {
        weights_fingerprint(cfg),
        weights_fingerprint(cfg.model_copy(update={"share_prefix": False})),
        weights_fingerprint(cfg.model_copy(update={"q8_serving": False})),
    }
    assert len(prints) == 3
