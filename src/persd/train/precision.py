"""Which precision a training run computes in on this machine."""

from __future__ import annotations

from persd.train.config import TrainConfig


def precision(config: TrainConfig, *, bf16_native: bool) -> tuple[str, bool]:
    """(dtype the weights are loaded in, whether bf16 autocast is on).

    ``auto`` is bf16 mixed precision where the hardware computes bf16 natively (a bf16 GPU, or a
    CPU with AVX-512 BF16 / AMX, where LoRA steps measured 1.2-2.9x faster than float32 on this
    project's Zen 4), else float32. Full fine-tuning keeps float32 master weights under bf16
    autocast (Adam updates in bf16 lose small steps); LoRA stores the frozen base in bf16 and
    PEFT keeps the adapter weights in float32.
    """
    want_bf16 = config.dtype == "bfloat16" or (config.dtype == "auto" and bf16_native)
    if not want_bf16:
        return "float32", False
    return ("bfloat16" if config.method == "lora" else "float32"), True


def bf16_native(cuda: bool) -> bool:
    import torch

    if cuda:
        return bool(torch.cuda.is_bf16_supported())
    # torch has no public query for the CPU's bf16 instructions; these two exist since 2.1.
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(torch.cpu, name, lambda: False)() for name in checks)
