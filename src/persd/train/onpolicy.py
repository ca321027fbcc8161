"""``persd_onpolicy``: the student learns its own samples from a privileged teacher's
per-token distribution (beyond the paper; GKD, Agarwal et al. 2024, with the teacher given
context the student lacks, as in self-distillation with privileged information).

PERsD fine-tunes the student on text the teacher wrote. Here every row's completion is a
sample the student itself drew (its attempt at a pool task, from the prompt it is served), and
the target at each of its tokens is the distribution of a teacher that read, besides the same
prompt, the sample's execution feedback and a verified solution. The student is never asked to
imitate tokens it would not write; it is told, token by token, which of its own choices an
informed teacher would have made differently.

Why not TRL's trainers: ``DistillationTrainer`` (and the GKD trainer before it) feed the
teacher the student's own input ids, so there is no place for privileged context, and they
generate during training, which on a 2-core CPU costs far more than the training step. TRL's
SDFT/SDPO trainers take privileged context but only for a teacher that is the student itself.
What persd adds is that context, with an external teacher and its scores computed once and
cached (``persd.train.teacher_scores``); the optimisation is the transformers ``Trainer``
TRL builds on, with LoRA from PEFT as for SFT.

The loss, per completion token: the teacher's top-k tokens plus one "tail" bucket holding the
rest of the vocabulary's probability, for teacher and student alike, and a divergence between
those two (k + 1)-way distributions: reverse KL (student || teacher, the default: mode-seeking,
the on-policy choice of GKD), forward KL, or generalised JSD. Rows without a teacher turn (e.g.
verified fixes in the same data files) get plain SFT loss, weighted by ``sft_weight``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal

from persd.records import Example
from persd.train.schedule import FirstStepLearns
from persd.train.teacher_scores import RowScores, completion_ids

if TYPE_CHECKING:
    import torch
    from datasets import Dataset

    from persd.llm.render import ChatRenderer

Divergence = Literal["reverse_kl", "forward_kl", "jsd"]
_FLOOR = 1e-8  # smallest tail probability: a teacher sure of its top-k leaves ~0 for the rest


def bucket_logprobs(logprobs: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """[N, V] log-probs and [N, k] token ids -> [N, k + 1] log-probs of those k tokens and of
    the tail (every other token), which sum to one."""
    return with_tail(logprobs.gather(-1, ids))


def with_tail(top: torch.Tensor) -> torch.Tensor:
    """[N, k] log-probs of k distinct tokens -> [N, k + 1]: the tail bucket appended."""
    import torch

    mass = torch.logsumexp(top, dim=-1, keepdim=True).clamp(max=0.0)
    tail = torch.log((1.0 - mass.exp()).clamp(min=_FLOOR))
    return torch.cat([top, tail], dim=-1)


def divergence(
    student: torch.Tensor, teacher: torch.Tensor, kind: Divergence, beta: float = 0.5
) -> torch.Tensor:
    """Per-row divergence of two [N, B] log-probability tables (each row sums to one)."""
    import torch

    def kl(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:  # KL(p || q), log inputs
        return (p.exp() * (p - q)).sum(-1)

    if kind == "reverse_kl":
        return kl(student, teacher)
    if kind == "forward_kl":
        return kl(teacher, student)
    # Generalised JSD (GKD): M = beta * teacher + (1 - beta) * student.
    weighted = torch.stack([teacher + math.log(beta), student + math.log(1 - beta)])
    mix = torch.logsumexp(weighted, dim=0)
    return beta * kl(teacher, mix) + (1 - beta) * kl(student, mix)


def to_dataset(
    examples: Sequence[Example],
    scores: Sequence[RowScores | None],
    renderer: ChatRenderer,
    max_seq_len: int,
) -> tuple[Dataset, int]:
    """(rows the trainer reads, rows dropped because the prompt alone fills ``max_seq_len``).

    Each row: the student's prompt and completion ids (the same ids SFT would train on), and for
    on-policy rows the teacher's top-k ids and log-probs per completion token; a completion cut
    at ``max_seq_len`` loses the scores of the cut tokens with them."""
    from datasets import Dataset

    from persd.llm.base import Message

    cols: dict[str, list[Any]] = {"input_ids": [], "completion_mask": [], "kd": [], "tk_ids": []}
    cols["tk_logprobs"] = []
    dropped = 0
    for ex, sc in zip(examples, scores, strict=True):
        prompt = renderer.prompt_ids([Message(role="user", content=ex.prompt)])
        completion = completion_ids(renderer, ex)
        if sc is not None and sc.completion_ids != completion:
            raise ValueError(f"row {ex.id}: its cached teacher scores are for other tokens")
        room = max_seq_len - len(prompt)
        if room <= 0:
            dropped += 1
            continue
        completion = completion[:room]
        cols["input_ids"].append(prompt + completion)
        cols["completion_mask"].append([0] * len(prompt) + [1] * len(completion))
        cols["kd"].append(sc is not None)
        cols["tk_ids"].append(sc.topk_ids[:room] if sc else [])
        cols["tk_logprobs"].append(sc.topk_logprobs[:room] if sc else [])
    return Dataset.from_dict(cols), dropped


class Collator:
    """Pads a batch and lays the teacher's scores out per input position: position j holds the
    scores for the token AT j (the logits at j - 1 predict it)."""

    def __init__(self, pad_id: int) -> None:
        self.pad_id = pad_id

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        import torch

        width = max(len(r["input_ids"]) for r in rows)
        k = max((len(r["tk_ids"][0]) for r in rows if r["kd"] and r["tk_ids"]), default=1)
        n = len(rows)
        ids = torch.full((n, width), self.pad_id, dtype=torch.long)
        attention = torch.zeros((n, width), dtype=torch.long)
        kd_mask = torch.zeros((n, width), dtype=torch.bool)
        sft_mask = torch.zeros((n, width), dtype=torch.bool)
        tk_ids = torch.zeros((n, width, k), dtype=torch.long)
        tk_lp = torch.zeros((n, width, k), dtype=torch.float32)
        for i, r in enumerate(rows):
            length = len(r["input_ids"])
            ids[i, :length] = torch.tensor(r["input_ids"])
            attention[i, :length] = 1
            mask = torch.tensor(r["completion_mask"], dtype=torch.bool)
            if r["kd"]:
                kd_mask[i, :length] = mask
                start = length - int(mask.sum())
                tk_ids[i, start:length] = torch.tensor(r["tk_ids"], dtype=torch.long)
                tk_lp[i, start:length] = torch.tensor(r["tk_logprobs"], dtype=torch.float32)
            else:
                sft_mask[i, :length] = mask
        return {
            "input_ids": ids,
            "attention_mask": attention,
            "kd_mask": kd_mask,
            "sft_mask": sft_mask,
            "tk_ids": tk_ids,
            "tk_logprobs": tk_lp,
        }


def onpolicy_loss(
    logits: torch.Tensor,
    batch: dict[str, torch.Tensor],
    *,
    kind: Divergence,
    beta: float,
    sft_weight: float,
) -> torch.Tensor:
    """Mean divergence over the on-policy tokens plus ``sft_weight`` x mean cross-entropy over
    the SFT tokens of one batch; ``logits`` are the student's [B, L, V]."""
    import torch

    logits = logits[:, :-1].float()  # position j predicts the token at j + 1
    kd = batch["kd_mask"][:, 1:]
    sft = batch["sft_mask"][:, 1:]
    loss = logits.new_zeros(())
    if kd.any():
        student = torch.log_softmax(logits[kd], dim=-1)
        ids = batch["tk_ids"][:, 1:][kd]
        teacher = with_tail(batch["tk_logprobs"][:, 1:][kd])
        loss = loss + divergence(bucket_logprobs(student, ids), teacher, kind, beta).mean()
    if sft_weight > 0 and sft.any():
        targets = batch["input_ids"][:, 1:][sft]
        loss = loss + sft_weight * torch.nn.functional.cross_entropy(logits[sft], targets)
    return loss


def make_trainer(
    config: Any,
    examples: Sequence[Example],
    scores: Sequence[RowScores | None],
    model: Any,
    tokenizer: Any,
    renderer: ChatRenderer,
    args: Any,
    *,
    peft_config: Any,
    callbacks: list[Any],
) -> tuple[Any, int]:
    """(a transformers ``Trainer`` that optimises ``onpolicy_loss``, rows dropped as too long).

    ``args`` are the same TrainingArguments SFT uses (``persd.train.sft.sft_config``): the
    schedule, precision, checkpoints and logging of both variants are one configuration."""
    from transformers import Trainer

    settings = config.onpolicy
    if peft_config is not None:
        from peft import get_peft_model

        model = get_peft_model(model, peft_config)
    dataset, dropped = to_dataset(examples, scores, renderer, config.max_seq_len)
    args.remove_unused_columns = False  # the teacher's columns must reach compute_loss

    class OnPolicyTrainer(FirstStepLearns, Trainer):
        def compute_loss(  # type: ignore[override]
            self, model: Any, inputs: dict[str, Any], return_outputs: bool = False, **_: Any
        ) -> Any:
            out = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"])
            loss = onpolicy_loss(
                out.logits,
                inputs,
                kind=settings.divergence,
                beta=settings.beta,
                sft_weight=settings.sft_weight,
            )
            return (loss, out) if return_outputs else loss

    trainer = OnPolicyTrainer(
        model=model,
        args=args,
        train_dataset=dataset,
        data_collator=Collator(tokenizer.pad_token_id),
        processing_class=tokenizer,
        callbacks=callbacks,
    )
    # The loss is a per-batch mean: the Trainer must average it over accumulation steps itself.
    trainer.model_accepts_loss_kwargs = False
    return trainer, dropped
