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
