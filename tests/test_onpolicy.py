"""persd_onpolicy: rows built from the student's own samples, teacher scores with privileged
context (cached, resumable), and the divergence loss, on tiny random-weight Qwen2 models that
share one tokenizer (built in test_train)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("peft")

from persd.errors import PersdError  # noqa: E402
from persd.llm.render import renderer_for  # noqa: E402
from persd.pipeline.stages.build import build_datasets  # noqa: E402
from persd.records import Attempt, Example, Execution, Feedback, Task, TeacherCall, Test  # noqa: E402
from persd.train import (  # noqa: E402
    TrainError,
    onpolicy,  # noqa: E402
    train,
)
from persd.train import teacher_scores as ts  # noqa: E402
from test_train import _config, tiny_model  # noqa: E402,F401  (the session fixture)

FEEDBACK_MARK = "ZeroDivisionError"


@pytest.fixture(scope="module")
def tiny_teacher(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:  # noqa: F811
    """Another random-weight Qwen2 (3 layers, other seed) with the student's tokenizer."""
    from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM

    tok = AutoTokenizer.from_pretrained(tiny_model)
    cfg = Qwen2Config.from_pretrained(tiny_model).to_dict()
    cfg.update(num_hidden_layers=3, layer_types=None)
    cfg = Qwen2Config(**cfg)
    torch.manual_seed(1)
    out = tmp_path_factory.mktemp("tiny-teacher")
    Qwen2ForCausalLM(cfg).save_pretrained(out)
    tok.save_pretrained(out)
    return out


def _rows() -> list[Example]:
    rows = []
    for i, (name, body) in enumerate([("add", "a + b"), ("sub", "a - b"), ("mul", "a * b")]):
        prompt = f"Write a Python function `{name}`."
        rows.append(
            Example(
                id=f"persd_onpolicy:{name}",
                variant="persd_onpolicy",
                format="text2code",
                prompt=prompt,
                completion=f"```python\ndef {name}(a, b):\n    return {body} / 0\n```",
                task_id=name,
                attempt_id=f"{name}#r0a0",
                verified=False,
                teacher_prompt=f"{prompt}\n\nfeedback: {FEEDBACK_MARK} (case {i})\n"
                f"solution: def {name}(a, b): return {body}",
            )
        )
    return rows


def _task(tid: str) -> Task:
    return Task(
        id=tid,
        source="test",
        prompt='"""Return the sum of a and b."""\n',
        instruction="Return the sum of a and b.",
        entry_point="add",
        tests_seen=(
            Test(kind="call", source="assert add(1, 2) == 3", call="add(1, 2)", expected="3"),
        ),
        tests_hidden=(
            Test(kind="call", source="assert add(2, 2) == 4", call="add(2, 2)", expected="4"),
        ),
    )


def test_build_gives_the_teacher_the_feedback_and_the_student_not():
    task = _task("T/1")
    attempt = Attempt(
        id="T/1#r0a0", task_id="T/1", model_id="s", prompt="p",
        raw="```python\ndef add(a, b):\n    return a / 0\n```",
        code="def add(a, b):\n    return a / 0",
    )  # fmt: skip
    failed = Feedback(status="error", test_set="seen", tests_total=1, exception=FEEDBACK_MARK,
                      message="division by zero")  # fmt: skip
    executions = {attempt.id: Execution(id=attempt.id, task_id="T/1", feedback=failed)}
    solution = TeacherCall.model_validate(
        {"id": "T/1#s0", "task_id": "T/1", "model_id": "t",
         "messages": [], "raw": "", "code": "def add(a, b):\n    return a + b"}
    )  # fmt: skip
    passed = Feedback(status="passed", test_set="all", tests_total=2)
    built = build_datasets(
        [task], [attempt], executions, [solution], [],
        {solution.id: Execution(id=solution.id, task_id="T/1", feedback=passed)},
        variants=["persd_onpolicy"], chat=True,
        student_prompt=lambda t: t.instruction,
    )  # fmt: skip
    (row,) = built.rows["persd_onpolicy"]
    assert row.completion == attempt.raw  # the student's own sample, not the teacher's text
    assert row.prompt == task.instruction  # what the student is served
    assert FEEDBACK_MARK not in row.prompt
    assert row.teacher_prompt is not None and row.teacher_prompt.startswith(row.prompt)
    assert FEEDBACK_MARK in row.teacher_prompt and "return a + b" in row.teacher_prompt
    # base format has no teacher turn to write: counted, not silently empty
    base = build_datasets(
        [task], [attempt], executions, [solution], [],
        {solution.id: Execution(id=solution.id, task_id="T/1", feedback=passed)},
        variants=["persd_onpolicy"], chat=False, student_prompt=lambda t: t.prompt,
    )  # fmt: skip
    assert base.rows["persd_onpolicy"] == [] and sum(base.skipped.values()) == 1


def test_teacher_ids_hold_the_feedback_and_student_ids_do_not(tiny_model: Path):  # noqa: F811
    renderer = renderer_for(str(tiny_model))
    row = _rows()[0]
    dataset, _ = onpolicy.to_dataset([row], [None], renderer, 512)
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model)
    student_text = tok.decode(dataset[0]["input_ids"])
    teacher_text = tok.decode(ts.teacher_ids(renderer, row))
    assert FEEDBACK_MARK in teacher_text and FEEDBACK_MARK not in student_text
    # both read the same completion tokens after their own prompt
    completion = ts.completion_ids(renderer, row)
    assert dataset[0]["input_ids"][-len(completion) :] == completion


def test_topk_scores_are_the_teachers_log_softmax(tiny_teacher: Path):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_teacher).eval()
    prompt, completion = [5, 6, 7, 8], [9, 10, 11]
    got = ts.forward_topk(model, prompt, completion, k=4)
    with torch.no_grad():
        full = torch.log_softmax(model(torch.tensor([prompt + completion])).logits[0], -1)
    for t in range(len(completion)):
        expect = full[len(prompt) - 1 + t].topk(4)
        assert got.topk_ids[t] == expect.indices.tolist()
        assert got.topk_logprobs[t] == pytest.approx(expect.values.tolist(), abs=1e-4)
    assert got.teacher_tokens == 7


def test_scores_are_cached_and_reused_on_resume(tiny_model, tiny_teacher, tmp_path, monkeypatch):  # noqa: F811
    renderer = renderer_for(str(tiny_model))
    rows = _rows()
    cache = tmp_path / "scores.jsonl"
    first = ts.score_rows(rows[:2], teacher=str(tiny_teacher), student_renderer=renderer,
                          top_k=5, cache_path=cache)  # fmt: skip
    assert first.scored_now == 2 and len(cache.read_text().splitlines()) == 2
    # A crash while writing the third row leaves a torn line: it is dropped and scored again.
    with cache.open("a") as f:
        f.write('{"key": "abc", "row": "persd_onpolicy:mul", "topk_')
    loads = []
    real = ts._load_teacher
    monkeypatch.setattr(ts, "_load_teacher", lambda *a: loads.append(1) or real(*a))
    again = ts.score_rows(rows, teacher=str(tiny_teacher), student_renderer=renderer,
                          top_k=5, cache_path=cache)  # fmt: skip
    assert again.scored_now == 1 and loads == [1]
    assert again.scores[:2] == first.scores
    # Everything cached: the teacher is not even loaded.
    monkeypatch.setattr(ts, "_load_teacher", lambda *a: pytest.fail("teacher loaded"))
    third = ts.score_rows(rows, teacher=str(tiny_teacher), student_renderer=renderer,
                          top_k=5, cache_path=cache)  # fmt: skip
    assert third.scored_now == 0 and third.scores == again.scores
    assert third.teacher_tokens == sum(s.teacher_tokens for s in third.scores) > 0
    # Another k is another score: not served from the k=5 cache.
    monkeypatch.setattr(ts, "_load_teacher", real)
    assert ts.score_rows(rows[:1], teacher=str(tiny_teacher), student_renderer=renderer,
                         top_k=3, cache_path=cache).scored_now == 1  # fmt: skip


def test_divergences_are_zero_on_equal_distributions_and_positive_otherwise():
    torch.manual_seed(0)
    logits = torch.randn(6, 50)
    lp = torch.log_softmax(logits, -1)
    ids = lp.topk(5).indices
    buckets = onpolicy.bucket_logprobs(lp, ids)
    assert torch.allclose(buckets.exp().sum(-1), torch.ones(6), atol=1e-5)
    for kind in ("reverse_kl", "forward_kl", "jsd"):
        same = onpolicy.divergence(buckets, buckets, kind)
        assert torch.allclose(same, torch.zeros(6), atol=1e-6)
        other = onpolicy.bucket_logprobs(torch.log_softmax(torch.randn(6, 50), -1), ids)
        assert (onpolicy.divergence(other, buckets, kind) > 0).all()
    # With k = V the buckets are the whole distribution: reverse KL is the exact one.
    q, p = torch.log_softmax(torch.randn(2, 8), -1), torch.log_softmax(torch.randn(2, 8), -1)
    full = torch.arange(8).expand(2, 8)
    exact = (q.exp() * (q - p)).sum(-1)
    got = onpolicy.divergence(
        onpolicy.bucket_logprobs(q, full), onpolicy.with_tail(p), "reverse_kl"
    )
    assert torch.allclose(got, exact, atol=1e-5)


def _write(path: Path, rows: list[Example]) -> Path:
    path.write_text("".join(r.model_dump_json() + "\n" for r in rows))
    return path


def _divergence_on(model, dataset, collate) -> float:
    batch = collate([dataset[i] for i in range(len(dataset))])
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    return float(onpolicy.onpolicy_loss(logits, batch, kind="reverse_kl", beta=0.5, sft_weight=0))


def test_a_student_scored_by_itself_on_its_own_prompt_has_no_divergence(tiny_model, tmp_path):  # noqa: F811
    """The whole path (teacher scores, dataset, collator, loss) lines each of the teacher's
    top-k rows up with the student's prediction of the same token: a teacher that is the
    student and reads the student's own prompt gives ~0; the same scores one token late do
    not, and neither does the privileged teacher prompt."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    renderer = renderer_for(str(tiny_model))
    collate = onpolicy.Collator(AutoTokenizer.from_pretrained(tiny_model).pad_token_id)
    model = AutoModelForCausalLM.from_pretrained(tiny_model).eval()

    def loss(rows: list[Example], shift: int = 0) -> float:
        scores = ts.score_rows(rows, teacher=str(tiny_model), student_renderer=renderer,
                               top_k=8, cache_path=tmp_path / "c.jsonl").scores  # fmt: skip
        dataset, _ = onpolicy.to_dataset(rows, scores, renderer, 512)
        if shift:
            late = [[r["tk_ids"][0]] * shift + r["tk_ids"][:-shift] for r in dataset]
            lp = [[r["tk_logprobs"][0]] * shift + r["tk_logprobs"][:-shift] for r in dataset]
            dataset = dataset.remove_columns(["tk_ids", "tk_logprobs"])
            dataset = dataset.add_column("tk_ids", late).add_column("tk_logprobs", lp)
        return _divergence_on(model, dataset, collate)

    own = [r.model_copy(update={"teacher_prompt": r.prompt}) for r in _rows()]
    same, late, privileged = loss(own), loss(own, shift=1), loss(_rows())
    assert same < 1e-3, same
    assert late > 100 * max(same, 1e-6) and privileged > 10 * max(same, 1e-6)


def test_training_lowers_the_divergence_to_the_teacher(tiny_model, tiny_teacher, tmp_path):  # noqa: F811
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    data = _write(tmp_path / "onpolicy.jsonl", _rows())
    config = _config(
        max_steps=20, batch_size=1, grad_accum=1,
        onpolicy={"teacher": str(tiny_teacher), "top_k": 8},
    )  # fmt: skip
    result = train(config, [data], str(tiny_model), tmp_path / "out")
    cache = tmp_path / "out" / "teacher_scores.jsonl"
    assert len(cache.read_text().splitlines()) == 3
    summary = json.loads((tmp_path / "out" / "train_summary.json").read_text())
    assert summary["teacher_rows_scored"] == 3 and summary["teacher_tokens"] > 0
    assert result.summary.steps == 20

    renderer = renderer_for(str(tiny_model))
    scores = ts.score_rows(_rows(), teacher=str(tiny_teacher), student_renderer=renderer,
                           top_k=8, cache_path=cache).scores  # fmt: skip
    dataset, _ = onpolicy.to_dataset(_rows(), scores, renderer, 512)
    collate = onpolicy.Collator(AutoTokenizer.from_pretrained(tiny_model).pad_token_id)
    base = AutoModelForCausalLM.from_pretrained(tiny_model).eval()
    before = _divergence_on(base, dataset, collate)
    trained = PeftModel.from_pretrained(base, result.model_dir).eval()
    after = _divergence_on(trained, dataset, collate)
    assert math.isfinite(before) and after < 0.7 * before


def test_sft_rows_mix_in_by_weight(tiny_model, tiny_teacher, tmp_path):  # noqa: F811
    renderer = renderer_for(str(tiny_model))
    fix = _rows()[0].model_copy(
        update={"id": "persd:add", "variant": "persd", "teacher_prompt": None}
    )
    rows = [fix, *_rows()[1:]]
    scores = [None, *ts.score_rows(rows[1:], teacher=str(tiny_teacher), student_renderer=renderer,
                                   top_k=4, cache_path=tmp_path / "c.jsonl").scores]  # fmt: skip
    dataset, _ = onpolicy.to_dataset(rows, scores, renderer, 512)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    collate = onpolicy.Collator(AutoTokenizer.from_pretrained(tiny_model).pad_token_id)
    batch = collate([dataset[i] for i in range(3)])
    assert batch["sft_mask"][0].any() and not batch["kd_mask"][0].any()
    assert batch["kd_mask"][1:].any() and not batch["sft_mask"][1:].any()
    model = AutoModelForCausalLM.from_pretrained(tiny_model).eval()
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    kd = onpolicy.onpolicy_loss(logits, batch, kind="reverse_kl", beta=0.5, sft_weight=0.0)
    mixed = onpolicy.onpolicy_loss(logits, batch, kind="reverse_kl", beta=0.5, sft_weight=1.0)
    assert mixed > kd > 0


def test_onpolicy_rows_without_a_teacher_are_one_line(tiny_model, tmp_path):  # noqa: F811
    data = _write(tmp_path / "onpolicy.jsonl", _rows())
    with pytest.raises(TrainError, match="need a teacher to score them"):
        train(_config(max_steps=1), [data], str(tiny_model), tmp_path / "out")


def test_a_teacher_with_another_tokenizer_is_refused(tiny_model, tiny_teacher, tmp_path):  # noqa: F811
    import shutil

    from transformers import AutoTokenizer

    other = AutoTokenizer.from_pretrained(tiny_model)
    other.chat_template = other.chat_template.replace("<|im_end|>", "</turn>")
    shutil.copytree(tiny_teacher, tmp_path / "t")
    other.save_pretrained(tmp_path / "t")
    with pytest.raises(PersdError, match="tokenises the completion differently"):
        ts.score_rows(_rows()[:1], teacher=str(tmp_path / "t"),
                      student_renderer=renderer_for(str(tiny_model)), top_k=4,
                      cache_path=tmp_path / "c.jsonl")  # fmt: skip


def test_cli_trains_onpolicy_rows_with_teacher(tiny_model, tiny_teacher, tmp_path):  # noqa: F811
    from typer.testing import CliRunner

    from persd.cli.train import train_app

    data = _write(tmp_path / "onpolicy.jsonl", _rows())
    cfg = tmp_path / "t.yaml"
    cfg.write_text("batch_size: 1\ngrad_accum: 1\nmax_seq_len: 256\nonpolicy:\n  top_k: 4\n")
    args = [str(data), "--model", str(tiny_model), "--out", str(tmp_path / "out"), "-c", str(cfg)]
    result = CliRunner().invoke(
        train_app, [*args, "--teacher", str(tiny_teacher), "--max-steps", "2"]
    )
    assert result.exit_code == 0, result.output
    assert "trained lora on 3 rows: 2 steps" in result.output
    scores = (tmp_path / "out" / "teacher_scores.jsonl").read_text().splitlines()
    cached = [json.loads(line) for line in scores]
    assert len(cached) == 3 and all(len(ids) == 4 for row in cached for ids in row["topk_ids"])
    # Another run (a second seed) reads the first run's scores instead of scoring again.
    shared = [str(data), "--model", str(tiny_model), "--out", str(tmp_path / "o3"), "-c", str(cfg)]
    again = CliRunner().invoke(
        train_app,
        [*shared, "--teacher", str(tiny_teacher), "--max-steps", "1",
         "--teacher-cache", str(tmp_path / "out" / "teacher_scores.jsonl")],
    )  # fmt: skip
    assert again.exit_code == 0, again.output
    summary = json.loads((tmp_path / "o3" / "train_summary.json").read_text())
    assert summary["teacher_rows_scored"] == 0 and summary["teacher_tokens"] > 0
    assert not (tmp_path / "o3" / "teacher_scores.jsonl").exists()
    bare = [str(data), "--model", str(tiny_model), "--out", str(tmp_path / "o2"), "-c", str(cfg)]
    without = CliRunner().invoke(train_app, bare)
    assert isinstance(without.exception, TrainError) and "need a teacher" in str(without.exception)
