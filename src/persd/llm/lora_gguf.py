"""Convert a PEFT LoRA adapter into llama.cpp's GGUF LoRA format.

The student trains on the dequantised GGUF weights (transformers), so the trained model is
exactly "the quantised base + this adapter": llama.cpp can sample it at single-stream speed
from the same Q4 file the base is sampled from, which keeps base-vs-trained comparisons on one
backend. llama.cpp's own converter is in no wheel, hence this small one.

Format (what llama.cpp's adapter loader checks): ``general.type = "adapter"``,
``general.architecture`` = the base model's, ``adapter.type = "lora"``,
``adapter.lora.alpha``; per target ``<base tensor>.lora_a`` with numpy shape ``(r, n_in)`` and
``<base tensor>.lora_b`` with shape ``(n_out, r)``. llama.cpp scales by ``alpha / r``, as PEFT
does without rsLoRA.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from persd.errors import PersdError
from persd.llm.gguf_check import read_gguf_header

_PREFIX = "base_model.model."


class LoraConversionError(PersdError):
    pass


def _permute_rows(w, heads: int):
    """The row order llama.cpp's converter gives LLaMA's q/k projections (rope halves)."""
    return (
        w.reshape(heads, 2, w.shape[0] // heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)
    )


def convert_peft_lora(adapter_dir: Path, base_gguf: Path, out: Path | None = None) -> Path:
    """``adapter_dir`` (PEFT) as a GGUF LoRA for ``base_gguf``; reused when already written."""
    import gguf
    import numpy as np
    from safetensors.numpy import load_file

    out = out or adapter_dir / "adapter.lora.gguf"
    weights = adapter_dir / "adapter_model.safetensors"
    config_path = adapter_dir / "adapter_config.json"
    if out.exists() and out.stat().st_mtime >= weights.stat().st_mtime:
        return out
    try:
        config = json.loads(config_path.read_text())
    except (OSError, ValueError) as e:
        raise LoraConversionError(
            f"{config_path}: not a readable PEFT adapter config ({e})"
        ) from None
    if config.get("peft_type") != "LORA" or config.get("use_dora") or config.get("use_rslora"):
        raise LoraConversionError(
            f"{adapter_dir}: only plain LoRA converts to llama.cpp (no DoRA, no rsLoRA); "
            "sample it with backend 'transformers'"
        )
    header = read_gguf_header(base_gguf)
    arch = header.architecture
    blocks = int(header.metadata.get(f"{arch}.block_count", 0))
    arch_id = next((k for k, v in gguf.MODEL_ARCH_NAMES.items() if v == arch), None)
    if arch_id is None or not blocks:
        raise LoraConversionError(f"{base_gguf}: architecture '{arch}' unknown to gguf")
    names = gguf.get_tensor_name_map(arch_id, blocks)
    tensors = load_file(str(weights))
    tmp = out.with_name(out.name + ".partial")
    writer = gguf.GGUFWriter(str(tmp), arch)
    writer.add_string("general.type", "adapter")
    writer.add_string("adapter.type", "lora")
    writer.add_float32("adapter.lora.alpha", float(config["lora_alpha"]))
    for key in sorted(tensors):
        if ".lora_A." not in key:
            if ".lora_B." not in key:
                raise LoraConversionError(f"{weights}: unexpected tensor '{key}'")
            continue
        module = key.removeprefix(_PREFIX).split(".lora_A.")[0]
        target = names.get_name(module + ".weight", try_suffixes=(".weight",))
        if target is None:
            raise LoraConversionError(f"{weights}: no llama.cpp tensor for '{module}'")
        a = tensors[key].astype(np.float32)
        b = tensors[key.replace(".lora_A.", ".lora_B.")].astype(np.float32)
        if arch == "llama" and module.endswith(("q_proj", "k_proj")):
            # llama.cpp stores LLaMA's q/k rows permuted for its rope layout; B's rows follow.
            heads = header.metadata[f"{arch}.attention.head_count"]
            if module.endswith("k_proj"):
                heads = header.metadata.get(f"{arch}.attention.head_count_kv", heads)
            b = _permute_rows(b, heads)
        writer.add_tensor(f"{target}.lora_a", a)
        writer.add_tensor(f"{target}.lora_b", b)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    os.replace(tmp, out)
    return out
