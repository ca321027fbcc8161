"""The most training tokens/s this CPU can give a LoRA fine-tune of a model, from FLOPs.

FLOPs per training token, counted from the model's config (multiply-adds as 2 FLOPs):

- forward: every block's seven projections, and attention (scores and weighted sum) over the
  tokens before it (half the row on average, causal);
- backward: the gradient of every projection's input, in every block, because LoRA adapts
  every block down to the first, so the gradient must reach it (the frozen weights get no
  gradient of their own); attention's backward, twice its forward; LoRA's own products
  (forward, and both gradients) at rank r;
- the LM head (forward and the gradient of its input) only where a token is learnt: the
  completion's share of the row.

The sustained rate is measured on the same matrix products (the forward shapes and the two
backward ones, at the micro-batch's token count), in float32 and bfloat16, with torch and
the given threads. Bound = rate / FLOPs per token. Norms, activations, softmax, the optimizer
and data movement are not counted: the bound is a ceiling, not a prediction.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Flops:
    forward: float  # per token
    backward: float
    lm_head: float  # forward + input gradient, per learnt token

    def per_token(self, learnt: float) -> float:
        """Training FLOPs per token when ``learnt`` of the tokens are completion."""
        return self.forward + self.backward + learnt * self.lm_head


def count(config: Any, *, row_tokens: float, rank: int) -> Flops:
    h, layers = config.hidden_size, config.num_hidden_layers
    heads, kv = config.num_attention_heads, config.num_key_value_heads
    d = getattr(config, "head_dim", None) or h // heads
    inter = config.intermediate_size
    shapes = _projections(h, heads * d, kv * d, inter)
    proj = sum(2 * k * n for k, n in shapes)  # per token, one block
    lora = sum(2 * rank * (k + n) for k, n in shapes)  # x A, then (x A) B
    attention = 2 * 2 * heads * d * (row_tokens / 2)  # q k^T and p v over half the row
    forward = layers * (proj + lora + attention)
    # Inputs' gradients through every projection; LoRA's: inputs' and both weights'.
    backward = layers * (proj + 3 * lora + 2 * attention)
    lm_head = 2 * (2 * h * config.vocab_size)
    return Flops(forward=forward, backward=backward, lm_head=lm_head)


def _projections(h: int, q: int, kv: int, inter: int) -> list[tuple[int, int]]:
    """(in, out) of q, k, v, o, gate, up, down."""
    return [(h, q), (h, kv), (h, kv), (q, h), (h, inter), (h, inter), (inter, h)]


def matmul_rate(
    config: Any, *, tokens: int, dtype: str, threads: int, seconds: float = 3.0
) -> float:
    """FLOP/s torch sustains on one block's products at ``tokens`` rows: each projection's
    forward (tokens x in @ in x out) and its input gradient (tokens x out @ out x in)."""
    import torch

    torch.set_num_threads(threads)
    heads = config.num_attention_heads
    d = getattr(config, "head_dim", None) or config.hidden_size // heads
    shapes = _projections(
        config.hidden_size, heads * d, config.num_key_value_heads * d, config.intermediate_size
    )
    kind = getattr(torch, dtype)
    pairs = []
    for k, n in shapes:
        pairs.append((torch.randn(tokens, k, dtype=kind), torch.randn(k, n, dtype=kind)))
        pairs.append((torch.randn(tokens, n, dtype=kind), torch.randn(n, k, dtype=kind)))
    flops_once = sum(2 * a.shape[0] * a.shape[1] * b.shape[1] for a, b in pairs)
    for a, b in pairs:  # warm the kernels and caches
        torch.mm(a, b)
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        for a, b in pairs:
            torch.mm(a, b)
        done += 1
    return done * flops_once / (time.perf_counter() - start)
