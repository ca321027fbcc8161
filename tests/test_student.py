"""Student backends on real weights: llama.cpp (fast, unmarked), transformers (slow), vLLM guard.

The real model is SmolLM2-135M-Instruct (Q4_1 GGUF, fixture ``smollm2_gguf``). LoRA loading is
checked on a tiny random Llama built here, with a character-level tokenizer built here too.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from persd.errors import PersdError
from persd.llm.base import Generation, Message, SamplingParams, Student
from persd.llm.student import StudentConfig, choose_backend, load_student
from persd.llm.student_vllm import VLLM_MISSING, VLLMStudent, vllm_sampling_kwargs

CODE_PROMPT = 'def add(a, b):\n    """Return the sum of a and b."""\n'
CHAT_PROMPT = (Message(role="user", content="Write a Python function that reverses a string."),)


# ---------------------------------------------------------------- no heavy imports, vLLM guard


def test_importing_the_student_modules_loads_no_heavy_library() -> None:
    code = (
        "import sys\n"
        "import persd.llm, persd.llm.student, persd.llm.student_hf, persd.llm.student_llama\n"
        "import persd.llm.student_vllm, persd.llm.extract, persd.prompts\n"
        "heavy = {'torch', 'transformers', 'llama_cpp', 'vllm', 'peft'} & set(sys.modules)\n"
        "print(sorted(heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.skipif(
    __import__("importlib").util.find_spec("vllm") is not None, reason="vLLM is installed"
)
def test_vllm_missing_is_one_clear_line() -> None:
    with pytest.raises(PersdError) as info:
        VLLMStudent("Qwen/Qwen2.5-Coder-0.5B-Instruct")
    assert str(info.value) == VLLM_MISSING
    assert "\n" not in str(info.value)


def test_vllm_sampling_params_mean_what_they_mean_elsewhere() -> None:
    sampled = vllm_sampling_kwargs(
        SamplingParams(n=4, temperature=0.8, top_p=0.95, max_new_tokens=100, stop=("\ndef ",))
    )
    assert sampled == {
        "n": 4,
        "temperature": 0.8,
        "top_p": 0.95,
        "top_k": -1,
        "max_tokens": 100,
        "stop": ["\ndef "],
        "seed": 0,
        "include_stop_str_in_output": False,
    }
    greedy = vllm_sampling_kwargs(SamplingParams(n=3, temperature=0.0, top_p=0.5, seed=7))
    assert greedy["n"] == 1 and greedy["temperature"] == 0.0 and greedy["top_p"] == 1.0
    assert greedy["seed"] == 7


def test_auto_backend_follows_the_model_and_adapter(monkeypatch) -> None:
    if __import__("importlib").util.find_spec("vllm") is not None:
        pytest.skip("vLLM is installed: auto may pick it")
    # Without llama-cpp-python (with it, auto picks llama_cpp for a GGUF: test_eval_path.py).
    monkeypatch.setattr("persd.llm.student._llama_cpp_usable", lambda: False)
    assert choose_backend(StudentConfig(), kind="gguf") == "transformers"
    assert choose_backend(StudentConfig(), kind="hf_dir") == "transformers"
    assert choose_backend(StudentConfig(backend="llama_cpp"), kind="gguf") == "llama_cpp"
    with_peft = StudentConfig(adapter=Path("runs/r1/adapter"))
    assert choose_backend(with_peft, kind="gguf") == "transformers"
    with_gguf_lora = StudentConfig(adapter=Path("runs/r1/adapter.gguf"))
    assert choose_backend(with_gguf_lora, kind="gguf") == "llama_cpp"
    assert choose_backend(StudentConfig(backend="transformers"), kind="gguf") == "transformers"


def test_student_config_rejects_unknown_keys() -> None:
    with pytest.raises(ValueError, match="batchsize"):
        StudentConfig.model_validate({"batchsize": 4})


def test_llama_cpp_refuses_an_adapter_it_cannot_read_in_one_line(smollm2_gguf: Path) -> None:
    # A PEFT directory is converted (tests/test_lora_gguf.py); anything else is refused.
    config = StudentConfig(model=str(smollm2_gguf), backend="llama_cpp", adapter=Path("x.bin"))
    with pytest.raises(PersdError, match="takes a PEFT adapter directory or a GGUF LoRA file"):
        load_student(config)


# ---------------------------------------------------------------- behaviour shared by backends


def _check_greedy_is_deterministic(student: Student) -> None:
    params = SamplingParams(max_new_tokens=12)
    first = student.generate([CODE_PROMPT, CHAT_PROMPT], params)
    second = student.generate([CODE_PROMPT, CHAT_PROMPT], params)
    assert first == second
    assert all(len(row) == 1 and row[0].tokens_out > 0 for row in first)
    assert all(row[0].tokens_in > 5 for row in first)


def _check_n_samples(student: Student) -> None:
    params = SamplingParams(n=3, temperature=0.8, max_new_tokens=12, seed=1)
    [row] = student.generate([CODE_PROMPT], params)
    assert len(row) == 3 and all(isinstance(g, Generation) for g in row)
    assert len({g.text for g in row}) > 1, "three samples at temperature 0.8 were identical"
    assert student.generate([CODE_PROMPT], params) == [row], "same seed, different samples"


def _check_stop_is_honoured(student: Student) -> None:
    [[free]] = student.generate([CODE_PROMPT], SamplingParams(max_new_tokens=16))
    text = free.text
    # A stop string whose first occurrence is at k >= 1 of the greedy text: the stopped text
    # must be exactly the first k characters.
    k = next(k for k in range(1, len(text) - 2) if text.find(text[k : k + 3]) == k)
    params = SamplingParams(max_new_tokens=16, stop=(text[k : k + 3],))
    [[cut]] = student.generate([CODE_PROMPT], params)
    assert cut.text == text[:k]
    assert cut.finish_reason == "stop"
    assert cut.tokens_out <= free.tokens_out


# ---------------------------------------------------------------- llama.cpp (fast, real model)


@pytest.fixture(scope="module")
def llama_student(smollm2_gguf: Path):
    student = load_student(StudentConfig(model=str(smollm2_gguf), backend="llama_cpp", n_ctx=1024))
    yield student
    student.close()


def test_load_student_builds_llama_cpp_for_a_gguf(llama_student: Student) -> None:
    from persd.llm.student_llama import LlamaStudent

    assert isinstance(llama_student, LlamaStudent) and isinstance(llama_student, Student)
    assert llama_student.model_id == "SmolLM2-135M-Instruct.Q4_1"


def test_llama_cpp_greedy_is_deterministic(llama_student: Student) -> None:
    _check_greedy_is_deterministic(llama_student)


def test_llama_cpp_n_samples(llama_student: Student) -> None:
    _check_n_samples(llama_student)


def test_llama_cpp_stop_sequences(llama_student: Student) -> None:
    _check_stop_is_honoured(llama_student)


def test_llama_cpp_chat_uses_the_models_template(llama_student: Student) -> None:
    [[reply]] = llama_student.generate([CHAT_PROMPT], SamplingParams(max_new_tokens=24))
    assert reply.text.strip() and "<|im_start|>" not in reply.text
    assert reply.tokens_in > 20  # system + user turns of SmolLM2's template


def test_llama_cpp_stops_when_answered_with_the_same_program(llama_student: Student) -> None:
    """The early stop saves the prose after the code and nothing else: same program, fewer
    tokens, and what was generated is a prefix of the full greedy reply."""
    from persd.llm.extract import extract_program
    from persd.prompts import student_prompt
    from persd.tasks import load_benchmark

    saved = 0
    for task in load_benchmark("humaneval")[:3]:
        prompt = student_prompt(task, chat=True)
        params = SamplingParams(max_new_tokens=256)
        [[full]] = llama_student.generate([prompt], params)
        early = params.model_copy(update={"stop_when_answered": task.entry_point})
        [[cut]] = llama_student.generate([prompt], early)
        assert full.text.startswith(cut.text)
        kw = {"prompt": task.prompt, "entry_point": task.entry_point, "chat": True}
        assert extract_program(cut.text, **kw) == extract_program(full.text, **kw)
        assert cut.tokens_in == full.tokens_in
        saved += full.tokens_out - cut.tokens_out
    assert saved > 0  # SmolLM2 explains its code after the block


# ---------------------------------------------------------------- transformers (real model)


@pytest.fixture(scope="module")
def hf_student(smollm2_gguf: Path):
    from persd.llm.student_hf import HFStudent, convert_gguf_to_hf

    # float32: batched and single-row greedy then agree token for token (see docs/STUDENT.md
    # for bf16, where padding changes the rounding and a near-tie can flip).
    student = HFStudent(convert_gguf_to_hf(smollm2_gguf), dtype="float32", batch_size=4)
    yield student
    student.close()


@pytest.mark.slow
def test_gguf_converts_once_and_loads_like_the_gguf(smollm2_gguf: Path) -> None:
    from persd.llm.student_hf import HFStudent, convert_gguf_to_hf, converted_dir

    out = convert_gguf_to_hf(smollm2_gguf)
    assert out == converted_dir(smollm2_gguf) and (out / "config.json").is_file()
    mtime = (out / "config.json").stat().st_mtime
    assert convert_gguf_to_hf(smollm2_gguf) == out
    assert (out / "config.json").stat().st_mtime == mtime, "converted twice"
    assert not list(out.parent.glob(f".{out.name}.tmp-*")), "temporary directory left behind"
    student = HFStudent(smollm2_gguf, dtype="float32")  # the .gguf path finds the copy
    assert student.model_id == "SmolLM2-135M-Instruct.Q4_1"
    student.close()


@pytest.mark.slow
def test_transformers_greedy_is_deterministic(hf_student: Student) -> None:
    _check_greedy_is_deterministic(hf_student)


@pytest.mark.slow
def test_transformers_n_samples(hf_student: Student) -> None:
    _check_n_samples(hf_student)


@pytest.mark.slow
def test_transformers_stop_sequences(hf_student: Student) -> None:
    _check_stop_is_honoured(hf_student)


@pytest.mark.slow
def test_transformers_batch_equals_one_by_one_for_greedy(hf_student: Student) -> None:
    prompts = [CODE_PROMPT, CHAT_PROMPT, "def fib(n):\n", 'print("hello']
    params = SamplingParams(max_new_tokens=16)
    batched = hf_student.generate(prompts, params)
    alone = [hf_student.generate([p], params)[0] for p in prompts]
    assert batched == alone


# ---------------------------------------------------------------- LoRA on a tiny random model


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A 2-layer random Llama with a character-level tokenizer, and a LoRA adapter for it."""
    import torch
    from peft import LoraConfig, get_peft_model
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    root = tmp_path_factory.mktemp("tiny")
    chars = [chr(c) for c in range(32, 127)] + ["\n"]
    vocab = {"<eos>": 0, **{c: i + 1 for i, c in enumerate(chars)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<eos>"))
    tok.pre_tokenizer = pre_tokenizers.Split("", behavior="isolated")
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<eos>", pad_token="<eos>")
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        eos_token_id=0,
        pad_token_id=0,
        bos_token_id=0,
    )
    base = root / "base"
    LlamaForCausalLM(config).save_pretrained(base)
    fast.save_pretrained(base)
    peft = get_peft_model(
        LlamaForCausalLM.from_pretrained(base),
        LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "down_proj"]),
    )
    for name, param in peft.named_parameters():
        if "lora_B" in name:  # zero by default: the adapter would change nothing
            torch.nn.init.normal_(param, std=0.5)
    peft.save_pretrained(root / "adapter")
    return base, root / "adapter"


def test_lora_adapter_loads_and_changes_generations(tiny_model: tuple[Path, Path]) -> None:
    from persd.llm.student_hf import HFStudent

    base_dir, adapter = tiny_model
    params = SamplingParams(max_new_tokens=10)
    prompts = ["def f(x):", "abc"]
    plain = HFStudent(base_dir, dtype="float32").generate(prompts, params)
    merged_student = HFStudent(base_dir, adapter=adapter, dtype="float32")
    assert merged_student.model_id == "base+adapter"
    merged = merged_student.generate(prompts, params)
    unmerged = HFStudent(base_dir, adapter=adapter, merge_adapter=False, dtype="float32")
    assert merged != plain, "the adapter changed nothing"
    assert unmerged.generate(prompts, params) == merged
    assert all(g.tokens_out == 10 or g.finish_reason == "stop" for row in merged for g in row)


def test_missing_adapter_is_one_clear_line(tiny_model: tuple[Path, Path], tmp_path: Path) -> None:
    from persd.llm.student_hf import HFStudent

    with pytest.raises(PersdError, match="not a PEFT adapter directory"):
        HFStudent(tiny_model[0], adapter=tmp_path)
