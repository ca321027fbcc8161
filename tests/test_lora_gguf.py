"""A PEFT LoRA converted to llama.cpp's GGUF LoRA samples like the PEFT adapter in transformers."""

from __future__ import annotations

from pathlib import Path

import pytest

from persd.llm.base import Message, SamplingParams
from persd.llm.lora_gguf import LoraConversionError, convert_peft_lora
from persd.llm.student import StudentConfig, load_student

pytest.importorskip("llama_cpp")
pytest.importorskip("peft")


def _random_adapter(smollm2_gguf: Path, out: Path) -> Path:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from persd.llm.student_hf import convert_gguf_to_hf

    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(convert_gguf_to_hf(smollm2_gguf))
    # Random A and B (PEFT's default B=0 would make the adapter a no-op and the test vacuous).
    cfg = LoraConfig(
        r=8,
        lora_alpha=16,
        target_modules=["q_proj", "k_proj", "v_proj", "down_proj"],
        init_lora_weights=False,
    )
    model = get_peft_model(base, cfg)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_" in name:
                p.mul_(1.0)
    model.save_pretrained(out)
    return out


@pytest.mark.slow  # loads SmolLM2 three times (~15 s)
def test_converted_adapter_samples_like_peft(smollm2_gguf: Path, tmp_path: Path) -> None:
    adapter = _random_adapter(smollm2_gguf, tmp_path / "adapter")
    prompt = (Message(role="user", content="Write a Python function that reverses a list."),)
    params = SamplingParams(max_new_tokens=24)

    def sample(backend: str, with_adapter: bool) -> str:
        cfg = StudentConfig(
            model=str(smollm2_gguf),
            backend=backend,
            dtype="float32",
            adapter=adapter if with_adapter else None,
        )
        student = load_student(cfg)
        try:
            return student.generate([prompt], params)[0][0].text
        finally:
            student.close()

    llama = sample("llama_cpp", True)
    assert (adapter / "adapter.lora.gguf").exists()
    base = sample("llama_cpp", False)
    peft = sample("transformers", True)
    # The adapter changes what is sampled, and the same way in both backends: the outputs
    # share a prefix the base output does not have. (They drift apart later: llama.cpp's Q4
    # kernels and transformers' dequantised float32 weights already differ without adapter.
    # Without the q/k row permutation for LLaMA they differ from the first token.)
    pairs = zip(llama, peft, strict=False)
    shared = next((i for i, (x, y) in enumerate(pairs) if x != y), min(len(llama), len(peft)))
    assert shared >= 16, (llama, peft)
    assert not base.startswith(llama[:shared]), (base, llama)


def test_refuses_what_llama_cpp_cannot_apply(tmp_path: Path, smollm2_gguf: Path) -> None:
    (tmp_path / "adapter_config.json").write_text('{"peft_type": "LORA", "use_dora": true}')
    (tmp_path / "adapter_model.safetensors").write_bytes(b"")
    with pytest.raises(LoraConversionError, match="only plain LoRA"):
        convert_peft_lora(tmp_path, smollm2_gguf)


def _logits_gap(gguf: Path, tmp_path: Path, targets: list[str], scale: float) -> dict:
    """Next-token logits of transformers base (+ PEFT adapter) against llama.cpp base
    (+ the converted adapter), over one chat prompt and a few code tokens."""
    import numpy as np
    import torch
    from llama_cpp import Llama
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from persd.llm.student_hf import convert_gguf_to_hf

    hf = convert_gguf_to_hf(gguf)
    text = (
        "<|im_start|>user\nWrite a Python function that returns the sum of squares of a list."
        "<|im_end|>\n<|im_start|>assistant\n```python\ndef sum_sq(xs):\n    return"
    )
    ids = AutoTokenizer.from_pretrained(hf)(text)["input_ids"]
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(hf, dtype=torch.float32)
    with torch.no_grad():
        hf_base = model(torch.tensor([ids])).logits[0].numpy()
    # The training recipe's shape (r 16, alpha 32: scale 2); random B large enough that the
    # adapter's effect dwarfs the kernels' own noise, so a wrong scale or layout shows.
    lora = LoraConfig(r=16, lora_alpha=32, target_modules=targets, init_lora_weights=False)
    model = get_peft_model(model, lora)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.mul_(scale)
        hf_adapted = model(torch.tensor([ids])).logits[0].numpy()
    model.save_pretrained(tmp_path / "adapter")
    converted = convert_peft_lora(tmp_path / "adapter", gguf)

    def llama(lora_path: Path | None) -> np.ndarray:
        kw = {"lora_path": str(lora_path)} if lora_path else {}
        llm = Llama(model_path=str(gguf), n_ctx=256, logits_all=True, verbose=False, **kw)
        try:
            llm.eval(ids)
            return np.array(llm.scores[: len(ids)])
        finally:
            llm.close()

    cpp_base, cpp_adapted = llama(None), llama(converted)
    hf_delta, cpp_delta = (hf_adapted - hf_base).ravel(), (cpp_adapted - cpp_base).ravel()
    return {
        "effect": float(np.abs(hf_delta).max()),
        "base_gap": float(np.abs(hf_base - cpp_base).max()),
        "adapted_gap": float(np.abs(hf_adapted - cpp_adapted).max()),
        "slope": float((hf_delta * cpp_delta).sum() / (hf_delta * hf_delta).sum()),
        "corr": float(np.corrcoef(hf_delta, cpp_delta)[0, 1]),
    }


def _check_gap(gap: dict) -> None:
    # The adapter moves the logits far more than the two backends differ without it...
    assert gap["effect"] > 5 * gap["base_gap"], gap
    # ...and llama.cpp moves them the same way and by the same amount (alpha / r applied once,
    # every target module present, A and B in llama.cpp's layout)...
    assert 0.9 < gap["slope"] < 1.1 and gap["corr"] > 0.97, gap
    # ...so the adapted models differ by little more than the bases do.
    assert gap["adapted_gap"] < 4 * gap["base_gap"], gap


def test_converted_adapter_computes_the_peft_logits_smollm2(
    smollm2_gguf: Path, tmp_path: Path
) -> None:
    """LLaMA layout (q/k rows permuted), every projection the training recipe adapts."""
    from persd.train.config import LLAMA_LINEAR

    _check_gap(_logits_gap(smollm2_gguf, tmp_path, list(LLAMA_LINEAR), 1.0))  # Q4_1: noisier


@pytest.mark.slow  # pulls and loads the 0.5B default student (~500 MB)
def test_converted_adapter_computes_the_peft_logits_default_student(tmp_path: Path) -> None:
    """Qwen2 layout (no permutation, q/k/v biases untouched) on the default student."""
    from persd.llm.registry import pull
    from persd.train.config import LLAMA_LINEAR

    gguf = pull("qwen2.5-coder-0.5b-instruct")
    _check_gap(_logits_gap(gguf, tmp_path, list(LLAMA_LINEAR), 0.1))
