"""Which precision a training run computes in on this machine."""

from __future__ import annotations

import functools
import time

from persd.train.config import TrainConfig


def precision(config: TrainConfig, *, bf16_native: bool) -> tuple[str, bool]:
    """(dtype the weights are loaded in, whether bf16 autocast is on).

    ``auto`` is bf16 mixed precision where it pays (``bf16_pays``: a bf16 GPU, or a CPU whose
    bf16 products beat its float32 ones when measured), else float32. Full fine-tuning keeps
    float32 master weights under bf16 autocast (Adam updates in bf16 lose small steps); LoRA
    stores the frozen base in bf16 and PEFT keeps the adapter weights in float32.
    """
    want_bf16 = config.dtype == "bfloat16" or (config.dtype == "auto" and bf16_native)
    if not want_bf16:
        return "float32", False
    return ("bfloat16" if config.method == "lora" else "float32"), True


def bf16_pays(cuda: bool, threads: int | None = None) -> bool:
    """Whether bf16 autocast makes training faster here.

    A GPU: where it computes bf16. A CPU: only if it has bf16 instructions (AVX-512 BF16,
    AMX) AND its bf16 matrix products beat float32 ones, measured now on a block's shape
    (about a second). The instructions alone do not decide it: LoRA steps ran 1.2-2.9x faster
    in bf16 on an AMD Zen 4 (docs/BENCHMARKS.md), while on a 2-core Intel Xeon with AVX-512
    BF16 torch's bf16 products ran at half the float32 rate (116 against 224 GFLOP/s)."""
    import torch

    if cuda:
        return bool(torch.cuda.is_bf16_supported())
    # torch has no public query for the CPU's bf16 instructions; these two exist since 2.1.
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    if not any(getattr(torch.cpu, name, lambda: False)() for name in checks):
        return False
    return _rate("bfloat16", threads) > _rate("float32", threads)


@functools.cache
def _rate(dtype: str, threads: int | None, seconds: float = 0.4) -> float:
    """Products per second of a (256 x 896) @ (896 x 4864) matrix product: the MLP of the
    default student, a micro-batch's rows of it."""
    import torch

    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        kind = getattr(torch, dtype)
        a, b = torch.randn(256, 896, dtype=kind), torch.randn(896, 4864, dtype=kind)
        for _ in range(3):  # warm the kernel and the caches
            torch.mm(a, b)
        done, start = 0, time.perf_counter()
        while (elapsed := time.perf_counter() - start) < seconds:
            torch.mm(a, b)
            done += 1
        return done / elapsed
    finally:
        torch.set_num_threads(before)
