"""Export a trained LoRA adapter as a plain model: base weights + adapter, merged, safetensors.

A merged model samples as fast as the base (no extra matmuls per layer) and loads in any
sampler that knows nothing about PEFT: transformers, vLLM, or llama.cpp after GGUF conversion.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from persd.errors import PersdError


class ExportError(PersdError):
    """An adapter could not be merged or written: names the directory and the fix."""


def merge_adapter(
    base: str | Path, adapter_dir: Path, out_dir: Path, *, overwrite: bool = False
) -> Path:
    """Merge the PEFT adapter in ``adapter_dir`` into ``base`` and save it under ``out_dir``.

    Merged in float32 so the result matches base + adapter to float32 rounding, whatever the
    training precision. Written to a temporary sibling and renamed into place: a directory at
    ``out_dir`` is always a complete model. The tokenizer is the one saved with the adapter
    (it holds the pad token and chat template training used). ``overwrite`` replaces an
    earlier export (a resumed run merging again).
    """
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if not (adapter_dir / "adapter_config.json").is_file():
        raise ExportError(f"{adapter_dir}: not a PEFT adapter directory (no adapter_config.json)")
    if out_dir.exists() and not overwrite:
        raise ExportError(f"{out_dir}: already exists; remove it or merge into another directory")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    try:
        model = AutoModelForCausalLM.from_pretrained(str(base), dtype=torch.float32)
        merged = PeftModel.from_pretrained(model, str(adapter_dir)).merge_and_unload()
        merged.save_pretrained(tmp)  # safetensors by default
        AutoTokenizer.from_pretrained(str(adapter_dir)).save_pretrained(tmp)
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.rename(tmp, out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out_dir
