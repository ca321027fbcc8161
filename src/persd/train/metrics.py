"""A trained model's loss on its training rows, computed outside the trainer."""

from __future__ import annotations

from typing import Any


def completion_loss(model: Any, dataset: Any, *, max_len: int = 1024) -> float:
    """Mean per-token loss on the completions of a prepared (tokenised) dataset: for tests and
    for checking a trained model on its data, independent of the trainer's own logging."""
    import torch

    total, count = 0.0, 0
    model.eval()
    with torch.no_grad():
        for row in dataset:
            ids = torch.tensor([row["input_ids"][:max_len]])
            labels = torch.tensor([row["labels"][:max_len]])
            n = int((labels[:, 1:] != -100).sum())
            if n:
                total += float(model(input_ids=ids, labels=labels).loss) * n
                count += n
    return total / max(count, 1)
