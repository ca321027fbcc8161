"""The supervised loss computed where there is something to learn, and nothing else.

TRL's ``SFTTrainer`` runs the LM head (a 151,936 x 896 product for Qwen2.5) on every position
of every row and computes each position's entropy and top-1 hit for its logs. On a GPU its
fused kernel drops the positions without a label; on a CPU it does not, and for persd's rows
(a chat prompt of ~100 tokens, a completion of ~60-150) most positions are prompt. Profiled
on the default student (2 cores, one optimizer step of 8 MBPP rows, batch 1 x 8): the LM
head's forward and backward were 37% of the step (docs/BENCHMARKS.md, "Training throughput").

``LabelOnlyLoss`` runs the backbone, takes the hidden states of the positions whose next
token is a label, and runs the LM head and the cross-entropy on those alone: the same loss
(mean over label tokens, over the whole accumulated step, as TRL's), the same gradients, a
fraction of the work. The per-token metrics TRL logs are not computed.
"""

from __future__ import annotations

from typing import Any


def _unwrapped(model: Any) -> Any:
    """The causal LM under PEFT's and the accelerator's wrappers (LoRA layers are injected
    into its modules in place, so calling its parts runs the adapter)."""
    while True:
        if hasattr(model, "get_base_model"):
            model = model.get_base_model()
        elif hasattr(model, "module") and not hasattr(model, "get_decoder"):
            model = model.module
        else:
            return model


def label_only_loss(model: Any, inputs: dict[str, Any], num_items: Any = None) -> Any:
    """Summed cross-entropy of the label tokens divided by ``num_items`` (their count in this
    micro-batch when None): ``inputs`` as the SFT collator gives them, ``labels`` -100 where
    nothing is learnt."""
    import torch
    import torch.nn.functional as F

    lm = _unwrapped(model)
    labels = inputs["labels"]
    kwargs = {k: v for k, v in inputs.items() if k in ("attention_mask", "position_ids")}
    hidden = lm.get_decoder()(input_ids=inputs["input_ids"], use_cache=False, **kwargs)
    targets = labels[:, 1:]
    mask = targets != -100
    picked = hidden.last_hidden_state[:, :-1][mask]  # (label tokens, hidden)
    logits = lm.get_output_embeddings()(picked).float()
    total = F.cross_entropy(logits, targets[mask], reduction="sum")
    count = mask.sum() if num_items is None else num_items
    return total / torch.as_tensor(count, device=total.device).clamp(min=1)


class LabelOnlyLoss:
    """Mixin for TRL's ``SFTTrainer`` (put it before it among the bases): ``compute_loss`` is
    ``label_only_loss``, scaled for data-parallel ranks as ``Trainer`` expects."""

    args: Any
    accelerator: Any

    def compute_loss(
        self,
        model: Any,
        inputs: dict[str, Any],
        return_outputs: bool = False,
        num_items_in_batch: Any = None,
    ) -> Any:
        loss = label_only_loss(model, inputs, num_items_in_batch)
        # As Trainer.compute_loss: with a token count over all ranks, DDP's gradient average
        # must be undone.
        if self.args.average_tokens_across_devices and num_items_in_batch is not None:
            loss = loss * self.accelerator.num_processes
        return (loss, None) if return_outputs else loss
