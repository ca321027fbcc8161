"""persd.train: SFT of a tiny random-weight Qwen2 built here, with a tokenizer trained here.

Nothing is mocked: TRL, PEFT and the Trainer run for real, on a model small enough that a few
dozen optimizer steps take a second or two on CPU.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("trl")
pytest.importorskip("peft")

from persd.errors import DataError, PersdError  # noqa: E402
from persd.records import Example  # noqa: E402
from persd.train import TrainConfig, TrainError, load_train_config, train  # noqa: E402
from persd.train.data import load_examples  # noqa: E402
from persd.train.metrics import completion_loss  # noqa: E402
from persd.train.sft import make_trainer  # noqa: E402

CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

TASKS = {
    "add": "def add(a, b):\n    return a + b",
    "sub": "def sub(a, b):\n    return a - b",
    "mul": "def mul(a, b):\n    return a * b",
    "neg": "def neg(x):\n    return -x",
    "first": "def first(xs):\n    return xs[0]",
    "last": "def last(xs):\n    return xs[-1]",
}


def _examples(fmt: str) -> list[Example]:
    rows = []
    for name, code in TASKS.items():
        prompt = f"Write a Python function `{name}`."
        completion = f"```python\n{code}\n```" if fmt == "chat" else "\n" + code + "\n"
        if fmt == "base":
            prompt = f'"""{prompt}"""\n'
        rows.append(
            Example(
                id=f"persd:{name}",
                variant="persd",
                format="text2code",
                prompt=prompt,
                completion=completion,
                task_id=name,
            )
        )
    return rows


def _write_jsonl(path: Path, rows: list[Example]) -> Path:
    path.write_text("".join(r.model_dump_json() + "\n" for r in rows))
    return path


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer Qwen2 (hidden 32) with random weights and a byte-level BPE trained offline."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    corpus = [ex.prompt + ex.completion for fmt in ("chat", "base") for ex in _examples(fmt)]
    corpus += [CHATML, "user assistant system"]
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(corpus, trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=["<|im_start|>"],
    )
    fast.chat_template = CHATML
    torch.manual_seed(0)
    config = Qwen2Config(
        vocab_size=len(fast),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        tie_word_embeddings=True,
        initializer_range=0.2,  # at the usual 0.02 a hidden-32 model is too flat for LoRA to move
        eos_token_id=fast.eos_token_id,
        pad_token_id=fast.pad_token_id,
    )
    out = tmp_path_factory.mktemp("tiny-qwen2")
    Qwen2ForCausalLM(config).save_pretrained(out)
    fast.save_pretrained(out)
    return out


def _config(**kw: object) -> TrainConfig:
    base = {
        "max_steps": 30,
        "batch_size": 2,
        "grad_accum": 1,
        "learning_rate": 1e-2,
        "lr_scheduler": "constant",
        "warmup_ratio": 0.0,
        "logging_steps": 5,
        "save_steps": 10,
        "lora": {"r": 8, "alpha": 32, "dropout": 0.0},
        "max_seq_len": 128,
    }
    return TrainConfig.model_validate({**base, **kw})


@pytest.fixture(scope="session")
def lora_run(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """One LoRA run (chat format, merged export) that several tests read."""
    root = tmp_path_factory.mktemp("lora-run")
    data = _write_jsonl(root / "persd.jsonl", _examples("chat"))
    result = train(_config(merge=True), [data], str(tiny_model), root / "out")
    return {"result": result, "data": data, "out": root / "out"}


def _prepared(tiny_model: Path, fmt: str, tmp_path: Path):
    config = _config(format=fmt)
    trainer, _ = make_trainer(config, _examples(fmt), str(tiny_model), tmp_path)
    return trainer


@pytest.mark.parametrize("fmt", ["chat", "base"])
def test_only_completion_and_its_end_token_are_learnt(tiny_model: Path, tmp_path: Path, fmt: str):
    trainer = _prepared(tiny_model, fmt, tmp_path)
    tok = trainer.processing_class
    rows = [trainer.train_dataset[i] for i in range(3)]
    batch = trainer.data_collator(rows)
    for i, ex in enumerate(_examples(fmt)[:3]):
        if fmt == "chat":
            prompt = [{"role": "user", "content": ex.prompt}]
            prompt_ids = tok.apply_chat_template(
                prompt, add_generation_prompt=True, tokenize=True, return_dict=True
            )["input_ids"]
        else:
            prompt_ids = tok(ex.prompt)["input_ids"]
        ids, labels = batch["input_ids"][i], batch["labels"][i]
        n = int(batch["attention_mask"][i].sum())
        assert ids[: len(prompt_ids)].tolist() == prompt_ids  # the prompt as sampled
        assert (labels[: len(prompt_ids)] == -100).all()  # prompt: no loss
        assert labels[len(prompt_ids) : n].tolist() == ids[len(prompt_ids) : n].tolist()
        assert (labels[n:] == -100).all()  # padding: no loss
        learnt = tok.decode(ids[len(prompt_ids) : n])
        assert ex.completion in learnt
        assert tok.eos_token_id in labels[len(prompt_ids) : n].tolist()  # it learns to stop
        if fmt == "base":
            assert labels[n - 1] == tok.eos_token_id


def test_lora_training_lowers_the_loss_on_its_data(tiny_model: Path, lora_run: dict, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    dataset = _prepared(tiny_model, "chat", tmp_path / "prep").train_dataset
    base = AutoModelForCausalLM.from_pretrained(tiny_model)
    before = completion_loss(base, dataset)
    tuned = PeftModel.from_pretrained(base, lora_run["result"].model_dir)
    after = completion_loss(tuned, dataset)
    assert after < 0.5 * before, (before, after)


def test_adapter_loads_back_and_generates(tiny_model: Path, lora_run: dict):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    final = lora_run["result"].model_dir
    tok = AutoTokenizer.from_pretrained(final)
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model), final)
    messages = [{"role": "user", "content": "Write a Python function `add`."}]
    enc = tok.apply_chat_template(
        messages, add_generation_prompt=True, return_tensors="pt", return_dict=True
    )
    out = model.generate(**enc, max_new_tokens=20, do_sample=False, pad_token_id=tok.pad_token_id)
    text = tok.decode(out[0, enc["input_ids"].shape[1] :], skip_special_tokens=True)
    assert text.startswith("```python\n")  # the learnt answer shape; the random base babbles


def test_merged_export_matches_base_plus_adapter(tiny_model: Path, lora_run: dict):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    result = lora_run["result"]
    assert result.merged_dir is not None
    assert not (result.merged_dir / "adapter_config.json").exists()
    merged = AutoModelForCausalLM.from_pretrained(result.merged_dir)
    assert any(result.merged_dir.glob("*.safetensors"))
    adapted = PeftModel.from_pretrained(
        AutoModelForCausalLM.from_pretrained(tiny_model), result.model_dir
    )
    ids = torch.tensor([[5, 17, 42, 99, 7, 3]])
    with torch.no_grad():
        assert torch.allclose(merged(ids).logits, adapted(ids).logits, atol=1e-5)


def test_run_directory_holds_summary_config_and_tensorboard(lora_run: dict):
    out = lora_run["out"]
    summary = json.loads((out / "train_summary.json").read_text())
    assert summary["steps"] == 30 and summary["examples"] == len(TASKS)
    assert summary["variants"] == {"persd": len(TASKS)} and summary["dropped_too_long"] == 0
    assert summary["method"] == "lora" and summary["seed"] == 42 and summary["format"] == "chat"
    assert summary["tokens"] > 0 and summary["tokens_per_s"] > 0
    assert summary["final_loss"] < 2.0
    saved = json.loads((out / "train_config.json").read_text())
    assert saved["config"]["max_steps"] == 30 and saved["data"] == [str(lora_run["data"])]
    assert list(out.glob("runs/*/events.out.tfevents.*"))
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-20", "checkpoint-30"]


def test_resume_continues_the_step_count(tiny_model: Path, tmp_path: Path):
    data = _write_jsonl(tmp_path / "d.jsonl", _examples("base"))
    out = tmp_path / "out"
    first = train(_config(format="base", max_steps=4, save_steps=2), data, str(tiny_model), out)
    assert first.summary.steps == 4
    more = _config(format="base", max_steps=7, save_steps=2, resume=True)
    second = train(more, data, str(tiny_model), out)
    assert second.summary.steps == 7
    assert second.summary.resumed_from == str(out / "checkpoint-4")
    assert second.summary.tokens > second.summary.session_tokens > 0
    history = json.loads((out / "checkpoint-7" / "trainer_state.json").read_text())["log_history"]
    assert [row["step"] for row in history if "loss" in row][0] == 1  # one history, not two


def test_init_adapter_continues_a_trained_adapter(tiny_model: Path, lora_run: dict, tmp_path):
    """Multi-round 'continue': the next round starts from the trained adapter, not a fresh one
    (a fresh LoRA has B = 0, so it starts at the base model's loss)."""
    from safetensors.torch import load_file

    previous = lora_run["result"].model_dir
    data = _write_jsonl(tmp_path / "d.jsonl", _examples("chat"))
    # A step too small to move anything: the saved adapter is the one it started from.
    still = _config(max_steps=1, learning_rate=1e-12, init_adapter=str(previous))
    result = train(still, data, str(tiny_model), tmp_path / "out")
    before = load_file(str(previous / "adapter_model.safetensors"))
    after = load_file(str(result.model_dir / "adapter_model.safetensors"))
    assert before.keys() == after.keys()
    lora_b = [k for k in before if "lora_B" in k]
    assert lora_b and all(before[k].abs().sum() > 0 for k in lora_b)
    assert all(torch.allclose(before[k].float(), after[k].float(), atol=1e-6) for k in before)
    # And its first logged loss is the trained model's, well below a fresh adapter's.
    fresh = train(_config(max_steps=1, learning_rate=1e-12), data, str(tiny_model), tmp_path / "f")
    assert result.summary.final_loss < 0.8 * fresh.summary.final_loss


def test_init_adapter_needs_lora_and_an_adapter(tiny_model: Path, tmp_path: Path):
    with pytest.raises(ValueError, match="init_adapter continues a LoRA adapter"):
        _config(method="full", init_adapter=str(tmp_path))
    data = _write_jsonl(tmp_path / "d.jsonl", _examples("chat"))
    with pytest.raises(TrainError, match="not a PEFT adapter"):
        train(
            _config(max_steps=1, init_adapter=str(tmp_path)), data, str(tiny_model), tmp_path / "o"
        )


def test_existing_output_dir_without_resume_is_an_error(tiny_model: Path, tmp_path: Path):
    data = _write_jsonl(tmp_path / "d.jsonl", _examples("chat"))
    out = tmp_path / "out"
    out.mkdir()
    (out / "config.json").write_text("{}")  # what made the official code resume silently
    with pytest.raises(TrainError) as e:
        train(_config(), data, str(tiny_model), out)
    assert str(out) in str(e.value) and "--resume" in str(e.value)
    assert "\n" not in str(e.value)
    with pytest.raises(TrainError, match="no checkpoint"):
        train(_config(resume=True), data, str(tiny_model), out)


def test_bad_rows_name_file_line_and_field(tmp_path: Path):
    good = _examples("chat")[0].model_dump_json()
    bad = tmp_path / "bad.jsonl"
    bad.write_text(good + "\n" + json.dumps({"id": "x", "variant": "persd"}) + "\n")
    with pytest.raises(DataError, match=r"bad\.jsonl:2: 'format' is missing"):
        load_examples([bad])
    bad.write_text(good + "\n{not json\n")
    with pytest.raises(DataError, match=r"bad\.jsonl:2: not valid JSON"):
        load_examples([bad])
    with pytest.raises(DataError, match=r"missing\.jsonl: no such file"):
        load_examples([tmp_path / "missing.jsonl"])
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(DataError, match="holds no training rows"):
        load_examples([tmp_path / "empty.jsonl"])


def test_unknown_model_is_one_line(tmp_path: Path):
    data = _write_jsonl(tmp_path / "d.jsonl", _examples("chat"))
    with pytest.raises(PersdError) as e:
        train(_config(), data, "smollm2-135m-instruc", tmp_path / "out")
    assert "did you mean 'smollm2-135m-instruct'" in str(e.value) and "\n" not in str(e.value)


def test_lora_targets_that_match_nothing_are_one_line(tiny_model: Path, tmp_path: Path):
    config = _config(lora={"target_modules": ["c_attn"]})
    with pytest.raises(TrainError, match=r"set lora.target_modules to its layer names"):
        make_trainer(config, _examples("chat"), str(tiny_model), tmp_path)


def test_precision_follows_the_hardware_and_the_method():
    from persd.train.sft import precision

    auto = TrainConfig()
    assert precision(auto, bf16_native=False) == ("float32", False)
    assert precision(auto, bf16_native=True) == ("bfloat16", True)  # frozen base in bf16
    full = TrainConfig(method="full", dtype="bfloat16")
    assert precision(full, bf16_native=False) == ("float32", True)  # fp32 master weights
    assert precision(TrainConfig(dtype="float32"), bf16_native=True) == ("float32", False)


def test_bf16_is_chosen_by_measuring_the_cpu(monkeypatch: pytest.MonkeyPatch):
    """On a CPU with bf16 instructions, bf16 autocast is on only where its products are the
    faster ones (measured); without the instructions it is never on."""
    from persd.train import precision as prec

    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: True, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False, raising=False)
    for bf16, fp32, want in ((2.0, 1.0, True), (1.0, 2.0, False)):
        rates = {"bfloat16": bf16, "float32": fp32}
        monkeypatch.setattr(prec, "_rate", lambda dtype, threads, r=rates: r[dtype])
        assert prec.bf16_pays(False) is want
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False, raising=False)
    assert prec.bf16_pays(False) is False


def test_the_measured_rates_are_real_products():
    from persd.train.precision import _rate

    assert _rate("float32", 1, 0.05) > 0 and _rate("bfloat16", 1, 0.05) > 0


def test_config_file_and_flags(tmp_path: Path):
    cfg = tmp_path / "run.yaml"
    # a run config: its train: section, variants (the pipeline's choice of data) left out
    cfg.write_text("data: {format: base}\ntrain: {epochs: 2, lora: {r: 4}, variants: [persd]}\n")
    config = load_train_config(cfg, {"epochs": 5, "seed": None})
    assert (config.format, config.epochs, config.lora.r, config.seed) == ("base", 5, 4, 42)
    assert config.lr == 2e-5 and TrainConfig(method="full").lr == 1e-5
    cfg.write_text("train: {lora: {rank: 4}}\n")
    with pytest.raises(PersdError, match=r"unknown key 'lora.rank'; did you mean 'lora.r'"):
        load_train_config(cfg)


def test_cli_trains_and_reports(tiny_model: Path, tmp_path: Path):
    from typer.testing import CliRunner

    from persd.cli.train import train_app

    data = _write_jsonl(tmp_path / "d.jsonl", _examples("base"))
    cfg = tmp_path / "t.yaml"
    cfg.write_text("batch_size: 2\ngrad_accum: 1\nmax_seq_len: 128\ndtype: float32\n")
    args = [str(data), "--model", str(tiny_model), "--out", str(tmp_path / "out"), "-c", str(cfg)]
    result = CliRunner().invoke(train_app, [*args, "--format", "base", "--max-steps", "3"])
    assert result.exit_code == 0, result.output
    assert "trained lora on 6 rows: 3 steps" in result.output
    assert json.loads((tmp_path / "out" / "train_summary.json").read_text())["dtype"] == "float32"
    assert (tmp_path / "out" / "final" / "adapter_config.json").is_file()


def test_cli_errors_are_one_line(tmp_path: Path):
    import subprocess
    import sys

    bad = tmp_path / "rows.jsonl"
    bad.write_text('{"id": "x"}\n')
    out = str(tmp_path / "out")
    cmd = [sys.executable, "-m", "persd.cli.train", str(bad), "-m", "x", "-o", out]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert proc.stderr.strip() == f"error: {bad}:1: 'variant' is missing"


def test_runs_unchanged_under_accelerate_launch(tiny_model: Path, tmp_path: Path):
    """Two data-parallel CPU processes (gloo), launched the documented way."""
    import subprocess
    import sys

    from persd.train.launch import accelerate_config

    data = _write_jsonl(tmp_path / "d.jsonl", _examples("chat"))
    out = tmp_path / "out"
    cmd = [
        *(sys.executable, "-m", "accelerate.commands.launch"),
        *("--config_file", str(accelerate_config("ddp_cpu")), "-m", "persd.cli.train"),
        *(str(data), "--model", str(tiny_model), "--out", str(out), "--max-steps", "2"),
        *("--threads", "1"),
    ]
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}  # two ranks on one GPU would clash in NCCL
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("trained lora on 6 rows: 2 steps") == 1  # rank 0 reports, alone
    summary = json.loads((out / "train_summary.json").read_text())
    assert summary["processes"] == 2 and summary["steps"] == 2
    assert (out / "final" / "adapter_model.safetensors").is_file()


@pytest.mark.slow  # DeepSpeed builds its CPU communication op on first use (~1 min)
@pytest.mark.parametrize("name", ["zero2", "zero3"])
def test_shipped_deepspeed_configs_train_on_cpu(tiny_model: Path, tmp_path: Path, name: str):
    """The shipped ZeRO files with only what a CPU needs changed (2 processes, use_cpu, no
    mixed precision). Skips where DeepSpeed is absent.

    The CPU switch must be ``use_cpu`` in the file: accelerate's ``--cpu`` flag bypasses the
    DeepSpeed launcher and starts a single plain process."""
    import subprocess
    import sys

    import yaml

    pytest.importorskip("deepspeed")
    from persd.train.launch import accelerate_config

    cfg = yaml.safe_load(accelerate_config(name).read_text())
    cfg |= {"use_cpu": True, "num_processes": 2, "mixed_precision": "no"}
    cfg_file = tmp_path / f"{name}_cpu.yaml"
    cfg_file.write_text(yaml.safe_dump(cfg))
    data = _write_jsonl(tmp_path / "d.jsonl", _examples("chat"))
    out = tmp_path / "out"
    cmd = [
        *(sys.executable, "-m", "accelerate.commands.launch"),
        *("--config_file", str(cfg_file), "-m", "persd.cli.train"),
        *(str(data), "--model", str(tiny_model), "--out", str(out), "--max-steps", "2"),
        *("--method", "full", "--threads", "1", "--dtype", "float32"),
    ]
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((out / "train_summary.json").read_text())
    assert summary["processes"] == 2 and summary["steps"] == 2
    assert "deepspeed" in proc.stderr.lower()  # it really went through DeepSpeed
    # ZeRO-3 shards the weights; the saved model is gathered whole and loads as usual.
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(out / "final")
    assert sum(p.numel() for p in model.parameters()) > 10_000


def test_rows_whose_prompt_fills_max_seq_len_are_counted(tiny_model: Path, tmp_path: Path):
    rows = _examples("base")
    rows[0] = rows[0].model_copy(update={"prompt": "x " * 200})
    data = _write_jsonl(tmp_path / "d.jsonl", rows)
    notes: list[str] = []

    class Notes:
        def start(self, stage: str, total: int):
            return lambda n: None

        def note(self, message: str) -> None:
            notes.append(message)

    config = _config(format="base", max_steps=1, max_seq_len=32)
    result = train(config, data, str(tiny_model), tmp_path / "out", progress=Notes())
    assert result.summary.dropped_too_long == 1 and result.summary.examples == 6
    assert any("skipped 1 of 6 rows" in n for n in notes)
